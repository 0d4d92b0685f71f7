//! `loadgen merge`: the segments of one run, made on several machines, as one report.
//!
//! N instances of `loadgen run --segment I/N` (docs/loadgen.md, "More than one machine")
//! each write a JSON report and an interval log. A report's percentiles cannot be merged
//! (the median of medians is no median), but histograms can, exactly: the union of the
//! segments' per-second histograms is the histogram one instance would have recorded, so its
//! percentiles are exact. This is the HdrHistogram way (its `UnionHistogramLogs`); counts and
//! errors are sums, and each second of the merged series is the union of the segments'
//! seconds that began at the same wall-clock second.
//!
//! What is exact and what is assumed: the counts, the latency distribution and every
//! percentile are exact whatever the clocks say (latency is timed on each machine's
//! monotonic clock). Which second a sample falls in is aligned by each run's wall clock, so
//! the per-second series is as good as the machines' clock sync (NTP, PTP).
//!
//! Refused, with a message that says which file: inputs that are not one run's segments (a
//! segment missing or twice, different segment counts), parameters that disagree, runs that do
//! not overlap in time, and a log that does not match its report's count.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use clap::Args;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::config::rfc3339;
use crate::stats::{self, Counts, Summary};

/// `loadgen merge`'s flags.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The segments' JSON reports (`loadgen run --json`) and interval logs (`--hlog`), in
    /// any order: each log is matched to its report by the segment its histograms are
    /// tagged with. Every segment of the run must be there, each with its log.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Write the merged report as JSON (the same shape as `loadgen run --json`, plus
    /// `merged`).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write the merged per-second histograms as an interval log (untagged, StartTime the
    /// earliest segment's).
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,
}

/// Why the inputs cannot be merged.
#[derive(Debug)]
pub struct Refused(pub String);

/// One segment: its report and what its log held.
struct Part {
    index: u64,
    report: Value,
    report_path: PathBuf,
    /// Wall-clock start of the measured window, and its length, seconds.
    from: f64,
    elapsed: f64,
    /// The per-second histograms, by second since `from`.
    seconds: Vec<(u64, Histogram<u64>)>,
    /// The step histograms (a ramp or steps), in order.
    steps: Vec<Histogram<u64>>,
}

/// The longest histogram entry read, base64 characters: loadgen's are a few KB.
const MAX_ENTRY: usize = 1 << 20;

/// The most histograms one log may hold: a day of seconds, and steps.
const MAX_HISTOGRAMS: usize = 100_000;

/// The largest count or byte total taken from a report: sums of any number of them cannot
/// overflow, and no real run comes near it.
const MAX_COUNT: u64 = 1 << 53;

/// A parsed interval log.
struct Log {
    path: PathBuf,
    segment: Option<(u64, u64)>,
    start: Option<f64>,
    seconds: Vec<(u64, Histogram<u64>)>,
    steps: Vec<Histogram<u64>>,
}

/// Merges the files named by `args`; returns the merged report.
pub fn merge(args: &MergeArgs) -> Result<Value, Refused> {
    let mut reports = Vec::new();
    let mut logs = Vec::new();
    for path in &args.files {
        let text = fs::read_to_string(path)
            .map_err(|e| Refused(format!("cannot read {}: {e}", path.display())))?;
        if text.trim_start().starts_with('{') {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Refused(format!("{}: not a loadgen report: {e}", path.display())))?;
            reports.push((path.clone(), v));
        } else {
            logs.push(read_log(path, &text)?);
        }
    }
    let parts = pair(reports, logs)?;
    check_params(&parts)?;
    check_overlap(&parts)?;
    let merged = combine(&parts);
    if let Some(path) = &args.hlog {
        write_log(path, &parts)
            .map_err(|e| Refused(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&merged).unwrap_or_default();
        fs::write(path, text + "\n")
            .map_err(|e| Refused(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(merged)
}

/// Reads an interval log as `loadgen run --segment` writes it: per-second histograms tagged
/// `segment-I-of-N`, step histograms tagged `step`.
fn read_log(path: &Path, text: &str) -> Result<Log, Refused> {
    let bad = |why: String| Refused(format!("{}: {why}", path.display()));
    let mut log = Log {
        path: path.to_path_buf(),
        segment: None,
        start: None,
        seconds: Vec::new(),
        steps: Vec::new(),
    };
    for entry in IntervalLogIterator::new(text.as_bytes()) {
        match entry.map_err(|e| bad(format!("not an interval log: {e:?}")))? {
            LogEntry::StartTime(t) => log.start = Some(t.as_secs_f64()),
            LogEntry::BaseTime(_) => {}
            LogEntry::Interval(iv) => {
                // loadgen's own histograms compress to a few KB; a huge entry is not one.
                if iv.encoded_histogram().len() > MAX_ENTRY {
                    return Err(bad(format!(
                        "a histogram entry of {} bytes, more than loadgen writes ({MAX_ENTRY})",
                        iv.encoded_histogram().len()
                    )));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(iv.encoded_histogram())
                    .map_err(|e| bad(format!("a histogram is not base64: {e}")))?;
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| bad(format!("a histogram does not decode: {e:?}")))?;
                // Another tool's histogram (other bounds or precision) would not add exactly.
                let ours = stats::new_histogram();
                if (h.low(), h.high(), h.sigfig()) != (ours.low(), ours.high(), ours.sigfig()) {
                    return Err(bad(format!(
                        "a histogram of {}..{} at {} digits: not loadgen's ({}..{} at {})",
                        h.low(),
                        h.high(),
                        h.sigfig(),
                        ours.low(),
                        ours.high(),
                        ours.sigfig()
                    )));
                }
                if log.seconds.len() + log.steps.len() >= MAX_HISTOGRAMS {
                    return Err(bad(format!("more than {MAX_HISTOGRAMS} histograms")));
                }
                match iv.tag().map(|t| t.as_str()) {
                    Some("step") => log.steps.push(h),
                    Some(tag) => {
                        let seg = parse_tag(tag).ok_or_else(|| {
                            bad(format!("histogram tag {tag:?} names no segment"))
                        })?;
                        if log.segment.is_some_and(|s| s != seg) {
                            return Err(bad("histograms of two segments in one log".into()));
                        }
                        log.segment = Some(seg);
                        log.seconds
                            .push((iv.start_timestamp().as_secs_f64().round() as u64, h));
                    }
                    None => {
                        return Err(bad(
                            "an untagged histogram: not a segment's log (loadgen run --segment tags them)"
                                .into(),
                        ))
                    }
                }
            }
        }
    }
    if log.start.is_none() {
        return Err(bad("no StartTime: the log cannot be placed in time".into()));
    }
    Ok(log)
}

/// `segment-I-of-N` → (I, N).
fn parse_tag(tag: &str) -> Option<(u64, u64)> {
    let rest = tag.strip_prefix("segment-")?;
    let (i, n) = rest.split_once("-of-")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// Matches each report with its log and checks that they are every segment of one run.
fn pair(reports: Vec<(PathBuf, Value)>, logs: Vec<Log>) -> Result<Vec<Part>, Refused> {
    if reports.is_empty() {
        return Err(Refused(
            "no JSON report among the files: pass each segment's --json".into(),
        ));
    }
    let mut by_index: BTreeMap<u64, Part> = BTreeMap::new();
    let mut count = None;
    for (path, report) in reports {
        let seg = &report["params"]["segment"];
        let (Some(index), Some(n)) = (seg["index"].as_u64(), seg["count"].as_u64()) else {
            return Err(Refused(format!(
                "{}: not a segment's report (run with --segment I/N)",
                path.display()
            )));
        };
        if n == 0 || index >= n {
            return Err(Refused(format!(
                "{}: segment {index} of {n} cannot be",
                path.display()
            )));
        }
        if *count.get_or_insert(n) != n {
            return Err(Refused(format!(
                "{} is segment {index} of {n}, the others are of {}",
                path.display(),
                count.unwrap_or(n)
            )));
        }
        let from = report["clock"]["measured_from_unix_s"]
            .as_f64()
            .unwrap_or(-1.0);
        let elapsed = report["elapsed_s"].as_f64().unwrap_or(-1.0);
        // Year 1970 to 9999, and a window of at most a year: a wall clock and a run.
        if !(0.0..=253_402_300_799.0).contains(&from) || !(0.0..=3.2e7).contains(&elapsed) {
            return Err(Refused(format!(
                "{}: clock.measured_from_unix_s {from} or elapsed_s {elapsed} is not a run's",
                path.display()
            )));
        }
        if serde_json::from_value::<Counts>(report["counts"].clone()).map_or(true, |c| {
            c.sent
                .max(c.ok)
                .max(c.request_bytes)
                .max(c.reply_bytes)
                .max(c.bytes_written)
                .max(c.bytes_read)
                > MAX_COUNT
        }) {
            return Err(Refused(format!(
                "{}: its counts are missing or out of range",
                path.display()
            )));
        }
        let part = Part {
            index,
            report,
            report_path: path.clone(),
            from,
            elapsed,
            seconds: Vec::new(),
            steps: Vec::new(),
        };
        if let Some(other) = by_index.insert(index, part) {
            return Err(Refused(format!(
                "segment {index} twice: {} and {}",
                other.report_path.display(),
                path.display()
            )));
        }
    }
    let n = count.unwrap_or(0);
    let missing: Vec<String> = (0..n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Refused(format!(
            "segment(s) {} of {n} missing: a merge of some segments is not the run",
            missing.join(", ")
        )));
    }
    for log in logs {
        let Some((index, of)) = log.segment else {
            return Err(Refused(format!(
                "{}: an interval log with no histograms",
                log.path.display()
            )));
        };
        let part = by_index
            .get_mut(&index)
            .filter(|_| of == n)
            .ok_or_else(|| {
                Refused(format!(
                    "{} is segment {index} of {of}'s log, and no report is",
                    log.path.display()
                ))
            })?;
        if !part.seconds.is_empty() {
            return Err(Refused(format!("two logs of segment {index}")));
        }
        let count: u64 = log.seconds.iter().map(|(_, h)| h.len()).sum();
        let reported = part.report["latency_us"]["count"].as_u64().unwrap_or(0);
        if count != reported {
            return Err(Refused(format!(
                "{} holds {count} latencies, its report {} says {reported}: not the same run",
                log.path.display(),
                part.report_path.display()
            )));
        }
        // The log's StartTime is the measured window's start, as the report's clock is.
        if let Some(start) = log.start {
            if (start - part.from).abs() > 0.01 {
                return Err(Refused(format!(
                    "{} starts at {start:.3}, its report at {:.3}: not the same run",
                    log.path.display(),
                    part.from
                )));
            }
        }
        part.seconds = log.seconds;
        part.steps = log.steps;
    }
    if let Some(p) = by_index
        .values()
        .find(|p| p.seconds.is_empty() && p.report["latency_us"]["count"].as_u64() != Some(0))
    {
        return Err(Refused(format!(
            "no interval log for segment {} ({}): latency merges exactly only from the logs (pass each segment's --hlog too)",
            p.index,
            p.report_path.display()
        )));
    }
    Ok(by_index.into_values().collect())
}

/// The parameters that may differ between segments: the segment itself, what each instance
/// draws for itself when not told (`--op incr`'s key prefix and client-id base), what is
/// the machine's own (`--source-ips`; `--threads`, which a segment with fewer slots than
/// threads lowers), and `--start-at` (a `+10s` differs by when each was typed): whether the
/// segments ran together is decided by their measured windows, which must overlap.
const OWN_PARAMS: [&str; 6] = [
    "segment",
    "key_prefix",
    "client_id_base",
    "start_at",
    "threads",
    "source_ips",
];

fn check_params(parts: &[Part]) -> Result<(), Refused> {
    let first = &parts[0];
    let strip = |p: &Part| -> Map<String, Value> {
        let mut m = p.report["params"].as_object().cloned().unwrap_or_default();
        for k in OWN_PARAMS {
            m.remove(k);
        }
        m
    };
    let want = strip(first);
    for p in &parts[1..] {
        let got = strip(p);
        if let Some((k, v)) = want.iter().find(|(k, v)| got.get(*k) != Some(*v)) {
            return Err(Refused(format!(
                "the segments were not one run: segment {}'s params.{k} is {} where segment {}'s is {v}",
                p.index,
                got.get(k).unwrap_or(&Value::Null),
                first.index
            )));
        }
    }
    Ok(())
}

fn check_overlap(parts: &[Part]) -> Result<(), Refused> {
    let latest_start = parts.iter().map(|p| p.from).fold(f64::MIN, f64::max);
    let earliest_end = parts
        .iter()
        .map(|p| p.from + p.elapsed)
        .fold(f64::MAX, f64::min);
    if latest_start >= earliest_end {
        let spans: Vec<String> = parts
            .iter()
            .map(|p| {
                format!(
                    "segment {} from {} for {:.1} s",
                    p.index,
                    wall(p.from),
                    p.elapsed
                )
            })
            .collect();
        return Err(Refused(format!(
            "the segments' measured windows do not overlap, so they were not one run: {} (start them together with --start-at)",
            spans.join("; ")
        )));
    }
    Ok(())
}

fn wall(unix_s: f64) -> String {
    Duration::try_from_secs_f64(unix_s)
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .filter(|_| unix_s <= 253_402_300_799.0)
        .map_or_else(|| format!("{unix_s} s"), rfc3339)
}

/// The merged run's seconds: each part's second `s` lands in the second that began nearest
/// its wall-clock start, counted from the earliest part's start.
fn second_of(p: &Part, t0: f64, s: u64) -> u64 {
    (p.from - t0 + s as f64).round().max(0.0) as u64
}

fn merged_seconds(parts: &[Part], t0: f64) -> BTreeMap<u64, Histogram<u64>> {
    let mut out: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for p in parts {
        for (s, h) in &p.seconds {
            let slot = out
                .entry(second_of(p, t0, *s))
                .or_insert_with(stats::new_histogram);
            // Same bounds on both sides (read_log refused any other), so this cannot fail.
            let _ = slot.add(h);
        }
    }
    out
}

/// Sums the numbers of `field` (an object of numbers) over the parts.
fn sum_object(parts: &[Part], field: &str) -> Value {
    let mut out = Map::new();
    for p in parts {
        if let Some(m) = p.report[field].as_object() {
            for (k, v) in m {
                let n = v.as_u64().unwrap_or(0);
                let e = out.entry(k.clone()).or_insert(json!(0));
                *e = json!(e.as_u64().unwrap_or(0).saturating_add(n));
            }
        }
    }
    Value::Object(out)
}

fn sum_f64(parts: &[Part], path: &[&str]) -> f64 {
    parts
        .iter()
        .map(|p| {
            path.iter()
                .fold(&p.report, |v, k| &v[*k])
                .as_f64()
                .unwrap_or(0.0)
        })
        .sum()
}

/// The merged report: the first segment's, with every figure replaced by the union's.
fn combine(parts: &[Part]) -> Value {
    let t0 = parts.iter().map(|p| p.from).fold(f64::MAX, f64::min);
    let end = parts
        .iter()
        .map(|p| p.from + p.elapsed)
        .fold(f64::MIN, f64::max);
    let elapsed = end - t0;
    let mut total = stats::new_histogram();
    for p in parts {
        for (_, h) in &p.seconds {
            let _ = total.add(h);
        }
    }
    let mut counts = Counts::default();
    for p in parts {
        if let Ok(c) = serde_json::from_value::<Counts>(p.report["counts"].clone()) {
            counts.merge(&c);
        }
    }
    let all = |f: &str| parts.iter().all(|p| p.report[f].as_bool() == Some(true));
    let any = |f: &str| parts.iter().any(|p| p.report[f].as_bool() == Some(true));
    let tagged = |field: &str| -> Vec<Value> {
        parts
            .iter()
            .flat_map(|p| {
                p.report[field]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |v| {
                        json!(format!("segment {}: {}", p.index, v.as_str().unwrap_or("")))
                    })
            })
            .collect()
    };
    let mut invalid = tagged("invalid_reasons");
    let mut notes = tagged("notes");
    notes.push(json!(format!(
        "merged from {} segments; their seconds are aligned by each machine's wall clock, which assumes the clocks agree (NTP, PTP); latency_uncorrected_us, connect_us and server are not merged (each segment's report has its own)",
        parts.len()
    )));
    let mut examples = tagged("error_examples");
    examples.truncate(8);

    let seconds = merged_seconds(parts, t0);
    let mut intervals: BTreeMap<u64, (u64, u64, u64, f64, Option<f64>)> = BTreeMap::new();
    for p in parts {
        for iv in p.report["intervals"].as_array().into_iter().flatten() {
            let s = second_of(p, t0, iv["t_s"].as_u64().unwrap_or(0));
            let e = intervals.entry(s).or_insert((0, 0, 0, 0.0, None));
            e.0 = e.0.saturating_add(iv["ok"].as_u64().unwrap_or(0));
            e.1 = e.1.saturating_add(iv["sent"].as_u64().unwrap_or(0));
            e.2 = e.2.saturating_add(iv["errors"].as_u64().unwrap_or(0));
            e.3 = e.3.max(iv["length_s"].as_f64().unwrap_or(1.0));
            if let Some(t) = iv["target_rps"].as_f64() {
                e.4 = Some(e.4.unwrap_or(0.0) + t);
            }
        }
    }
    let intervals: Vec<Value> = intervals
        .into_iter()
        .map(|(s, (ok, sent, errors, length, target))| {
            let sum = seconds.get(&s).map(Summary::of).unwrap_or_default();
            json!({
                "t_s": s, "length_s": length, "ok": ok, "sent": sent, "target_rps": target,
                "errors": errors, "p50_us": sum.p50, "p99_us": sum.p99, "max_us": sum.max,
            })
        })
        .collect();

    let user = sum_f64(parts, &["client_cpu", "user_s"]);
    let system = sum_f64(parts, &["client_cpu", "system_s"]);
    let mut out = parts[0].report.clone();
    out["params"]["segment"] = Value::Null;
    out["merged"] = json!({
        "segments": parts.len(),
        "reports": parts.iter().map(|p| p.report_path.display().to_string()).collect::<Vec<_>>(),
        "machines": parts.iter().map(|p| p.report["machine"].clone()).collect::<Vec<_>>(),
        "clocks": parts.iter().map(|p| p.report["clock"].clone()).collect::<Vec<_>>(),
    });
    out["clock"]["measured_from"] = json!(wall(t0));
    out["clock"]["measured_from_unix_s"] = json!(t0);
    out["elapsed_s"] = json!(elapsed);
    out["throughput_rps"] = json!(if elapsed > 0.0 {
        counts.ok as f64 / elapsed
    } else {
        0.0
    });
    out["bytes_per_request"] = match counts.bytes_per_request() {
        Some((sent, received)) => json!({ "sent": sent, "received": received }),
        None => Value::Null,
    };
    out["counts"] = serde_json::to_value(counts).unwrap_or_default();
    out["errors"] = sum_object(parts, "errors");
    out["refusals"] = sum_object(parts, "refusals");
    out["counters"] = Value::Null;
    out["error_examples"] = json!(examples);
    out["diagnosis"] = parts
        .iter()
        .map(|p| p.report["diagnosis"].clone())
        .find(|d| !d.is_null())
        .unwrap_or(Value::Null);
    out["latency_us"] = serde_json::to_value(Summary::of(&total)).unwrap_or_default();
    out["latency_uncorrected_us"] = Value::Null;
    out["connect_us"] = Value::Null;
    out["server"] = Value::Null;
    if !out["open_loop"].is_null() {
        let rate = sum_f64(parts, &["open_loop", "rate"]);
        let achieved = sum_f64(parts, &["open_loop", "achieved_rps"]);
        out["open_loop"]["rate"] = json!(rate);
        out["open_loop"]["achieved_rps"] = json!(achieved);
        out["open_loop"]["unsent"] = json!(counts.unsent);
        out["open_loop"]["lag_us"] = Value::Null;
        out["open_loop"]["arrivals"]["measured_gap_us"] = Value::Null;
        out["open_loop"]["arrivals"]["measured_cv"] = Value::Null;
        out["open_loop"]["arrivals"]["gaps"] =
            json!(sum_f64(parts, &["open_loop", "arrivals", "gaps"]) as u64);
        if achieved < crate::report::MIN_RATE_FRACTION * rate {
            invalid.push(json!(format!(
                "the segments together sent {achieved:.0} requests/s of the {rate:.0} asked for"
            )));
        }
        out["open_loop"]["steps"] = merged_steps(parts);
    }
    out["valid"] = json!(all("valid") && invalid.is_empty());
    out["invalid_reasons"] = json!(invalid);
    out["client_cpu"] = json!({
        "user_s": user,
        "system_s": system,
        "us_per_request": if counts.ok > 0 { (user + system) * 1e6 / counts.ok as f64 } else { 0.0 },
    });
    out["intervals"] = json!(intervals);
    out["notes"] = json!(notes);
    out["interrupted"] = json!(any("interrupted"));
    out["ok"] = json!(all("ok"));
    out
}

/// A ramp's or steps' rows, summed over the segments, with each step's latency the union
/// of the segments' step histograms.
fn merged_steps(parts: &[Part]) -> Value {
    let Some(first) = parts[0].report["open_loop"]["steps"].as_array() else {
        return Value::Null;
    };
    let rows: Vec<Value> = (0..first.len())
        .map(|k| {
            let mut row = first[k].clone();
            let mut hist = stats::new_histogram();
            for key in [
                "target_from_rps",
                "target_to_rps",
                "target_rps",
                "achieved_rps",
            ] {
                row[key] = json!(parts
                    .iter()
                    .map(|p| p.report["open_loop"]["steps"][k][key]
                        .as_f64()
                        .unwrap_or(0.0))
                    .sum::<f64>());
            }
            for key in ["sent", "unsent", "ok", "failed", "indeterminate"] {
                row[key] = json!(parts
                    .iter()
                    .map(|p| p.report["open_loop"]["steps"][k][key].as_u64().unwrap_or(0))
                    .fold(0u64, u64::saturating_add));
            }
            for p in parts {
                if let Some(h) = p.steps.get(k) {
                    let _ = hist.add(h);
                }
            }
            let (target, achieved) = (
                row["target_rps"].as_f64().unwrap_or(0.0),
                row["achieved_rps"].as_f64().unwrap_or(0.0),
            );
            let scheduled = row["sent"].as_u64().unwrap_or(0) + row["unsent"].as_u64().unwrap_or(0);
            row["achieved"] =
                json!(scheduled == 0 || achieved >= crate::report::MIN_RATE_FRACTION * target);
            row["latency_us"] = serde_json::to_value(Summary::of(&hist)).unwrap_or_default();
            row
        })
        .collect();
    json!(rows)
}

/// The merged per-second histograms as an interval log, untagged: a single run's log again.
fn write_log(path: &Path, parts: &[Part]) -> std::io::Result<()> {
    let t0 = parts.iter().map(|p| p.from).fold(f64::MAX, f64::min);
    // pair() held every start to years 1970..9999.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t0.max(0.0));
    let mut file = BufWriter::new(File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "echolab loadgen merge: {} segments, one histogram per second (the union of the segments' seconds that began nearest it on the wall clock); values in microseconds",
            parts.len()
        ))
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut serializer)?;
    for (s, h) in merged_seconds(parts, t0) {
        log.write_histogram(&h, Duration::from_secs(s), Duration::from_secs(1), None)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    use std::io::Write;
    file.flush()
}

/// The merged report's summary, for the terminal.
pub fn summary(merged: &Value) -> String {
    let l = &merged["latency_us"];
    let c = &merged["counts"];
    let us = |v: &Value| stats::fmt_us(v.as_u64().unwrap_or(0));
    let errors: u64 = merged["errors"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let mut s = format!(
        "loadgen merge: {} segments of one run, from {} for {:.2} s\n",
        merged["merged"]["segments"],
        merged["clock"]["measured_from"].as_str().unwrap_or("?"),
        merged["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    s += &format!(
        "  throughput  {:.0} req/s ({} verified of {} sent)\n",
        merged["throughput_rps"].as_f64().unwrap_or(0.0),
        c["ok"],
        c["sent"]
    );
    s += &format!(
        "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (exact: the union of the segments' histograms)\n",
        us(&l["p50"]),
        us(&l["p90"]),
        us(&l["p99"]),
        us(&l["p999"]),
        us(&l["max"])
    );
    if let Some(ol) = merged["open_loop"].as_object() {
        s += &format!(
            "  open loop   {:.0} req/s asked, {:.0} sent\n",
            ol["rate"].as_f64().unwrap_or(0.0),
            ol["achieved_rps"].as_f64().unwrap_or(0.0)
        );
    }
    s += &format!("  errors      {errors}\n");
    for r in merged["invalid_reasons"].as_array().into_iter().flatten() {
        s += &format!("  INVALID     {}\n", r.as_str().unwrap_or(""));
    }
    s += "  clocks      seconds aligned by each machine's wall clock: assumes they agree (NTP, PTP)\n";
    s
}

/// The exit code for a merged report, as `loadgen run`'s: 0 clean, 1 a segment had errors,
/// 3 invalid, 130 a segment was interrupted.
pub fn exit_code(merged: &Value) -> u8 {
    if merged["interrupted"].as_bool() == Some(true) {
        130
    } else if merged["ok"].as_bool() != Some(true) {
        1
    } else if merged["valid"].as_bool() != Some(true) {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_number_is_a_time_or_says_it_is_not() {
        assert_eq!(wall(0.0), "1970-01-01T00:00:00.000000000Z");
        for x in [3e11, 1e30, f64::NAN, f64::INFINITY, -1.0] {
            assert!(wall(x).ends_with(" s"), "{x}: {}", wall(x));
        }
    }

    #[test]
    fn tags_name_a_segment() {
        assert_eq!(parse_tag("segment-2-of-4"), Some((2, 4)));
        assert_eq!(parse_tag("step"), None);
        assert_eq!(parse_tag("segment-x-of-4"), None);
    }
}
