//! Figures a test measures on its way to an assertion (how long the slowloris clients took to
//! be closed, how much memory a flood cost), kept in a file when `ECHOLAB_FIGURES` names one.
//!
//! Why: docs/robustness.md quotes such figures, and a figure the docs state must come from a
//! committed run that says how it was made. `--nocapture` output is read once and lost;
//! `scripts/robustness-tests.py` sets `ECHOLAB_FIGURES`, runs the tests a few times and keeps
//! every figure, with the machine and commit, in `results/DATE-robustness-tests/`.
//!
//! Without the variable [`record`] does nothing at all: a test asserts exactly what it
//! asserts anyway, and recording is never a reason for one to pass or fail.
//!
//! The file gets one line per figure, appended:
//!
//! ```text
//! test<TAB>model<TAB>figure<TAB>value<TAB>unit
//! ```
//!
//! `test` is the test's own name, the one `cargo test NAME` reruns; `model` says which server
//! variant it measured, because one test may run several (`never_reads_every_model`).

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable that names the file figures are appended to.
pub const FIGURES_VAR: &str = "ECHOLAB_FIGURES";

/// Serialises writers within this test process (tests run on several threads). Across
/// processes each line is one `write(2)` on an `O_APPEND` file, which the kernel does not
/// interleave with another process's.
static FILE: Mutex<()> = Mutex::new(());

/// Appends `value` (in `unit`) as `figure` of `model` to the `ECHOLAB_FIGURES` file, if the
/// variable is set; does nothing otherwise.
///
/// The test is named after the calling thread, which libtest names after the test it runs:
/// call this from the test's own thread, not from a thread the test spawned.
pub fn record(model: &str, figure: &str, value: impl Display, unit: &str) {
    let Some(path) = std::env::var_os(FIGURES_VAR) else {
        return;
    };
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name,
        // A figure that cannot say which test measured it cannot be traced: fail loudly, but
        // only when figures were asked for.
        _ => panic!("{FIGURES_VAR}: record({figure:?}) called outside a test's own thread"),
    };
    for field in [test, model, figure, unit] {
        assert!(
            !field.contains(['\t', '\n']),
            "{FIGURES_VAR}: {field:?} would break the TSV line"
        );
    }
    let line = format!("{test}\t{model}\t{figure}\t{value}\t{unit}\n");
    let _serial = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{FIGURES_VAR}={}: {e}", path.to_string_lossy()));
    file.write_all(line.as_bytes())
        .unwrap_or_else(|e| panic!("{FIGURES_VAR}={}: {e}", path.to_string_lossy()));
}

/// [`record`] for a duration, in seconds to the tenth of a millisecond (the figures it is
/// used for run from a few milliseconds to seconds).
pub fn record_secs(model: &str, figure: &str, d: Duration) {
    record(model, figure, format_args!("{:.4}", d.as_secs_f64()), "s");
}

/// [`record`] for a duration that may be a few microseconds (a kill seen as EOF), in µs.
pub fn record_micros(model: &str, figure: &str, d: Duration) {
    record(
        model,
        figure,
        format_args!("{:.1}", d.as_secs_f64() * 1e6),
        "µs",
    );
}
