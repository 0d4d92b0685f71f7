//! The workspace's layering, checked: loadgen's core never imports its lab, and no module of
//! any library crate imports a module that imports it back (docs/ARCHITECTURE.md, "Layers").
//!
//! Why a test and not a convention: an import from the core into the lab compiles fine, and a
//! cycle between two files compiles fine too; both only show later, as a core that cannot be
//! used without the suite, or as two files that can only be understood together. Reading the
//! sources is enough to catch both: every module is a file (rustfmt's layout), and a reference
//! to another module is a path that starts with `crate::`, `super::`, `self::` or the bare
//! name of one of the file's child modules. The checker reads those paths, resolves each to
//! the deepest module file it names, and looks for strongly connected components in the
//! resulting graph of files. What it cannot follow (a re-export from the crate root, a glob
//! of it, a macro's `$crate::`) it refuses where it matters: no core file may name `lab::` at
//! all, and the root may not re-export the lab. A macro defined in the lab and called by bare
//! name from the core would still pass; the lab defines none.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A crate's modules (`a::b`, the crate root is "") and, for each, the modules it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module path of a file under `src/`: `lib.rs` is "", `a/mod.rs` and `a.rs` are `a`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod" && p != "lib")
        .collect();
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            // src/bin holds separate crates (each binary), which import the library by name.
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "main.rs")
        {
            out.push(path);
        }
    }
}

/// Strips a `//` comment (not inside a string literal; good enough for rustfmt'd code, where
/// `//` in a string is rare and at worst hides a reference on that line).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `code` with each restricted visibility (`pub(crate)`, `pub(super)`, `pub(in a::b)`) written
/// as plain `pub`: the path inside `pub(in ...)` is not a reference to another module.
fn without_visibility(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("pub(") {
        let Some(close) = rest[at..].find(')') else {
            break;
        };
        out.push_str(&rest[..at]);
        out.push_str("pub");
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Where `word::` starts a path in `code` (not as the tail of a longer path or name).
fn starts_path(code: &str, word: &str) -> bool {
    let needle = format!("{word}::");
    let bytes = code.as_bytes();
    code.match_indices(&needle).any(|(at, _)| {
        at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric()
                || bytes[at - 1] == b'_'
                || bytes[at - 1] == b':')
    })
}

/// Every path named after `crate::`, `super::` or `self::` in `code`, with `{a, b::c}` use
/// groups expanded, each as (prefix, segments).
fn paths_in(code: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let prefix = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|p| starts_word && rest.starts_with(p));
        let Some(prefix) = prefix else {
            i += 1;
            continue;
        };
        let (tree, used) = use_tree(&rest[prefix.len()..]);
        for segments in tree {
            found.push((prefix.trim_end_matches(':').to_string(), segments));
        }
        i += prefix.len() + used.max(1);
    }
    found
}

/// Parses `a::b::{c, d::e}` into its leaf paths; returns them and the bytes consumed.
fn use_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            segments.push(text[start..i].to_string());
        }
        let group = if text[i..].starts_with("::{") {
            Some(3)
        } else if i == start && text[i..].starts_with('{') {
            Some(1)
        } else {
            None
        };
        if let Some(skip) = group {
            // A group: each member continues this path.
            i += skip;
            let mut all = Vec::new();
            loop {
                while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let (members, used) = use_tree(&text[i..]);
                for m in members {
                    let mut path = segments.clone();
                    path.extend(m);
                    all.push(path);
                }
                i += used.max(1);
            }
            return (all, i);
        }
        if text[i..].starts_with("::") && i > start {
            i += 2;
            continue;
        }
        return (vec![segments], i);
    }
}

/// The module a path resolves to: the longest prefix of it that is a module of the crate.
fn resolve(modules: &BTreeSet<String>, base: &[String], segments: &[String]) -> Option<String> {
    let mut full: Vec<String> = base.to_vec();
    for s in segments {
        if s == "self" {
            continue;
        }
        if s == "super" {
            full.pop()?;
            continue;
        }
        full.push(s.clone());
    }
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// The module graph of the library crate whose sources are under `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(src, file);
        let own: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(String::from).collect()
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        // The file's child modules: a path may start with one of their names bare
        // (`use report::Cell;`, `cells::assemble(..)`), relative to the file's own module.
        let children: Vec<String> = modules
            .iter()
            .filter_map(|m| match module.as_str() {
                "" => Some(m.as_str()),
                own => m.strip_prefix(own).and_then(|r| r.strip_prefix("::")),
            })
            .filter(|rest| !rest.is_empty() && !rest.contains("::"))
            .map(String::from)
            .collect();
        let edges = graph.entry(module.clone()).or_default();
        // Inside an inline module (`mod tests {`), `super` is the file's own module: track
        // them by the indentation rustfmt gives their closing brace.
        let mut inline: Vec<String> = Vec::new();
        // A `use` that rustfmt spread over several lines is read as one.
        let mut pending = String::new();
        for line in text.lines() {
            let unrestricted = without_visibility(code_of(line));
            let raw = unrestricted.as_str();
            let starts_use = {
                let t = raw.trim_start();
                t.starts_with("use ") || t.starts_with("pub use ")
            };
            if !pending.is_empty() || (starts_use && !raw.contains(';')) {
                pending.push_str(raw.trim());
                pending.push(' ');
                if !raw.contains(';') {
                    continue;
                }
            }
            let joined = std::mem::take(&mut pending);
            let code: &str = if joined.is_empty() { raw } else { &joined };
            let indent = line.len() - line.trim_start().len();
            let trimmed = code.trim();
            if let Some(name) = trimmed
                .strip_prefix("pub mod ")
                .or_else(|| trimmed.strip_prefix("mod "))
                .and_then(|r| r.strip_suffix(" {"))
            {
                inline.push(format!("{}}}", " ".repeat(indent)));
                let _ = name;
                continue;
            }
            if inline.last().is_some_and(|close| line == close.as_str()) {
                inline.pop();
                continue;
            }
            for child in &children {
                if !module.is_empty() && starts_path(code, child) {
                    edges.insert(format!("{module}::{child}"));
                }
            }
            for (prefix, segments) in paths_in(code) {
                let base: Vec<String> = match prefix.as_str() {
                    "crate" => Vec::new(),
                    // `self::` and `super::` at the file's top level; one level deeper in an
                    // inline module.
                    "self" => own.clone(),
                    _ if !inline.is_empty() => own.clone(),
                    _ => match own.split_last() {
                        Some((_, parent)) => parent.to_vec(),
                        None => continue,
                    },
                };
                if let Some(target) = resolve(&modules, &base, &segments) {
                    if target != module && !target.is_empty() {
                        edges.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// The groups of modules that import each other, directly or through others (Tarjan's
/// strongly connected components of more than one module).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds loadgen/")
        .to_path_buf()
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| format!("  {m} -> {to:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_core_never_imports_the_lab() {
    let src = workspace().join("loadgen/src");
    let g = graph(&src);
    assert!(
        g.contains_key("lab::compare") && g.contains_key("run"),
        "{}",
        describe(&g)
    );
    let mut bad: Vec<String> = g
        .iter()
        .filter(|(m, _)| !(m.as_str() == "lab" || m.starts_with("lab::") || m.is_empty()))
        .flat_map(|(m, to)| {
            to.iter()
                .filter(|t| t.as_str() == "lab" || t.starts_with("lab::"))
                .map(move |t| format!("{m} imports {t}"))
        })
        .collect();
    // Paths the graph cannot follow: the crate root re-exporting the lab for the core to
    // import from it, a glob of the root followed by a bare `lab::`, or a macro's
    // `$crate::lab::`. Any `lab::` in a core file, and any re-export of the lab from the root,
    // is refused outright.
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let module = module_of(&src, &file);
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            let at = format!("{}:{}", file.display(), n + 1);
            if module.is_empty() {
                if code.contains("use ") && starts_path(code, "lab") {
                    bad.push(format!("{at}: the crate root re-exports the lab"));
                }
            } else if !(module == "lab" || module.starts_with("lab::")) && starts_path(code, "lab")
            {
                bad.push(format!("{at}: a core module names the lab"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the core must not import the lab (docs/ARCHITECTURE.md, Layers):\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_module_of_any_library_imports_itself_back() {
    for krate in ["protocol", "servers", "loadgen"] {
        let g = graph(&workspace().join(krate).join("src"));
        assert!(
            g.len() > 3,
            "{krate}: too few modules found\n{}",
            describe(&g)
        );
        if std::env::var_os("LAYERING_PRINT").is_some() {
            // `LAYERING_PRINT=1 cargo test --test layering -- --nocapture`: the graphs read.
            eprintln!("{krate}:\n{}", describe(&g));
        }
        let found = cycles(&g);
        assert!(
            found.is_empty(),
            "{krate}: modules that import each other (directly or through others): {found:?}\n{}",
            describe(&g)
        );
    }
}

/// The checker itself: a planted cycle through a use group, `super` and a path expression is
/// found, and a `super` inside `mod tests` is not mistaken for the parent.
#[test]
fn the_checker_sees_a_planted_cycle() {
    let dir = std::env::temp_dir().join(format!("layering-{}", std::process::id()));
    let src = dir.join("src");
    fs::create_dir_all(src.join("a")).expect("temp dir");
    let write = |name: &str, text: &str| fs::write(src.join(name), text).expect("write");
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write(
        "a/mod.rs",
        "pub mod x;\npub mod y;\nuse crate::{b::Thing, c};\npub(crate) fn k() { y::z() }\n",
    );
    write("a/y.rs", "pub(in crate::a) fn z() {}\n");
    write("a/x.rs", "pub fn f() { super::helper(); }\n");
    write(
        "b.rs",
        "pub fn g() { crate::a::x::f() } // crate::c in a comment\n",
    );
    write(
        "c.rs",
        "pub fn h() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    let g = graph(&src);
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(
        g["a"],
        BTreeSet::from(["a::y".to_string(), "b".to_string(), "c".to_string()]),
        "a bare child path (y::z) is an edge"
    );
    assert!(
        g["a::y"].is_empty(),
        "pub(in crate::a) is not an import: {}",
        describe(&g)
    );
    assert_eq!(g["a::x"], BTreeSet::from(["a".to_string()]));
    assert_eq!(g["b"], BTreeSet::from(["a::x".to_string()]));
    assert!(g["c"].is_empty(), "{}", describe(&g));
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "a::x".to_string(), "b".to_string()]]
    );
}
