//! echolab's load generator.
//!
//! `loadgen run` drives one server over many nonblocking connections (a few threads, each a
//! mio event loop), verifies every reply byte for byte, and records latency in HdrHistograms:
//! closed loop by default, open loop with `--rate` (latency from the scheduled send time, so
//! a stalled server shows in the tail). With `--server-pid` it also reports what the server
//! spent per request: CPU time, context switches, memory.
//!
//! Module map, in the order a run uses them:
//! - [`cli`]: flags, checked into a [`cli::RunConfig`];
//! - [`workload`]: request encoding (ids stamped into payloads) and reply verification;
//! - [`engine`]: the per-thread event loop, connections, pacing, timeouts;
//! - [`collector`]: per-second intervals, the live line, the interval log, server sampling;
//! - [`proc`]: /proc sampling of the server's process tree, machine description, own CPU;
//! - [`stats`]: error kinds, counts, histograms; [`report`]: summary, JSON, `.hgrm`;
//! - [`run`]: the whole of `loadgen run`.
//!
//! Around it: [`launch`] starts and stops servers under test for [`suite`] (every model side
//! by side, with [`suite_report`] and [`plot`]) and [`compare`] (the regression gate and its
//! history); [`clock`] also dates results.

pub mod cli;
pub mod clock;
pub mod collector;
pub mod compare;
pub mod engine;
pub mod launch;
pub mod plot;
pub mod proc;
pub mod report;
pub mod run;
pub mod stats;
pub mod suite;
pub mod suite_report;
pub mod workload;
