//! What a comparison produced, as data: the JSON report, the history line, and what the
//! table is drawn from.
//!
//! A leaf of the gate: the trials fill these types, the output and the history read them, and
//! none of that reaches back here, so every part of the gate can share them without a cycle.

use serde::{Deserialize, Serialize};

use super::flags::Mode;
use super::stats::{Estimate, Verdict};

/// One trial: one fresh server, one loadgen run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trial {
    /// Verified replies per second.
    pub throughput_rps: f64,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// The server's CPU per verified request, µs, when /proc could be read.
    pub server_cpu_us_per_req: Option<f64>,
}

/// Both sides of one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    /// Whether the baseline ran first.
    pub baseline_first: bool,
    /// The baseline's trial.
    pub baseline: Trial,
    /// The candidate's trial.
    pub candidate: Trial,
    /// Wall-clock seconds the pair took, servers started and stopped included (what an
    /// early stop saves is counted in these).
    #[serde(default)]
    pub seconds: f64,
}

/// A point in a model's pairs at which more pairs could no longer change its verdicts
/// ([`super::stats::settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// How many pairs the model had.
    pub pairs: u32,
    /// The throughput verdict it had settled on.
    pub throughput: Verdict,
    /// The p99 verdict, when p99 is gated.
    pub p99: Option<Verdict>,
}

/// The comparison of one server (model).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelComparison {
    /// The model's name.
    pub name: String,
    /// The command lines (servers are started afresh per trial).
    pub baseline_command: String,
    /// The candidate's.
    pub candidate_command: String,
    /// Median baseline throughput over its trials, req/s.
    pub baseline_rps: f64,
    /// Median candidate throughput, req/s.
    pub candidate_rps: f64,
    /// Throughput, candidate / baseline.
    pub throughput: Option<Estimate>,
    /// The throughput verdict.
    pub throughput_verdict: Option<Verdict>,
    /// Median baseline p99, µs.
    pub baseline_p99_us: f64,
    /// Median candidate p99, µs.
    pub candidate_p99_us: f64,
    /// p99, candidate / baseline.
    pub p99: Option<Estimate>,
    /// The p99 verdict (none when --p99-threshold off).
    pub p99_verdict: Option<Verdict>,
    /// Why the comparison could not be made, if it could not.
    pub failure: Option<String>,
    /// Why this model was left out, if it was.
    #[serde(default)]
    pub skipped: Option<String>,
    /// Pairs run again because a trial measured nothing (no reply, no error).
    #[serde(default)]
    pub retried_pairs: u32,
    /// It stopped getting pairs because its interval was within ±precision.
    #[serde(default)]
    pub precise: bool,
    /// It stopped getting pairs because its verdicts were settled (`--early-stop`).
    #[serde(default)]
    pub stopped_settled: bool,
    /// Every pair count, from 8 on, at which the verdicts were settled. With `--early-stop
    /// off` this traces the whole comparison, so a proof can replay where any floor would
    /// have stopped and whether the verdict would have been the same; with it on, the last
    /// entry is where the model stopped.
    #[serde(default)]
    pub settled: Vec<Settled>,
    /// Every pair, in run order.
    pub pairs: Vec<Pair>,
}

impl ModelComparison {
    /// Whether either gated figure regressed.
    pub fn regressed(&self) -> bool {
        self.throughput_verdict == Some(Verdict::Regression)
            || self.p99_verdict == Some(Verdict::Regression)
    }
}

/// What was compared and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareParams {
    /// The baseline's label.
    pub baseline_label: String,
    /// The candidate's label.
    pub candidate_label: String,
    /// The workload, in words.
    pub workload: String,
    /// Pairs per model, at least.
    pub pairs: u32,
    /// Pairs per model, at most.
    #[serde(default)]
    pub max_pairs: u32,
    /// The interval half-width at which a model stops getting pairs.
    #[serde(default)]
    pub precision: f64,
    /// From how many pairs on a model whose verdicts are settled stops (none: never).
    #[serde(default)]
    pub early_stop: Option<u32>,
    /// No pair starts past this many seconds (beyond the minimum).
    #[serde(default)]
    pub time_limit_s: f64,
    /// How the trials of a pair share the machine.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Measured seconds per trial.
    pub duration_s: f64,
    /// Warmup seconds per trial.
    pub warmup_s: f64,
    /// Throughput threshold (fraction).
    pub threshold: f64,
    /// p99 threshold (fraction), if gated.
    pub p99_threshold: Option<f64>,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// Bootstrap resamples.
    pub resamples: u32,
    /// Bootstrap seed.
    pub seed: u64,
    /// Where servers and loadgen ran.
    pub placement: String,
}

fn default_mode() -> Mode {
    Mode::Alternate
}

/// A whole `loadgen compare`: what the JSON and the history hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// When it finished (UTC).
    pub time: String,
    /// `loadgen <version>`.
    pub tool: String,
    /// The parameters.
    pub params: CompareParams,
    /// The machine.
    pub machine: serde_json::Value,
    /// One entry per model.
    pub models: Vec<ModelComparison>,
    /// Wall time of the whole comparison, seconds.
    pub elapsed_s: f64,
    /// Cut short by Ctrl-C.
    pub interrupted: bool,
    /// A file (`--json`, `--markdown`, `--history`) that could not be written.
    #[serde(skip)]
    pub write_error: Option<String>,
}

impl CompareReport {
    /// 0 no regression; 1 a regression; 3 a comparison that could not be made (and no
    /// regression elsewhere); 4 inconclusive (too noisy to decide, and nothing else wrong);
    /// 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.models.iter().any(ModelComparison::regressed) {
            1
        } else if self.models.iter().any(|m| m.failure.is_some()) {
            3
        } else if self
            .models
            .iter()
            .any(|m| m.throughput_verdict == Some(Verdict::Inconclusive))
        {
            4
        } else {
            0
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A model's comparison with nothing in it but a verdict and a failure: what the exit code
    /// and the headline are decided on.
    pub(in crate::lab::compare) fn model(
        verdict: Option<Verdict>,
        failure: Option<&str>,
    ) -> ModelComparison {
        ModelComparison {
            name: "m".into(),
            baseline_command: String::new(),
            candidate_command: String::new(),
            baseline_rps: 0.0,
            candidate_rps: 0.0,
            throughput: None,
            throughput_verdict: verdict,
            baseline_p99_us: 0.0,
            candidate_p99_us: 0.0,
            p99: None,
            p99_verdict: None,
            failure: failure.map(String::from),
            skipped: None,
            retried_pairs: 0,
            precise: false,
            stopped_settled: false,
            settled: Vec::new(),
            pairs: Vec::new(),
        }
    }

    /// A report of `models` with the default thresholds.
    pub(in crate::lab::compare) fn report(models: Vec<ModelComparison>) -> CompareReport {
        CompareReport {
            time: String::new(),
            tool: String::new(),
            params: CompareParams {
                baseline_label: "a".into(),
                candidate_label: "b".into(),
                workload: String::new(),
                pairs: 3,
                max_pairs: 3,
                precision: 0.025,
                early_stop: None,
                time_limit_s: 60.0,
                mode: Mode::Alternate,
                duration_s: 0.0,
                warmup_s: 0.0,
                threshold: 0.05,
                p99_threshold: None,
                confidence: 0.95,
                resamples: 100,
                seed: 0,
                placement: String::new(),
            },
            machine: serde_json::Value::Null,
            models,
            elapsed_s: 0.0,
            interrupted: false,
            write_error: None,
        }
    }

    #[test]
    fn exit_codes() {
        let ok = model(Some(Verdict::NoSignificantChange), None);
        let slow = model(Some(Verdict::Regression), None);
        let broken = model(None, Some("did not start"));
        let unsure = model(Some(Verdict::Inconclusive), None);
        assert_eq!(report(vec![ok.clone(), unsure.clone()]).exit_code(), 4);
        assert_eq!(report(vec![unsure.clone(), broken.clone()]).exit_code(), 3);
        assert_eq!(report(vec![unsure, slow.clone()]).exit_code(), 1);
        assert_eq!(report(vec![ok.clone()]).exit_code(), 0);
        assert_eq!(report(vec![ok.clone(), slow.clone()]).exit_code(), 1);
        assert_eq!(report(vec![ok.clone(), broken.clone()]).exit_code(), 3);
        assert_eq!(report(vec![broken, slow]).exit_code(), 1);
    }
}
