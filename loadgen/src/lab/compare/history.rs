//! What a comparison leaves on disk: the `--json` report, the `--markdown` comment, and the
//! `--history` line that `loadgen trend` reads back.
//!
//! Writing and reading the history sit together so that the line written and the line
//! parsed are the same type, a [`CompareReport`] without its trials.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use super::flags::CompareArgs;
use super::output::markdown;
use super::report::CompareReport;

pub(super) fn write_outputs(args: &CompareArgs, report: &CompareReport) -> Result<(), String> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        fs::write(path, markdown(report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.history {
        if report.interrupted {
            eprintln!(
                "loadgen compare: interrupted, so not appended to {}",
                path.display()
            );
        } else {
            let line = serde_json::to_string(&history_entry(report)).map_err(|e| e.to_string())?;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// A history line: the report without its trials (they are in `--json`).
fn history_entry(report: &CompareReport) -> CompareReport {
    let mut entry = report.clone();
    for m in &mut entry.models {
        m.pairs.clear();
    }
    entry
}

/// Reads a history file (one [`CompareReport`] per line); lines that do not parse are
/// reported, not fatal.
pub fn read_history(path: &Path) -> Result<(Vec<CompareReport>, Vec<String>), String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut runs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CompareReport>(line) {
            Ok(r) => runs.push(r),
            Err(e) => bad.push(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok((runs, bad))
}
