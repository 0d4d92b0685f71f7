//! echolab's load generator (not written yet).
//!
//! It will drive any echolab server (or Redis) over the client half of `echolab-protocol`'s
//! codec and record latency in HdrHistograms. Until it exists, `scripts/` measures the servers
//! with redis-benchmark and small Python clients; see docs/ARCHITECTURE.md.
