//! The comparison as text: the table on the terminal and the Markdown of a pull-request
//! comment, with the headline that says the verdict first.
//!
//! Both read only the report, so a stored `--json` or history line renders the same way the
//! live run did.

use std::fmt::Write as _;

use super::flags::Mode;
use super::report::CompareReport;
use super::stats::{Estimate, Verdict};

fn pct(v: f64) -> String {
    format!("{:+.1}%", (v - 1.0) * 100.0)
}

fn interval(e: &Estimate) -> String {
    format!("[{:.3}, {:.3}]", e.low, e.high)
}

/// The rows of the table: model, baseline req/s, candidate req/s, ratio, interval, verdict,
/// and the same for p99.
fn rows(report: &CompareReport) -> Vec<[String; 11]> {
    report
        .models
        .iter()
        .map(|m| {
            let (ratio, iv, verdict) = match (&m.throughput, &m.failure) {
                (Some(e), None) => (
                    format!("{:.3} ({})", e.ratio, pct(e.ratio)),
                    interval(e),
                    m.throughput_verdict.map_or("–".into(), |v| v.to_string()),
                ),
                (_, Some(_)) => ("–".into(), "–".into(), "FAILED (below)".into()),
                _ if m.skipped.is_some() => ("–".into(), "–".into(), "skipped (below)".into()),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            let (p99, p99_iv, p99_verdict) = match (&m.p99, &m.failure) {
                (Some(e), None) => (
                    format!("{:.3}", e.ratio),
                    interval(e),
                    m.p99_verdict.map_or("not gated".into(), |v| v.to_string()),
                ),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            let rate = |v: f64| match m.pairs.is_empty() {
                true => "–".to_string(),
                false => format!("{v:.0}"),
            };
            let p99_us = match m.pairs.is_empty() {
                true => "–".to_string(),
                false => format!("{:.0} → {:.0}", m.baseline_p99_us, m.candidate_p99_us),
            };
            [
                m.name.clone(),
                m.pairs.len().to_string(),
                rate(m.baseline_rps),
                rate(m.candidate_rps),
                ratio,
                iv,
                verdict,
                p99_us,
                p99,
                p99_iv,
                p99_verdict,
            ]
        })
        .collect()
}

const HEADER: [&str; 11] = [
    "model",
    "pairs",
    "baseline req/s",
    "candidate req/s",
    "ratio",
    "interval",
    "verdict",
    "p99 µs",
    "p99 ratio",
    "p99 interval",
    "p99 verdict",
];

fn headline(report: &CompareReport) -> String {
    let p = &report.params;
    let regressed: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.regressed())
        .map(|m| m.name.as_str())
        .collect();
    let failed: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.failure.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let unsure: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.throughput_verdict == Some(Verdict::Inconclusive))
        .map(|m| m.name.as_str())
        .collect();
    let mut s = if !regressed.is_empty() {
        format!("REGRESSION in {}", regressed.join(", "))
    } else if report.interrupted {
        "interrupted: no verdict".into()
    } else if !failed.is_empty() {
        format!("could not compare {}", failed.join(", "))
    } else if !unsure.is_empty() {
        format!(
            "INCONCLUSIVE for {}: the machine was too noisy to rule out a regression beyond the threshold; run it again",
            unsure.join(", ")
        )
    } else {
        "no regression".into()
    };
    let _ = write!(
        s,
        " — {} vs {}; {}; {}–{} pairs per model (more while the interval is wider than ±{:.1}%, \
         for at most {:.0} s{}), {}, a fresh server per trial; \
         ratio = trimmed geometric mean of the pair ratios (candidate / baseline), {:.0}% bootstrap interval; \
         threshold {:.1}% throughput, {} p99",
        p.candidate_label,
        p.baseline_label,
        p.workload,
        p.pairs,
        p.max_pairs,
        p.precision * 100.0,
        p.time_limit_s,
        p.early_stop.map_or(String::new(), |floor| format!(
            "; fewer, from {floor} on, once no pair could change the verdict"
        )),
        match p.mode {
            Mode::Alternate => "the two trials of a pair one after the other, order alternating",
            Mode::SideBySide => "the two trials of a pair side by side on the same CPUs",
        },
        p.confidence * 100.0,
        p.threshold * 100.0,
        p.p99_threshold
            .map_or("not gated on".into(), |t| format!("{:.0}%", t * 100.0)),
    );
    s
}

/// What the table cannot hold: why a model failed or was skipped.
fn notes(report: &CompareReport) -> Vec<String> {
    let mut out = Vec::new();
    for m in &report.models {
        if let Some(f) = &m.failure {
            out.push(format!("{} FAILED: {f}", m.name));
        }
        if let Some(why) = &m.skipped {
            out.push(format!("{} skipped: {why}", m.name));
        }
        if m.retried_pairs > 0 {
            out.push(format!(
                "{}: {} pair(s) run again after a trial that measured nothing (no reply and no error within the window)",
                m.name, m.retried_pairs
            ));
        }
    }
    out
}

/// The table for a terminal.
pub fn table(report: &CompareReport) -> String {
    let rows = rows(report);
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            // Numbers right-aligned, words left.
            if (1..=5).contains(&i) || (7..=9).contains(&i) {
                let _ = write!(l, "{}{c}  ", " ".repeat(pad));
            } else {
                let _ = write!(l, "{c}{}  ", " ".repeat(pad));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    s.push_str(&line(&HEADER.map(String::from)));
    for r in &rows {
        s.push_str(&line(r));
    }
    for note in notes(report) {
        let _ = writeln!(s, "  {note}");
    }
    s.push_str(&headline(report));
    s.push('\n');
    s
}

/// The table as Markdown, for a pull-request comment.
pub fn markdown(report: &CompareReport) -> String {
    let mut s = String::from("### Throughput regression gate\n\n");
    let _ = writeln!(s, "{}\n", headline(report));
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    for r in rows(report) {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.replace('|', "\\|");
                if (i == 6 || i == 10) && (c == "REGRESSION" || c == "INCONCLUSIVE") {
                    format!("**{c}**")
                } else {
                    c
                }
            })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    if !notes(report).is_empty() {
        s.push('\n');
    }
    for note in notes(report) {
        let _ = writeln!(s, "- {note}");
    }
    let _ = writeln!(
        s,
        "\nMachine: {}; {}. Wall time {:.0} s.",
        report
            .machine
            .get("cpu_model")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown CPU"),
        report.params.placement,
        report.elapsed_s
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::compare::report::tests::{model, report};

    #[test]
    fn a_clean_comparison_reads_no_regression() {
        let r = report(vec![model(Some(Verdict::NoSignificantChange), None)]);
        assert!(table(&r).contains("no regression"));
        assert!(markdown(&r).starts_with("### Throughput regression gate"));
    }
}
