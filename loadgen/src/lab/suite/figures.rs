//! The suite's plots: SVG files drawn from a [`SuiteReport`] with the lab's chart primitives
//! ([`crate::lab::plot`]).
//!
//! Tables give the numbers; these show the shapes the lab is about: where each model's
//! throughput stops growing with connections, how its latency tail bends (HdrHistogram's
//! percentile spectrum), what a request costs the server in CPU and context switches, what a
//! connection costs in memory (PSS against RSS, which counts pages that forked processes
//! share once in every process), how evenly prefork workers share `accept`, what idle
//! connections do to the latency of a busy one, and how each model's p99 climbs with the load
//! offered to it (the sweep), against the SLO.
//!
//! Every model keeps one colour in every plot, chosen by its place in `report.models`. A plot
//! with no data is not written; cells that did not measure (`Unable`, `Failed`) draw nothing,
//! except that the idle plot marks where a model was unable.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Cell, CellStatus, SuiteReport, SweepCurve, Workload};
use crate::config::Arrivals;
use crate::lab::plot::{
    at_least, chart, colour, font, hbars, legend, lg, lighten, lines, page, Axis, Hollow, Line,
    Plot, Row, PLOT_W,
};

/// Writes every plot the report has data for into `dir` (created if missing); returns the
/// files written, as names relative to `dir`.
pub fn write_all(report: &SuiteReport, dir: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let plots = [
        ("throughput-vs-connections.svg", throughput(report)),
        (
            "latency-spectrum-echo.svg",
            spectrum(report, Workload::Echo),
        ),
        (
            "latency-spectrum-sleep.svg",
            spectrum(report, Workload::Sleep),
        ),
        (
            "latency-spectrum-short.svg",
            spectrum(report, Workload::Short),
        ),
        ("cost-per-request.svg", cost(report)),
        ("memory-per-connection.svg", memory(report)),
        ("accept-distribution.svg", accept(report)),
        ("idle-vs-latency.svg", idle(report)),
        ("latency-vs-offered-load.svg", offered_load(report)),
    ];
    let mut written = Vec::new();
    for (name, svg) in plots {
        let path = dir.join(name);
        match svg {
            Ok(None) => {}
            Ok(Some(svg)) => {
                std::fs::write(&path, svg)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                written.push(name.to_string());
            }
            Err(e) => return Err(format!("drawing {name}: {e}")),
        }
    }
    Ok(written)
}

/// The colour of the model called `name` (dark grey if the report does not list it).
fn colour_of(report: &SuiteReport, name: &str) -> RGBColor {
    report
        .models
        .iter()
        .position(|m| m.name == name)
        .map_or(RGBColor(60, 60, 60), colour)
}

/// A figure that can be drawn: finite and not negative.
fn usable(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v >= 0.0)
}

/// One model's cells of one workload with one status, in x order: what a line is drawn from.
#[derive(Debug)]
struct Series<'a> {
    name: &'a str,
    colour: RGBColor,
    cells: Vec<&'a Cell>,
}

/// The series of workload `w` with `status`, one per model that has any, in model order.
/// Cells of models the report does not list are left out: they have no colour.
fn series(report: &SuiteReport, w: Workload, status: CellStatus) -> Vec<Series<'_>> {
    let mut all = Vec::new();
    for (i, m) in report.models.iter().enumerate() {
        let mut cells: Vec<&Cell> = (report.cells.iter())
            .filter(|c| c.model == m.name && c.workload == w && c.status == status)
            .collect();
        cells.sort_by_key(|c| c.x);
        if !cells.is_empty() {
            all.push(Series {
                name: &m.name,
                colour: colour(i),
                cells,
            });
        }
    }
    all
}

/// Every x the series have, once each, in order.
fn xs_of<'a>(series: impl IntoIterator<Item = &'a Series<'a>>) -> Vec<u32> {
    let mut xs: Vec<u32> = (series.into_iter())
        .flat_map(|s| s.cells.iter().map(|c| c.x))
        .collect();
    xs.sort_unstable();
    xs.dedup();
    xs
}

/// A series as a line over log10(x), with `y` of each cell.
fn line<'a>(s: &Series<'a>, y: impl Fn(&Cell) -> f64) -> Line<'a> {
    let points = s.cells.iter().map(|c| (lg(f64::from(c.x), 1.0), y(c)));
    (s.name, s.colour, points.collect())
}

/// The y of every point of `lines`.
fn ys<'a>(lines: &'a [Line]) -> impl Iterator<Item = f64> + 'a {
    lines.iter().flat_map(|l| l.2.iter().map(|p| p.1))
}

/// The x the single-x plots use: 16 if measured, else the median x measured.
fn pick_x(series: &[Series]) -> Option<u32> {
    let xs = xs_of(series);
    if xs.contains(&16) {
        Some(16)
    } else {
        xs.get(xs.len() / 2).copied()
    }
}

/// Each series' cell at `x`, if it has one that is not partial: a partial cell describes only
/// the connections it served, and a bar or spectrum beside the others would read as the
/// model's at `x` (the throughput plot draws them apart, as hollow rings).
fn at_x<'a>(series: &'a [Series<'a>], x: u32) -> Vec<(&'a Series<'a>, &'a Cell)> {
    (series.iter())
        .filter_map(|s| {
            s.cells
                .iter()
                .find(|c| c.x == x && !c.partial())
                .map(|c| (s, *c))
        })
        .collect()
}

/// What a workload's x means, for titles.
fn describe(w: Workload, x: u32) -> String {
    match w {
        Workload::Echo => format!("echo 64 B at {x} connections"),
        Workload::Sleep => format!("SLEEP 1 ms at {x} connections"),
        Workload::Short => format!("one request per connection, {x} slots"),
        Workload::Idle => format!("echo with {x} idle connections"),
    }
}

/// What a hollow ring means, for the legend.
const HOLLOW_NOTE: [&str; 2] = [
    "hollow ring: partial, only some",
    "connections served (see report.md)",
];

/// Echo throughput against connections, a line per model.
fn throughput(report: &SuiteReport) -> Plot {
    let all = series(report, Workload::Echo, CellStatus::Ok);
    if all.is_empty() {
        return Ok(None);
    }
    // A partial cell (a bounded model that served only some connections) is no point on its
    // model's line: its throughput is that of the served connections alone.
    let full: Vec<Series> = all
        .iter()
        .map(|s| Series {
            name: s.name,
            colour: s.colour,
            cells: s.cells.iter().copied().filter(|c| !c.partial()).collect(),
        })
        .collect();
    let data: Vec<Line> = full
        .iter()
        .map(|s| line(s, |c| at_least(c.throughput_rps, 0.0)))
        .collect();
    let points = all
        .iter()
        .flat_map(|s| {
            s.cells
                .iter()
                .filter(|c| c.partial())
                .map(|c| (s.colour, c))
        })
        .map(|(colour, c)| {
            let p = (lg(f64::from(c.x), 1.0), at_least(c.throughput_rps, 0.0));
            (p, colour)
        })
        .collect();
    let hollow = Hollow {
        points,
        note: &HOLLOW_NOTE,
    };
    let max = ys(&data)
        .chain(hollow.points.iter().map(|h| h.0 .1))
        .fold(0.0, f64::max);
    let x = Axis::log_counts(&xs_of(&all), "connections (log scale)");
    let y = Axis::linear(max, "throughput (verified replies/s)");
    page(
        "Echo throughput against connections (64 B, closed loop)",
        |area| lines(area, &x, &y, &data, true, &[], &hollow),
    )
}

/// `log10(1 / (1 - p))` for a percentile `p` in 0..100: HdrHistogram's spectrum axis, where
/// 90%, 99%, 99.9% ... are evenly spaced. Kept below 7 (99.99999%).
fn spectrum_x(p: f64) -> f64 {
    let q = at_least(p / 100.0, 0.0).min(1.0 - 1e-7);
    -(1.0 - q).log10()
}

/// The label of spectrum tick `k`: 0%, 90%, 99%, 99.9%, ...
fn nines(k: f64) -> String {
    let k = k.round().max(0.0);
    format!(
        "{:.*}%",
        (k as usize).saturating_sub(2),
        100.0 - 10f64.powf(2.0 - k)
    )
}

/// HdrHistogram's percentile spectrum of workload `w` at its usual x, a line per model.
fn spectrum(report: &SuiteReport, w: Workload) -> Plot {
    let all = series(report, w, CellStatus::Ok);
    let Some(at) = pick_x(&all) else {
        return Ok(None);
    };
    let data: Vec<_> = (at_x(&all, at).into_iter())
        .map(|(s, c)| {
            // The 100% point (the max) has no place on this axis, as in HdrHistogram's plots.
            let points = (c.spectrum.iter()).filter(|(p, _)| p.is_finite() && *p < 100.0);
            let points = points
                .map(|(p, us)| (spectrum_x(*p), lg(*us, 1.0)))
                .collect::<Vec<_>>();
            (s.name, s.colour, points)
        })
        .filter(|d| !d.2.is_empty())
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    let right = data
        .iter()
        .flat_map(|d| d.2.iter().map(|p| p.0))
        .fold(2.0, f64::max)
        .ceil();
    let ticks = (0..=right as u32).map(f64::from).collect();
    let x = Axis::new(0.0..right, ticks, nines, "percentile");
    let y = Axis::log(ys(&data), "latency (µs, log scale)");
    page(
        &format!("Latency by percentile: {}", describe(w, at)),
        |area| lines(area, &x, &y, &data, false, &[], &Hollow::default()),
    )
}

/// Server CPU and context switches per echo request, per model, side by side.
fn cost(report: &SuiteReport) -> Plot {
    let all = series(report, Workload::Echo, CellStatus::Ok);
    let Some(at) = pick_x(&all) else {
        return Ok(None);
    };
    let cells = at_x(&all, at);
    let rows = |f: fn(&Cell) -> Option<f64>| -> Vec<Row> {
        (cells.iter())
            .map(|(s, c)| Row {
                name: s.name.into(),
                colour: s.colour,
                values: vec![usable(f(c))],
            })
            .collect()
    };
    let (cpu, ctx) = (
        rows(|c| c.server_cpu_us_per_req),
        rows(|c| c.server_ctx_per_req),
    );
    if cpu
        .iter()
        .chain(&ctx)
        .all(|r| r.values.iter().all(Option::is_none))
    {
        return Ok(None);
    }
    page(
        &format!("Server cost per request: {}", describe(Workload::Echo, at)),
        |area| {
            let panels = area.split_evenly((1, 2));
            hbars(&panels[0], Some("CPU"), "server CPU per request (µs)", &cpu)?;
            hbars(
                &panels[1],
                Some("Context switches"),
                "context switches per request",
                &ctx,
            )
        },
    )
}

/// Server PSS and RSS per added connection, per model: the slope between the smallest and
/// largest echo x, so a server's fixed base memory is not spread over its connections. Models
/// whose largest run has a note (a bounded model whose extra connections only waited in the
/// accept queue) are left out: they did not hold those connections.
fn memory(report: &SuiteReport) -> Plot {
    let all = series(report, Workload::Echo, CellStatus::Ok);
    let measured = |c: &Cell| c.x > 0 && (c.server_pss_kib.is_some() || c.server_rss_kib.is_some());
    let xs: Vec<u32> = all
        .iter()
        .flat_map(|s| s.cells.iter())
        .filter(|c| measured(c))
        .map(|c| c.x)
        .collect();
    let (Some(&lo), Some(&at)) = (xs.iter().min(), xs.iter().max()) else {
        return Ok(None);
    };
    if lo == at {
        return Ok(None);
    }
    let low: Vec<_> = at_x(&all, lo);
    let slope = |hi: Option<f64>, base: Option<f64>| {
        usable(hi)
            .zip(usable(base))
            .map(|(h, b)| ((h - b) / f64::from(at - lo)).max(0.0))
    };
    // A partial cell held fewer connections than its x: its slope would be too low.
    let rows: Vec<Row> = (at_x(&all, at).into_iter())
        .filter(|(_, c)| c.note.is_none() && !c.partial())
        .filter_map(|(s, c)| {
            let (_, base) = low.iter().find(|(l, _)| l.name == s.name)?;
            Some(Row {
                name: s.name.into(),
                colour: s.colour,
                values: vec![
                    slope(c.server_pss_kib, base.server_pss_kib),
                    slope(c.server_rss_kib, base.server_rss_kib),
                ],
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let grey = RGBColor(90, 90, 90);
    let entries = [
        ("PSS per added connection".into(), grey),
        ("RSS (lighter)".into(), lighten(grey, 0.55)),
    ];
    let notes = [
        "RSS counts a page shared by",
        "forked processes in full in",
        "every one of them; PSS splits",
        "it among them, so PSS adds up.",
    ];
    page(
        &format!("Server memory per added connection: echo, {lo} to {at} connections"),
        |area| {
            let (plot, side) = area.split_horizontally(PLOT_W);
            hbars(&plot, None, "KiB per connection", &rows)?;
            legend(&side, &entries, &notes)
        },
    )
}

/// Prefork: connections accepted per worker, a group of bars per accept mode.
fn accept(report: &SuiteReport) -> Plot {
    let modes: Vec<_> = report
        .accept
        .iter()
        .filter(|a| !a.per_worker.is_empty())
        .collect();
    if modes.is_empty() {
        return Ok(None);
    }
    let max = modes
        .iter()
        .flat_map(|a| a.per_worker.iter())
        .max()
        .copied()
        .unwrap_or(0);
    let names = modes.iter().map(|a| a.model.clone()).collect();
    // Categories at 0, 1, ..., shifted so that group g spans g - 0.5 .. g + 0.5.
    let x = Axis::categories(
        names,
        "accept mode (one bar per worker, worker 0 on the left)",
    );
    let y = Axis::linear(max as f64, "connections accepted (all runs)");
    let mut entries: Vec<(String, RGBColor)> = (modes.iter())
        .map(|a| {
            let jain = if a.jain.is_finite() {
                format!("{:.3}", a.jain)
            } else {
                "n/a".into()
            };
            (
                format!("{} (Jain {jain})", a.model),
                colour_of(report, &a.model),
            )
        })
        .collect();
    entries.push(("even share (mean)".into(), BLACK));
    page("Prefork: connections accepted per worker", |area| {
        let (plot, side) = area.split_horizontally(PLOT_W);
        let mut chart = chart(&plot, None, &x, &y, 70)?;
        for (g, a) in modes.iter().enumerate() {
            let c = colour_of(report, &a.model);
            let w = 0.8 / a.per_worker.len() as f64;
            let left = g as f64 - 0.4;
            chart.draw_series(a.per_worker.iter().enumerate().map(|(i, n)| {
                let x0 = left + w * i as f64;
                Rectangle::new(
                    [(x0 + w * 0.08, 0.0), (x0 + w * 0.92, *n as f64)],
                    c.filled(),
                )
            }))?;
            let mean = a.per_worker.iter().sum::<u64>() as f64 / a.per_worker.len() as f64;
            let line = vec![(left - 0.03, mean), (left + 0.83, mean)];
            chart.draw_series([PathElement::new(line, BLACK.stroke_width(2))])?;
        }
        legend(&side, &entries, &[])
    })
}

/// Echo p50 latency against idle connections held open, a line per model; where a model was
/// unable (select past FD_SETSIZE), a marked x.
fn idle(report: &SuiteReport) -> Plot {
    let ok = series(report, Workload::Idle, CellStatus::Ok);
    let unable = series(report, Workload::Idle, CellStatus::Unable);
    if ok.is_empty() {
        return Ok(None);
    }
    let data: Vec<Line> = ok.iter().map(|s| line(s, |c| lg(c.p50_us, 1.0))).collect();
    // Only models that tried and were refused get a mark: a bounded model that was not run
    // (its workers would all be held by idle connections) is left out, not placed at an
    // arbitrary height.
    let marks: Vec<_> = (unable.iter())
        .flat_map(|s| s.cells.iter().map(move |c| (s, c)))
        .filter(|(_, c)| c.note.as_deref().is_some_and(|n| n.contains("refused")))
        .map(|(s, c)| {
            let why = c.note.as_deref().unwrap_or("");
            let why = if why.contains("FD_SETSIZE") {
                " (FD_SETSIZE)"
            } else {
                ""
            };
            (
                lg(f64::from(c.x), 1.0),
                s.colour,
                format!("{}: unable{why}", s.name),
            )
        })
        .collect();
    let x = Axis::log_counts(
        &xs_of(ok.iter().chain(&unable)),
        "idle connections held open (log scale)",
    );
    let y = Axis::log(
        ys(&data),
        "p50 latency of the busy connection (µs, log scale)",
    );
    page("Echo latency with idle connections held open", |area| {
        lines(area, &x, &y, &data, true, &marks, &Hollow::default())
    })
}

/// Points in plotted units.
type Points = Vec<(f64, f64)>;

/// A sweep curve's achieved points as (log10 offered req/s, log10 p99 µs): a rate loadgen
/// did not achieve has no latency to draw.
fn achieved(curve: &SweepCurve) -> Points {
    (curve.points.iter())
        .filter(|p| p.achieved && p.runs > 0)
        .map(|p| (lg(p.offered_rps, 1.0), lg(p.p99_us as f64, 1.0)))
        .collect()
}

/// The sweep: p99 against offered load, a line per model and arrival process (fixed solid,
/// Poisson lighter and dashed), both axes log (the models' capacities differ by orders of
/// magnitude), with the SLO as a horizontal line.
fn offered_load(report: &SuiteReport) -> Plot {
    // (colour, Poisson, points) of each curve that has a point to draw.
    let mut curves: Vec<(RGBColor, bool, Points)> = Vec::new();
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    for (i, m) in report.models.iter().enumerate() {
        let Some(sweep) =
            (report.sweeps.iter()).find(|w| w.model == m.name && w.status == CellStatus::Ok)
        else {
            continue;
        };
        let before = curves.len();
        for c in &sweep.curves {
            let points = achieved(c);
            if !points.is_empty() {
                curves.push((colour(i), c.arrivals == Arrivals::Poisson, points));
            }
        }
        if curves.len() > before {
            entries.push((m.name.clone(), colour(i)));
        }
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let slo = report.params.sweep.as_ref().map(|p| p.slo_p99_us);
    let slo_y = slo.map(|us| lg(us as f64, 1.0));
    let x = Axis::log(
        curves.iter().flat_map(|c| c.2.iter().map(|p| p.0)),
        "offered load (requests/s, log scale)",
    );
    let y = Axis::log(
        (curves.iter().flat_map(|c| c.2.iter().map(|p| p.1))).chain(slo_y),
        "p99 latency (µs, log scale)",
    );
    let grey = RGBColor(90, 90, 90);
    entries.push(("fixed arrivals".into(), grey));
    entries.push(("Poisson (lighter, dashed)".into(), lighten(grey, 0.5)));
    let notes = ["Only rates loadgen achieved", "are drawn."];
    page("Latency against offered load (the sweep)", |area| {
        let (plot, side) = area.split_horizontally(PLOT_W);
        let mut chart = chart(&plot, None, &x, &y, 70)?;
        if let (Some(us), Some(at)) = (slo, slo_y) {
            let xs = chart.x_range();
            let line = vec![(xs.start, at), (xs.end, at)];
            chart.draw_series([PathElement::new(line, BLACK.mix(0.7).stroke_width(2))])?;
            let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Bottom));
            let label = format!("SLO: p99 {}", crate::stats::fmt_us(us));
            chart
                .plotting_area()
                .draw(&(EmptyElement::at((xs.start, at)) + Text::new(label, (6, -3), style)))?;
        }
        for (c, poisson, points) in &curves {
            if *poisson {
                let light = lighten(*c, 0.45);
                let style = light.stroke_width(2);
                chart.draw_series(DashedLineSeries::new(points.iter().copied(), 7, 5, style))?;
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, light.filled())))?;
            } else {
                chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
                chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
            }
        }
        legend(&side, &entries, &notes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::suite::report::{
        AcceptDistribution, ModelInfo, ModelSweep, SuiteParams, SweepCapacity, SweepKnee,
        SweepPoint, SweepSettings,
    };

    /// A sweep whose p99 climbs with the load, the last rate not achieved; Poisson's p99 a
    /// little higher than fixed's.
    fn sweep(model: &str, capacity: f64) -> ModelSweep {
        let fractions = [0.2, 0.6, 1.0, 1.2];
        let curve = |arrivals: &str, worse: f64| {
            let points: Vec<SweepPoint> = (fractions.iter().enumerate())
                .map(|(i, f)| SweepPoint {
                    offered_rps: f * capacity,
                    utilisation: *f,
                    runs: 3,
                    valid_runs: if i < 3 { 3 } else { 0 },
                    achieved: i < 3,
                    achieved_rps: f * capacity,
                    p99_us: if i < 3 {
                        (200.0 * worse * 4f64.powi(i as i32)) as u64
                    } else {
                        0
                    },
                    ..SweepPoint::default()
                })
                .collect();
            SweepCurve {
                arrivals: arrivals.parse().expect("fixed or poisson"),
                knee: Some(SweepKnee {
                    offered_rps: points[1].offered_rps,
                    utilisation: points[1].utilisation,
                    p99_us: points[1].p99_us,
                    lower_bound: false,
                }),
                points,
            }
        };
        ModelSweep {
            model: model.into(),
            status: CellStatus::Ok,
            note: None,
            load: "binary echo 64 B, 16 connections, pipeline 4, 1 thread(s)".into(),
            capacity: Some(SweepCapacity {
                rps: capacity,
                runs: vec![capacity],
                server_cpu_us: Some(3.0),
            }),
            curves: vec![curve("fixed", 1.0), curve("poisson", 1.3)],
            notes: vec![],
            errors: false,
        }
    }

    fn cell(model: &str, workload: Workload, x: u32, scale: f64) -> Cell {
        Cell {
            model: model.into(),
            workload,
            x,
            status: CellStatus::Ok,
            note: None,
            runs: 3,
            connections: x,
            served: Some(f64::from(x)),
            errors: 0,
            ok: 0,
            failed: 0,
            indeterminate: 0,
            throughput_rps: 20_000.0 * scale * f64::from(x).sqrt(),
            p50_us: 40.0 * scale,
            p90_us: 60.0 * scale,
            p99_us: 120.0 * scale,
            p999_us: 400.0 * scale,
            max_us: 2_000.0 * scale,
            server_cpu_us_per_req: Some(12.0 * scale),
            server_ctx_per_req: Some(0.8 * scale),
            server_syscalls_per_req: None,
            client_syscalls_per_req: None,
            server_pss_kib: Some(4_000.0 * scale),
            server_rss_kib: Some(9_000.0 * scale),
            server_processes: Some(1.0),
            server_threads: Some(1.0),
            spectrum: [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0]
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, 30.0 * scale * 1.8f64.powi(i as i32)))
                .collect(),
            hgrm: None,
        }
    }

    fn report() -> SuiteReport {
        let names = [
            "thread",
            "fork",
            "prefork-shared",
            "prefork-reuseport",
            "eventloop-select",
            "eventloop-epoll",
        ];
        let mut cells = Vec::new();
        for (i, m) in names.iter().enumerate() {
            let scale = 1.0 + i as f64 * 0.3;
            for x in [1, 16, 256] {
                cells.push(cell(m, Workload::Echo, x, scale));
            }
            cells.push(cell(m, Workload::Sleep, 16, scale));
            for x in [10, 100, 1000, 10_000] {
                cells.push(cell(
                    m,
                    Workload::Idle,
                    x,
                    scale * (1.0 + f64::from(x) / 2_000.0),
                ));
            }
        }
        // What the plots must survive: zeros, missing figures, NaN, cells that did not run.
        cells[0].throughput_rps = 0.0;
        cells[1].server_cpu_us_per_req = None;
        cells[1].server_pss_kib = Some(f64::NAN);
        cells[2].spectrum.push((f64::NAN, 0.0));
        cells[3].spectrum[0].1 = 0.0;
        let select = cells.iter_mut().find(|c| {
            c.model == "eventloop-select" && c.workload == Workload::Idle && c.x == 10_000
        });
        let select = select.expect("select idle cell");
        select.status = CellStatus::Unable;
        select.note = Some("served 1015 of 2000 idle connections, then refused (select's FD_SETSIZE is 1024): server busy".into());
        let failed = cells
            .iter_mut()
            .find(|c| c.model == "fork" && c.workload == Workload::Echo && c.x == 256);
        let failed = failed.expect("fork echo cell");
        failed.status = CellStatus::Failed;
        failed.throughput_rps = f64::NAN;
        SuiteReport {
            run_id: "2026-01-01-000000-suite".into(),
            tool: "loadgen test".into(),
            machine: serde_json::Value::Null,
            params: SuiteParams {
                repeat: 3,
                duration_s: 5.0,
                warmup_s: 1.0,
                connections: vec![1, 16, 256],
                idle: vec![10, 100, 1000, 10_000],
                full: false,
                placement: String::new(),
                engine: "epoll".into(),
                count_syscalls: false,
                sweep: Some(SweepSettings {
                    slo_p99_us: 1000,
                    fractions: vec![0.2, 0.6, 1.0, 1.2],
                    connections: 16,
                    pipeline: 4,
                    runaway: 10.0,
                }),
            },
            models: names
                .iter()
                .map(|n| ModelInfo {
                    name: (*n).into(),
                    command: format!("server-{n}"),
                })
                .collect(),
            cells,
            accept: vec![
                AcceptDistribution {
                    model: "prefork-shared".into(),
                    per_worker: vec![900, 40, 30, 30],
                    jain: 0.33,
                },
                AcceptDistribution {
                    model: "prefork-reuseport".into(),
                    per_worker: vec![250, 251, 249, 250],
                    jain: 0.9999,
                },
            ],
            failures: vec![],
            elapsed_s: 60.0,
            load_before: None,
            load_after: None,
            sweeps: names
                .iter()
                .enumerate()
                .map(|(i, n)| sweep(n, 20_000.0 * 3f64.powi(i as i32)))
                .collect(),
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("echolab-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A bounded model that served 32 of 256 connections is no point on its line: it is a
    /// hollow ring, and the legend says what a ring means. Full reports draw no ring.
    #[test]
    fn a_partial_cell_is_a_hollow_ring_with_a_legend() {
        let mut report = report();
        let plain = throughput(&report).expect("draws").expect("has data");
        assert!(!plain.contains(HOLLOW_NOTE[0]), "no partial cell, no note");
        let c = (report.cells.iter_mut())
            .find(|c| c.workload == Workload::Echo && c.x == 256)
            .expect("a cell at 256");
        c.served = Some(32.0);
        let svg = throughput(&report).expect("draws").expect("has data");
        assert!(svg.contains(HOLLOW_NOTE[0]), "the legend explains the ring");
        assert!(
            svg.matches("fill=\"#FFFFFF\"").count() > plain.matches("fill=\"#FFFFFF\"").count(),
            "a white-filled ring is drawn"
        );
    }

    #[test]
    fn every_plot_is_written_and_names_its_models() {
        let dir = temp_dir("all");
        let report = report();
        let written = write_all(&report, &dir).expect("plots");
        let expected = [
            "throughput-vs-connections.svg",
            "latency-spectrum-echo.svg",
            "latency-spectrum-sleep.svg",
            "cost-per-request.svg",
            "memory-per-connection.svg",
            "accept-distribution.svg",
            "idle-vs-latency.svg",
            "latency-vs-offered-load.svg",
        ];
        assert_eq!(
            written, expected,
            "no short workload in the report, so no short spectrum"
        );
        for name in expected {
            let svg = std::fs::read_to_string(dir.join(name)).expect(name);
            assert!(
                svg.starts_with("<svg"),
                "{name}: {}",
                &svg[..40.min(svg.len())]
            );
            assert!(svg.len() > 3_000, "{name}: only {} bytes", svg.len());
            assert!(svg.contains("<text"), "{name}: no text");
            for bad in ["NaN", "\"inf", "\"-inf"] {
                assert!(!svg.contains(bad), "{name} contains {bad}");
            }
            let models: &[&str] = if name == "accept-distribution.svg" {
                &[
                    "prefork-shared (Jain 0.330)",
                    "prefork-reuseport (Jain 1.000)",
                ]
            } else {
                &["thread", "prefork-shared", "eventloop-epoll"]
            };
            for m in models {
                assert!(svg.contains(m), "{name} does not name {m}");
            }
        }
        let idle = std::fs::read_to_string(dir.join("idle-vs-latency.svg")).expect("idle");
        assert!(idle.contains("eventloop-select: unable (FD_SETSIZE)"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn an_empty_report_writes_nothing() {
        let dir = temp_dir("empty");
        let mut report = report();
        report.cells.clear();
        report.accept.clear();
        report.sweeps.clear();
        assert_eq!(
            write_all(&report, &dir).expect("no plots"),
            Vec::<String>::new()
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn one_x_and_sparse_figures_still_plot() {
        let dir = temp_dir("sparse");
        let mut report = report();
        report
            .cells
            .retain(|c| c.workload == Workload::Echo && c.x == 256);
        report.accept.clear();
        report.sweeps.clear();
        for c in &mut report.cells {
            c.spectrum.retain(|(p, _)| *p >= 99.0);
            (c.server_cpu_us_per_req, c.server_rss_kib) = (None, None);
        }
        let written = write_all(&report, &dir).expect("plots");
        // Memory per added connection needs two connection counts: with one, no plot.
        assert_eq!(written.len(), 3, "{written:?}");
        assert!(
            !written.iter().any(|n| n.starts_with("memory")),
            "{written:?}"
        );
        for name in &written {
            let svg = std::fs::read_to_string(dir.join(name)).expect("svg");
            assert!(
                svg.contains("eventloop-epoll") && !svg.contains("NaN"),
                "{name}"
            );
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// The sweep's plot: a line per model and arrival process, Poisson dashed, only achieved
    /// points, the SLO drawn; a model whose sweep did not measure, or that has no achieved
    /// point, draws nothing and is not in the legend.
    #[test]
    fn the_sweep_plot_draws_achieved_points_and_the_slo() {
        // What the SVG's <text> elements say, each trimmed.
        let texts = |svg: &str| -> Vec<String> {
            (svg.split("<text").skip(1))
                .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0))
                .map(|t| t.trim().to_string())
                .collect()
        };
        let hex = |c: RGBColor| format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        let mut report = report();
        let svg = offered_load(&report).expect("draws").expect("has data");
        let said = texts(&svg);
        assert!(said.contains(&"SLO: p99 1.00ms".to_string()), "{said:?}");
        for m in ["thread", "fork", "eventloop-epoll", "fixed arrivals"] {
            assert!(
                said.contains(&m.to_string()),
                "the legend names {m}: {said:?}"
            );
        }
        // Fixed arrivals: one line in the model's colour; Poisson: dashes, a line each, in
        // its lighter colour.
        let (solid, light) = (hex(colour(0)), hex(lighten(colour(0), 0.45)));
        let lines_in = |c: &str| svg.split("<polyline").filter(|l| l.contains(c)).count();
        assert_eq!(lines_in(&solid), 1, "{svg}");
        assert!(lines_in(&light) > 3, "Poisson is dashed: {svg}");
        let dots = |svg: &str| svg.matches("<circle").count();
        // 6 models, 2 curves each, 3 achieved points each (the 4th was not achieved).
        assert_eq!(dots(&svg), 6 * 2 * 3, "one dot per achieved point");

        report.sweeps[0].status = CellStatus::Failed;
        for p in &mut report.sweeps[1].curves[1].points {
            p.achieved = false;
        }
        let fewer = offered_load(&report).expect("draws").expect("has data");
        assert_eq!(dots(&fewer), 6 * 2 * 3 - 6 - 3, "{fewer}");
        let said = texts(&fewer);
        assert!(
            !said.contains(&"thread".to_string()),
            "a failed sweep: {said:?}"
        );
        assert!(
            said.contains(&"fork".to_string()),
            "fork's fixed curve: {said:?}"
        );
        for w in &mut report.sweeps {
            w.status = CellStatus::Unable;
        }
        assert!(offered_load(&report).expect("draws").is_none());
    }

    #[test]
    fn the_spectrum_axis_keeps_to_its_range() {
        assert_eq!(nines(0.0), "0%");
        assert_eq!(nines(1.0), "90%");
        assert_eq!(nines(2.0), "99%");
        assert_eq!(nines(5.0), "99.999%");
        assert!((spectrum_x(100.0) - 7.0).abs() < 1e-6);
        assert!(spectrum_x(99.0) > 1.99 && spectrum_x(99.0) < 2.01);
    }
}
