//! `loadgen trend`: the regression gate's history as a table and an SVG plot.
//!
//! Apart from the history file it reads because a person runs it, not the gate: it decides
//! nothing, and only shows how the gate's verdicts have moved from run to run. The plot lives
//! here, beside the history it draws, rather than with the suite's figures: the chart
//! primitives it is drawn with ([`crate::lab::plot`]) know nothing of the gate, so the gate
//! and the primitives never import each other.

use std::fmt::Write as _;
use std::fs;

use plotters::prelude::*;

use super::flags::TrendArgs;
use super::history::read_history;
use super::report::CompareReport;
use super::stats::Verdict;
use crate::lab::plot::{chart, colour, font, legend, Axis, Line, Plot, PLOT_W, SIZE};

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
    match history_plot(&runs) {
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

/// The regression gate's history (`loadgen trend`): above, each model's throughput ratio
/// (candidate / baseline) per gate run with its interval, between the threshold lines; below,
/// the candidate's throughput per gate run. The ratio is what the gate decides on; the
/// absolute rate is there to show how far the machine itself drifts between runs, which is
/// why the gate never compares with a stored figure.
fn history_plot(runs: &[CompareReport]) -> Plot {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        for m in &r.models {
            if m.throughput.is_some() && !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let n = runs.len();
    let x_ticks: Vec<f64> = (1..=n).map(|i| i as f64).collect();
    let step = (n / 10).max(1);
    let x_axis = || {
        Axis::new(
            0.5..n as f64 + 0.5,
            x_ticks.iter().copied().step_by(step).collect(),
            |v| format!("{v:.0}"),
            "gate run (oldest first)",
        )
    };
    let threshold = runs.last().map_or(0.05, |r| r.params.threshold);
    let (mut lo, mut hi) = (1.0 - 2.0 * threshold, 1.0 + 2.0 * threshold);
    for r in runs {
        for e in r.models.iter().filter_map(|m| m.throughput) {
            lo = f64::min(lo, e.low);
            hi = f64::max(hi, e.high);
        }
    }
    let pad = (hi - lo) * 0.05;
    let raw_step = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw_step.log10().floor());
    let tick = [1.0, 2.0, 5.0, 10.0]
        .map(|m| m * mag)
        .into_iter()
        .find(|s| *s >= raw_step)
        .unwrap_or(10.0 * mag);
    let first = ((lo - pad) / tick).ceil() as i64;
    let last = ((hi + pad) / tick).floor() as i64;
    let ratio_ticks = (first..=last).map(|k| k as f64 * tick).collect();
    let ratio_axis = Axis::new(
        lo - pad..hi + pad,
        ratio_ticks,
        |v| format!("{v:.2}"),
        "throughput, candidate / baseline",
    );
    let max_rps = runs
        .iter()
        .flat_map(|r| r.models.iter().map(|m| m.candidate_rps))
        .fold(0.0, f64::max);
    let rps_axis = Axis::linear(max_rps, "candidate req/s");
    // Each run's x, nudged per model so that the intervals of one run do not overlap.
    let spread = 0.5 / names.len() as f64;
    let x_of = |run: usize, model: usize| {
        (run + 1) as f64 + (model as f64 - (names.len() - 1) as f64 / 2.0) * spread
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled("Regression gate: every run, every model", font(22.0))?;
        let (top, bottom) = body.split_vertically(430);
        let (plot, side) = top.split_horizontally(PLOT_W);
        let mut upper = chart(&plot, None, &x_axis(), &ratio_axis, 70)?;
        for t in [1.0 - threshold, 1.0, 1.0 + threshold] {
            let style = if t == 1.0 {
                BLACK.mix(0.6).stroke_width(1)
            } else {
                RGBColor(214, 39, 40).mix(0.7).stroke_width(1)
            };
            upper.draw_series(LineSeries::new([(0.5, t), (n as f64 + 0.5, t)], style))?;
        }
        for (k, name) in names.iter().enumerate() {
            let c = colour(k);
            for (i, r) in runs.iter().enumerate() {
                let Some(m) = r.models.iter().find(|m| m.name == *name) else {
                    continue;
                };
                let Some(e) = m.throughput else { continue };
                let x = x_of(i, k);
                upper.draw_series([PathElement::new(
                    vec![(x, e.low), (x, e.high)],
                    c.stroke_width(2),
                )])?;
                let regressed = m.regressed();
                let dot: DynElement<SVGBackend, (f64, f64)> = if regressed {
                    Cross::new((x, e.ratio), 6, c.stroke_width(3)).into_dyn()
                } else {
                    Circle::new((x, e.ratio), 3, c.filled()).into_dyn()
                };
                upper.draw_series([dot])?;
            }
        }
        let entries: Vec<(String, RGBColor)> = names
            .iter()
            .enumerate()
            .map(|(k, n)| (n.to_string(), colour(k)))
            .collect();
        let band = format!("red lines: ±{:.0}% threshold", threshold * 100.0);
        legend(
            &side,
            &entries,
            &[
                "bars: confidence interval",
                "x: flagged a regression",
                &band,
            ],
        )?;
        let (plot, _) = bottom.split_horizontally(PLOT_W);
        let data: Vec<Line> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let points = runs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        let m = r.models.iter().find(|m| m.name == *name)?;
                        m.throughput.map(|_| ((i + 1) as f64, m.candidate_rps))
                    })
                    .collect();
                (*name, colour(k), points)
            })
            .collect();
        let mut lower = chart(&plot, None, &x_axis(), &rps_axis, 70)?;
        for (_, c, points) in &data {
            lower.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
            lower.draw_series(points.iter().map(|p| Circle::new(*p, 3, c.filled())))?;
        }
        root.present()?;
    }
    Ok(Some(svg))
}
