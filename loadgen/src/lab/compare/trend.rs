//! `loadgen trend`: the regression gate's history as a table and an SVG plot.
//!
//! Apart from the history file it reads because a person runs it, not the gate: it decides
//! nothing, and only shows how the gate's verdicts have moved from run to run.

use std::fmt::Write as _;
use std::fs;

use super::flags::TrendArgs;
use super::history::read_history;
use super::stats::Verdict;

/// Reads the history, writes the plot, and returns the table.
pub fn trend(args: &TrendArgs) -> Result<String, String> {
    let (runs, bad) = read_history(&args.history)?;
    let mut s = String::new();
    for b in &bad {
        let _ = writeln!(s, "skipped a line that is not a gate run: {b}");
    }
    if runs.is_empty() {
        return Err(format!("{}: no gate runs in it", args.history.display()));
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        for m in &r.models {
            if (m.throughput.is_some() || m.failure.is_some()) && !names.contains(&m.name.as_str())
            {
                names.push(&m.name);
            }
        }
    }
    let _ = writeln!(
        s,
        "throughput ratio (candidate / baseline) per gate run; ! = regression flagged, ~ = inconclusive, ? = failed"
    );
    let _ = write!(s, "{:>4}  {:<20}  {:<24}", "run", "time", "candidate");
    for n in &names {
        let _ = write!(s, "  {n:>17}");
    }
    s.push('\n');
    let skip = runs.len().saturating_sub(args.last as usize);
    for (i, r) in runs.iter().enumerate().skip(skip) {
        let label: String = r.params.candidate_label.chars().take(24).collect();
        let _ = write!(s, "{:>4}  {:<20}  {label:<24}", i + 1, r.time);
        for n in &names {
            let cell = match r.models.iter().find(|m| m.name == *n) {
                Some(m) if m.failure.is_some() => "?".to_string(),
                Some(m) => m.throughput.map_or("–".into(), |e| {
                    let mark = if m.regressed() {
                        "!"
                    } else if m.throughput_verdict == Some(Verdict::Inconclusive) {
                        "~"
                    } else {
                        " "
                    };
                    format!("{:.3}{mark}", e.ratio)
                }),
                None => "–".into(),
            };
            let _ = write!(s, "  {cell:>17}");
        }
        s.push('\n');
    }
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.history.with_extension("svg"));
    match crate::lab::plot::trend(&runs) {
        Ok(Some(svg)) => {
            fs::write(&svg_path, svg)
                .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
            let _ = writeln!(s, "plot: {}", svg_path.display());
        }
        Ok(None) => {
            let _ = writeln!(s, "no plot: no run compared any model");
        }
        Err(e) => return Err(format!("drawing the plot: {e}")),
    }
    Ok(s)
}
