//! What a broken connection leaves behind, what `--retry` resends, and `--op incr`'s
//! exactly-once check, against scripted fake servers.
//!
//! The book's question is what a client may conclude about a request whose connection broke:
//! one never completely written certainly did not run (failed), one written and unanswered
//! may have (indeterminate). These tests break connections at chosen points and check the
//! classification, that each retry policy resends exactly what it promises (the same ids, in
//! order, first on the next connection), and, with sessions, that a resend carries the same
//! (client, seq) after a HELLO that says how many seqs were used. The session fake below
//! keeps a server's records in a few lines, with deduplication on or off, so the counter
//! check's verdicts (exactly once; duplicated; indeterminate) are checked end to end before
//! the real servers learn sessions. Every run is bounded by `-n` and a short `--timeout`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{loadgen, FakeServer, Run, SLACK};
use echolab_protocol::session::{self, Refusal};
use echolab_protocol::{Command, Reply};

/// Every request ends as exactly one outcome.
fn assert_outcomes_add_up(run: &Run) {
    assert_eq!(
        run.u("counts.sent"),
        run.u("counts.ok") + run.u("counts.failed") + run.u("counts.indeterminate"),
        "sent = ok + failed + indeterminate\n{}",
        run.output()
    );
}

/// A fake that, on its first connection, reads `k` requests and closes without answering
/// (so they were written, and may have run); every later connection echoes. Returns the
/// server and the ids each connection received, by connection.
fn break_once_after(k: usize) -> (FakeServer, Arc<Mutex<Vec<Vec<u64>>>>) {
    let seen: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let conns = Arc::new(AtomicUsize::new(0));
    let log = Arc::clone(&seen);
    let fake = FakeServer::start(move |mut c| {
        let n = conns.fetch_add(1, Ordering::SeqCst);
        let slot = {
            let mut s = log.lock().expect("lock");
            s.push(Vec::new());
            s.len() - 1
        };
        while let Some(req) = c.request() {
            log.lock().expect("lock")[slot].push(req.id.unwrap_or(0));
            if n == 0 {
                if log.lock().expect("lock")[slot].len() == k {
                    return; // drop: close with all k unanswered
                }
                continue;
            }
            let reply = c.echo_bytes(&req);
            if !c.send(&reply) {
                return;
            }
        }
    });
    (fake, seen)
}

fn ids(seen: &Arc<Mutex<Vec<Vec<u64>>>>) -> Vec<Vec<u64>> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|c| !c.is_empty())
        .cloned()
        .collect()
}

/// A server that stops reading: the requests that fit in the socket buffers left
/// completely (indeterminate), the rest never did (failed, unwritten).
#[test]
fn a_break_tells_written_from_unwritten() {
    let fake = FakeServer::start(|c| c.hold());
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 64 -p 64 --payload 512K --warmup 0 --timeout 500ms",
        fake.addr()
    ));
    run.assert_within(Duration::from_millis(500) * 2 + SLACK);
    run.assert_error("write_timeout");
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.ok"), 0, "{}", run.output());
    assert!(run.u("counts.unwritten") > 0, "{}", run.output());
    assert!(run.u("counts.indeterminate") > 0, "{}", run.output());
    assert_eq!(
        run.u("counts.failed"),
        run.u("counts.unwritten"),
        "no ERROR reply: every failure is an unwritten request\n{}",
        run.output()
    );
    assert!(run.stdout.contains("indeterminate"), "{}", run.output());
}

/// --retry never (the default): the written requests end indeterminate, none is resent.
#[test]
fn retry_never_resends_nothing() {
    let (fake, seen) = break_once_after(4);
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 4 -p 4 --warmup 0 --timeout 2s",
        fake.addr()
    ));
    run.assert_within(Duration::from_secs(2) + SLACK);
    run.assert_code(1);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.indeterminate"), 4, "{}", run.output());
    assert_eq!(run.u("counts.retries"), 0, "{}", run.output());
    assert_eq!(ids(&seen).len(), 1, "one connection carried requests");
}

/// --retry safe: a written request may have run, so it is not resent.
#[test]
fn retry_safe_does_not_resend_what_was_written() {
    let (fake, seen) = break_once_after(4);
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 4 -p 4 --warmup 0 --timeout 2s --retry safe",
        fake.addr()
    ));
    run.assert_code(1);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.indeterminate"), 4, "{}", run.output());
    assert_eq!(run.u("counts.retries"), 0, "{}", run.output());
    assert_eq!(ids(&seen).len(), 1, "{:?}", ids(&seen));
}

/// --retry safe resends what never left: the first connection stops reading, its unwritten
/// requests go out on the second (which answers), the written ones stay indeterminate.
#[test]
fn retry_safe_resends_only_the_unwritten() {
    let conns = Arc::new(AtomicUsize::new(0));
    let second: Arc<Mutex<Vec<u64>>> = Arc::default();
    let log = Arc::clone(&second);
    let fake = FakeServer::start(move |mut c| {
        if conns.fetch_add(1, Ordering::SeqCst) == 0 {
            c.hold();
            return;
        }
        while let Some(req) = c.request() {
            log.lock().expect("lock").push(req.id.unwrap_or(0));
            let reply = c.echo_bytes(&req);
            if !c.send(&reply) {
                return;
            }
        }
    });
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 32 -p 32 --payload 512K --warmup 0 --timeout 500ms --retry safe",
        fake.addr()
    ));
    run.assert_within(Duration::from_secs(3) + SLACK);
    assert_outcomes_add_up(&run);
    let (ok, indeterminate, retries) = (
        run.u("counts.ok"),
        run.u("counts.indeterminate"),
        run.u("counts.retries"),
    );
    assert!(ok > 0 && indeterminate > 0, "{}", run.output());
    assert_eq!(run.u("counts.failed"), 0, "{}", run.output());
    assert_eq!(retries, ok, "each resend verified\n{}", run.output());
    let resent = second.lock().expect("lock").clone();
    assert_eq!(resent.len() as u64, retries, "{resent:?}");
    assert!(
        resent.windows(2).all(|w| w[0] < w[1]),
        "resent in order: {resent:?}"
    );
}

/// --retry always: the written, unanswered requests go again first thing on the next
/// connection, with the same ids in the same order, and are answered there.
#[test]
fn retry_always_resends_the_written_with_the_same_ids() {
    let (fake, seen) = break_once_after(4);
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 4 -p 4 --warmup 0 --timeout 2s --retry always",
        fake.addr()
    ));
    run.assert_within(Duration::from_secs(2) + SLACK);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.ok"), 4, "{}", run.output());
    assert_eq!(run.u("counts.indeterminate"), 0, "{}", run.output());
    assert_eq!(run.u("counts.retries"), 4, "{}", run.output());
    let conns = ids(&seen);
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[0], conns[1], "the same ids, in order");
    // The break itself is still an error: exit 1, with the figures.
    run.assert_code(1);
    assert!(run.u("errors.eof") >= 1, "{}", run.output());
}

/// --max-attempts bounds the writes of one request: a server that always breaks gets each
/// request three times, then it stays indeterminate.
#[test]
fn max_attempts_bounds_the_resends() {
    let fake = FakeServer::start(|mut c| {
        let mut n = 0;
        while c.request().is_some() {
            n += 1;
            if n == 2 {
                return;
            }
        }
    });
    let run = loadgen(&format!(
        "--addr {} -c 1 -n 2 -p 2 --warmup 0 --timeout 2s --retry always --max-attempts 3",
        fake.addr()
    ));
    run.assert_within(Duration::from_secs(2) + SLACK);
    run.assert_code(1);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.indeterminate"), 2, "{}", run.output());
    assert_eq!(run.u("counts.retries"), 4, "{}", run.output());
    assert_eq!(run.u("params.max_attempts"), 3, "{}", run.output());
    assert_eq!(run.get("params.retry"), "always", "{}", run.output());
}

// ----- sessions ----------------------------------------------------------------------------

/// What the session fake saw, for the assertions.
#[derive(Debug, Default)]
struct Seen {
    /// (client, sent) of each HELLO, in order.
    hellos: Vec<(u64, u64)>,
    /// (client, seq, key, low) of each INCR, in order.
    incrs: Vec<(u64, u64, Vec<u8>, u64)>,
}

/// A session server in a few lines: counters, and with `dedup` a record of each executed
/// (client, seq) answered on a repeat. Its first connection answers one INCR (so the run has
/// verified a reply and does not give up on the server), then executes `k` more and closes
/// without answering them (the replies are lost, the increments happened). With `forget`, it forgets every session then, as an eviction would, so the
/// client's next HELLO gets EXPIRED.
fn session_fake(k: usize, dedup: bool, forget: bool) -> (FakeServer, Arc<Mutex<Seen>>) {
    #[derive(Default)]
    struct State {
        counters: HashMap<Vec<u8>, u64>,
        records: HashMap<(u64, u64), u64>,
        clients: HashSet<u64>,
    }
    let state: Arc<Mutex<State>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let broke = Arc::new(AtomicBool::new(false));
    let log = Arc::clone(&seen);
    let fake = FakeServer::start(move |mut c| {
        let mut client = None;
        let mut executed_here = 0;
        let breaks = !broke.load(Ordering::SeqCst);
        while let Some(req) = c.request() {
            let reply = match req.command {
                Command::Hello {
                    client: id, sent, ..
                } => {
                    log.lock().expect("lock").hellos.push((id, sent));
                    let mut st = state.lock().expect("lock");
                    let known = st.clients.contains(&id);
                    if dedup && !known && sent > 0 {
                        c.error_bytes(&req, &Refusal::Expired.message("unknown client"))
                    } else {
                        st.clients.insert(id);
                        client = Some(id);
                        let word = match (dedup, known) {
                            (false, _) => session::hello::UNRECORDED,
                            (true, true) => session::hello::RESUMED,
                            (true, false) => session::hello::NEW,
                        };
                        c.reply_with(&req, Reply::Word(word))
                    }
                }
                Command::Incr { by, low } => {
                    let seq = req.id.unwrap_or(0);
                    let id = client.unwrap_or(0);
                    log.lock()
                        .expect("lock")
                        .incrs
                        .push((id, seq, req.payload.clone(), low));
                    let mut st = state.lock().expect("lock");
                    let value = match st.records.get(&(id, seq)).copied() {
                        Some(v) if dedup => v,
                        _ => {
                            let v = st.counters.entry(req.payload.clone()).or_insert(0);
                            *v += by;
                            let v = *v;
                            st.records.insert((id, seq), v);
                            v
                        }
                    };
                    executed_here += 1;
                    if breaks && executed_here == 1 + k {
                        broke.store(true, Ordering::SeqCst);
                        if forget {
                            st.clients.clear();
                            st.records.clear();
                        }
                        return; // close: k increments ran, no reply left
                    }
                    if breaks && executed_here > 1 {
                        continue; // hold the replies back until the break
                    }
                    c.reply_with(&req, Reply::Value(value))
                }
                Command::Get => {
                    let st = state.lock().expect("lock");
                    let v = st.counters.get(&req.payload).copied().unwrap_or(0);
                    c.reply_with(&req, Reply::Value(v))
                }
                _ => c.error_bytes(&req, "unexpected op"),
            };
            if !c.send(&reply) {
                return;
            }
        }
    });
    (fake, seen)
}

const INCR: &str = "--op incr -c 1 -n 6 -p 3 --keys 2 --warmup 0 --timeout 2s --client-id-base 1000 --key-prefix t-";

/// --retry always against a server that deduplicates: the three increments whose replies
/// were lost (seqs 2, 3, 4) are resent with the same (client, seq) and key after a HELLO
/// that says four seqs were used, answered from the record, and every counter ends exactly
/// once.
#[test]
fn incr_retry_always_with_dedup_is_exactly_once() {
    let (fake, seen) = session_fake(3, true, false);
    let run = loadgen(&format!("--addr {} {INCR} --retry always", fake.addr()));
    run.assert_within(Duration::from_secs(2) + SLACK);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.ok"), 6, "{}", run.output());
    assert_eq!(run.u("counts.retries"), 3, "{}", run.output());
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.hellos, vec![(1000, 0), (1000, 4)], "{seen:?}");
    let first: Vec<_> = seen.incrs[1..4]
        .iter()
        .map(|(c, s, k, _)| (*c, *s, k.clone()))
        .collect();
    let again: Vec<_> = seen.incrs[4..7]
        .iter()
        .map(|(c, s, k, _)| (*c, *s, k.clone()))
        .collect();
    assert_eq!(first, again, "the same (client, seq, key), in order");
    assert_eq!(
        seen.incrs.iter().map(|i| i.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 2, 3, 4, 5, 6],
        "seqs"
    );
    // `low`: seq 1 was answered, seq 2 is not until its resend's reply.
    assert!(seen.incrs[4..7].iter().all(|i| i.3 == 2), "{seen:?}");
    assert_eq!(run.get("counters.exactly_once"), true, "{}", run.output());
    assert_eq!(run.u("counters.value_sum"), 6, "{}", run.output());
    assert_eq!(run.u("counters.acknowledged"), 6, "{}", run.output());
    assert_eq!(run.u("counters.written_twice"), 3, "{}", run.output());
    assert_eq!(run.u("counters.duplicated.max"), 0, "{}", run.output());
    assert!(
        run.stdout
            .contains("exactly once: every counter equals its 6 acknowledged increments"),
        "{}",
        run.output()
    );
    // The broken connection is an error all the same.
    run.assert_code(1);
}

/// The same retries against a server that records nothing: each lost reply's increment runs
/// twice, and the check says exactly how many.
#[test]
fn incr_retry_always_without_dedup_duplicates() {
    let (fake, _) = session_fake(3, false, false);
    let run = loadgen(&format!("--addr {} {INCR} --retry always", fake.addr()));
    run.assert_code(1);
    assert_eq!(run.u("counts.ok"), 6, "{}", run.output());
    assert_eq!(run.get("counters.exactly_once"), false, "{}", run.output());
    assert_eq!(run.u("counters.value_sum"), 9, "{}", run.output());
    assert_eq!(run.u("counters.duplicated.min"), 3, "{}", run.output());
    assert_eq!(run.u("counters.duplicated.max"), 3, "{}", run.output());
    assert_eq!(run.u("counters.lost.max"), 0, "{}", run.output());
    assert!(
        run.stdout
            .contains("NOT exactly once: 3 duplicated, 0 lost"),
        "{}",
        run.output()
    );
}

/// --retry never: the three unanswered increments are indeterminate (they did run, but the
/// client cannot know), so the run is not exactly once even though nothing ran twice.
#[test]
fn incr_retry_never_leaves_indeterminate_increments() {
    let (fake, seen) = session_fake(3, true, false);
    let run = loadgen(&format!("--addr {} {INCR}", fake.addr()));
    run.assert_code(1);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("counts.indeterminate"), 3, "{}", run.output());
    assert_eq!(run.u("counters.indeterminate"), 3, "{}", run.output());
    assert_eq!(run.u("counters.value_sum"), 6, "{}", run.output());
    assert_eq!(run.u("counters.duplicated.max"), 0, "{}", run.output());
    assert_eq!(run.get("counters.exactly_once"), false, "{}", run.output());
    // The next connection resumes the session: four seqs used, the next is 5.
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.hellos, vec![(1000, 0), (1000, 4)], "{seen:?}");
    assert_eq!(run.u("counters.acknowledged"), 3, "{}", run.output());
    assert!(run.stdout.contains("NOT exactly once"), "{}", run.output());
}

/// EXPIRED: the server forgot the session, so the resends' fate is unknown: they end
/// indeterminate, and the slot starts a new session with a fresh client id and seq 1.
#[test]
fn incr_expired_starts_a_new_session() {
    let (fake, seen) = session_fake(3, true, true);
    let run = loadgen(&format!("--addr {} {INCR} --retry always", fake.addr()));
    run.assert_within(Duration::from_secs(2) + SLACK);
    run.assert_code(1);
    assert_outcomes_add_up(&run);
    assert_eq!(run.u("refusals.EXPIRED"), 1, "{}", run.output());
    assert_eq!(run.u("counts.indeterminate"), 3, "{}", run.output());
    assert_eq!(run.u("counts.ok"), 3, "{}", run.output());
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.hellos.len(), 3, "{seen:?}");
    assert_eq!(seen.hellos[1], (1000, 4), "{seen:?}");
    let (fresh, sent) = seen.hellos[2];
    assert!(fresh != 1000 && sent == 0, "{seen:?}");
    assert!(
        seen.incrs[4..].iter().map(|i| i.1).eq(1..=2),
        "the new session numbers from 1: {seen:?}"
    );
    assert!(
        run.stdout.contains("refusals    EXPIRED 1"),
        "{}",
        run.output()
    );
}
