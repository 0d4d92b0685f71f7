//! echolab's load generator.
//!
//! `loadgen run` drives one server over many nonblocking connections (a few threads, each a
//! mio event loop), verifies every reply byte for byte, and records latency in HdrHistograms:
//! closed loop by default, open loop with `--rate` (latency from the scheduled send time, so
//! a stalled server shows in the tail). With `--server-pid` it also reports what the server
//! spent per request: CPU time, context switches, memory.
//!
//! Two layers. The **core** measures one run: [`config::RunConfig`] says what to do,
//! [`run::run`] does it and returns a [`report::Report`]. Its modules, in the order a run uses
//! them:
//! - [`config`]: the typed, checked run configuration (the parameters, described once);
//! - [`cli`]: `loadgen run`'s flags, one adapter that builds a `RunConfig`;
//! - [`workload`]: request encoding (ids stamped into payloads) and reply verification;
//! - [`records`]: `--op record`'s structured records, in a format, maybe compressed;
//! - [`engine`]: the per-thread event loop, connections, pacing, timeouts;
//! - [`ring`]: `--engine uring`'s io_uring, and the buffers the kernel holds;
//! - [`arrivals`]: the open loop's arrival process (fixed or Poisson, seeded);
//! - [`schedule`]: the open loop's target rate over time (constant, a ramp, steps);
//! - [`collector`]: per-second intervals, the live line, the interval log, server sampling;
//! - [`proc`]: /proc sampling of the server's process tree, machine description, own CPU;
//! - [`syscalls`]: `--count-syscalls`, the kernel's count of system calls on both sides;
//! - [`stats`]: error kinds, counts, histograms; [`report`]: summary, JSON, `.hgrm`;
//! - [`counters`]: `--op incr`'s exactly-once check, reading the counters back after a run;
//! - [`run`]: the whole of one run; [`clock`]: the run's clock, and dates for results.
//!
//! The **[`lab`]** drives the core: it starts servers ([`lab::launch`]), runs every model side
//! by side ([`lab::suite`]) and gates regressions ([`lab::compare`]). The lab imports the core
//! and never the other way round (docs/ARCHITECTURE.md; `tests/layering.rs` fails otherwise).

pub mod arrivals;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod config;
pub mod counters;
pub mod engine;
pub mod lab;
pub mod proc;
pub mod records;
pub mod report;
pub mod ring;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod syscalls;
pub mod workload;
