//! The lab: experiment drivers built on the measurement core.
//!
//! Everything here starts and stops servers, runs the core's [`crate::run::run`] against
//! them through its typed [`crate::config::RunConfig`], and turns many runs into tables,
//! plots and verdicts. The dependency points one way only: the lab imports the core, the core
//! never imports the lab (docs/ARCHITECTURE.md, checked by `loadgen/tests/layering.rs`), so
//! the core stays a library another driver (a rate sweep, a many-machine run) can call.
//!
//! - [`launch`]: start a server under test in its own process group, wait for its
//!   `listening on` line, and stop the whole group (also the tests' harness);
//! - [`suite`]: every model through the lab's workloads, side by side, with its report;
//! - [`compare`]: the regression gate (paired trials, bootstrap verdict) and its history;
//! - [`sweep`]: latency against offered load, rate by rate up to past the capacity, and the
//!   knee where p99 leaves an objective;
//! - [`merge`]: the segments of one run made on several machines (`--segment`), as one
//!   report: the union of their histograms, exact;
//! - [`plot`]: SVG chart primitives the suite's and the gate's figures are drawn with.
//!
//! Inside the lab, imports point one way too. [`plot`] knows neither the suite nor the gate:
//! each draws its own figures (`suite/figures.rs`, `compare/trend.rs`) beside its data. And
//! each of [`suite`] and [`compare`] keeps the types its files share in a `report.rs` below
//! the files that use them (its `mod.rs` calls them, never the other way), so no file imports
//! one that imports it back.

pub mod compare;
pub mod launch;
pub mod merge;
pub mod plot;
pub mod proxy;
pub mod suite;
pub mod sweep;
