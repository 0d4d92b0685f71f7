//! Exactly-once INCR (issue 13), against the real binaries: what a client that retries after
//! a broken connection gets from each model, and what the session table costs and survives.
//!
//! **Each model.** HELLO, two INCRs, the connection dropped, and the second INCR sent again
//! on a new connection after `HELLO client sent=2`: with `--dedup on` it is answered with the
//! value recorded the first time and the counter does not move; with `--dedup off` it runs
//! again, which is the lesson (the counters are shared either way: they are the data).
//!
//! **Another process answers.** With fork and prefork, the retry lands on another process
//! (connection A is kept open, so the process serving it is busy) and is still answered from
//! the table: it lives in memory mapped shared before the first fork.
//!
//! **A kill inside the critical section.** `--debug-lock-hold-ns` holds the table's lock
//! between writing the counter and writing the INCR's record; the test SIGKILLs the fork
//! child or prefork worker there. The next process to take the lock gets `EOWNERDEAD` from
//! the robust mutex, finishes the dead process's INCR from its journal, and the retry is
//! answered from the record: run once, no deadlock, and the server keeps serving.
//!
//! **Refusals.** TOOOLD (pushed out of `--dedup-window`, or below the client's `low`),
//! CONFLICT (the same seq with another key or amount), EXPIRED (HELLO with `sent > 0` from an
//! unknown client; a client evicted after its HELLO), NOSESSION, KEYSFULL, and overflow.
//!
//! **Bounded.** 100 000 distinct clients through a table of 1024: the table evicts, its size
//! does not change, and the server's resident memory grows by less than a few MB.
//!
//! **Malformed session frames** get an ERROR reply and the connection stays open; other
//! clients are served throughout.

mod common;

use std::time::Duration;

use common::*;
use echolab_protocol::session::{hello as word, parse_value, Refusal, MAX_KEY};
use echolab_protocol::{Codec, Command as Op, Protocol, Request, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Sends HELLO and returns the reply.
fn hello(c: &mut Client, client: u64, sent: u64) -> OwnedResponse {
    let id = c.next_id();
    c.request(&Request {
        id: Some(id),
        command: Op::Hello {
            client,
            sent,
            format: None,
        },
        payload: b"",
    })
}

/// The INCR request for `seq` (its id), adding `by` to `key`, with the client's `low`.
fn incr_request(seq: u64, by: u64, low: u64, key: &[u8]) -> Request<'_> {
    Request {
        id: Some(seq),
        command: Op::Incr { by, low },
        payload: key,
    }
}

/// Sends INCR and returns the reply.
fn incr(c: &mut Client, seq: u64, by: u64, low: u64, key: &[u8]) -> OwnedResponse {
    c.request(&incr_request(seq, by, low, key))
}

/// GET's value.
fn get(c: &mut Client, key: &[u8]) -> u64 {
    let id = c.next_id();
    let r = c.request(&Request {
        id: Some(id),
        command: Op::Get,
        payload: key,
    });
    value(&r)
}

/// The value an OK INCR or GET reply carries.
fn value(r: &OwnedResponse) -> u64 {
    assert_eq!(r.status, Status::Ok, "expected a value: {}", r.message());
    parse_value(&r.payload).unwrap_or_else(|| panic!("not a value: {r:?}"))
}

/// The word an OK HELLO reply carries.
fn said(r: &OwnedResponse) -> String {
    assert_eq!(r.status, Status::Ok, "expected a word: {}", r.message());
    r.message()
}

/// The refusal an ERROR reply carries.
fn refusal(r: &OwnedResponse) -> Refusal {
    assert_eq!(r.status, Status::Error, "expected a refusal: {r:?}");
    Refusal::of_message(&r.payload).unwrap_or_else(|| panic!("not a refusal: {}", r.message()))
}

/// `stats.sessions.<field>`, which must be a number.
fn sessions(stopped: &Stopped, field: &str) -> u64 {
    let s = &stopped.stats()["sessions"];
    s[field]
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no sessions.{field}: {s}"))
}

/// The pid of the child or worker that holds the server's end of `client`'s connection.
fn serving_pid(server: &Server, client: &Client) -> i32 {
    let (port, mine) = (server.addr.port(), client.local_port());
    let mut owner = None;
    wait_until(IO_TIMEOUT, "the process serving a connection", || {
        owner = accepted_inode(port, mine)
            .filter(|&inode| inode != 0)
            .and_then(|inode| socket_owner(&live_children(server.pid()), inode));
        owner.is_some()
    });
    owner.unwrap_or_default()
}

/// One test per model for each of `--dedup on` and `off`, so they run in parallel and fail
/// separately.
macro_rules! model_table {
    ($($module:ident => $model:expr),* $(,)?) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn a_retry_is_answered_from_the_record() {
                    retry_on_a_new_connection(&$model, true);
                }

                #[test]
                fn without_dedup_a_retry_runs_again() {
                    retry_on_a_new_connection(&$model, false);
                }
            }
        )*
    };
}

every_model!(model_table);

/// HELLO, INCR 1 and 2, the connection dropped, then INCR 2 again on a new connection.
fn retry_on_a_new_connection(model: &Model, dedup: bool) {
    let extra: &[&str] = if dedup { &[] } else { &["--dedup", "off"] };
    let server = model.start(extra);
    let mut a = model.client(&server);
    let first = if dedup { word::NEW } else { word::UNRECORDED };
    assert_eq!(said(&hello(&mut a, 42, 0)), first, "{}", model.name);
    assert_eq!(value(&incr(&mut a, 1, 1, 1, b"k")), 1);
    assert_eq!(value(&incr(&mut a, 2, 1, 2, b"k")), 2);
    // The connection breaks with seq 2's reply (as far as the client knows) lost.
    drop(a);

    let mut b = model.client(&server);
    let again = if dedup {
        word::RESUMED
    } else {
        word::UNRECORDED
    };
    assert_eq!(said(&hello(&mut b, 42, 2)), again, "{}", model.name);
    let after = if dedup { 2 } else { 3 };
    assert_eq!(
        value(&incr(&mut b, 2, 1, 2, b"k")),
        after,
        "{}: the retry of seq 2",
        model.name
    );
    assert_eq!(get(&mut b, b"k"), after, "{}: the counter", model.name);
    drop(b);

    let stopped = server.stop();
    stopped.assert_clean(model.name);
    assert_eq!(
        stopped.stats()["sessions"]["dedup"],
        Value::Bool(dedup),
        "{}",
        model.name
    );
    assert_eq!(sessions(&stopped, "replayed"), u64::from(dedup));
    assert_eq!(sessions(&stopped, "incr_executed"), after);
}

#[test]
fn fork_answers_a_retry_from_another_child() {
    retry_on_another_process(&FORK);
}

#[test]
fn prefork_shared_answers_a_retry_from_another_worker() {
    retry_on_another_process(&PREFORK_SHARED);
}

#[test]
fn prefork_locked_answers_a_retry_from_another_worker() {
    retry_on_another_process(&PREFORK_LOCKED);
}

#[test]
fn prefork_reuseport_answers_a_retry_from_another_worker() {
    retry_on_another_process(&PREFORK_REUSEPORT);
}

/// Connection A runs seq 1 and stays open, so the process serving it is busy; the retry on
/// connection B is served by another process, from the shared table.
fn retry_on_another_process(model: &Model) {
    let server = model.start(&[]);
    let mut a = model.client(&server);
    assert_eq!(said(&hello(&mut a, 7, 0)), word::NEW);
    assert_eq!(value(&incr(&mut a, 1, 5, 1, b"k")), 5);
    let a_pid = serving_pid(&server, &a);

    let mut b = model.client(&server);
    let b_pid = serving_pid(&server, &b);
    assert_ne!(
        a_pid, b_pid,
        "{}: A and B served by one process",
        model.name
    );
    assert_eq!(said(&hello(&mut b, 7, 1)), word::RESUMED, "{}", model.name);
    assert_eq!(
        value(&incr(&mut b, 1, 5, 1, b"k")),
        5,
        "{}: the retry from pid {b_pid} of what pid {a_pid} ran",
        model.name
    );
    assert_eq!(get(&mut b, b"k"), 5);
    drop((a, b));

    let stopped = server.stop();
    stopped.assert_clean(model.name);
    assert_eq!(sessions(&stopped, "replayed"), 1, "{}", model.name);
    assert_eq!(sessions(&stopped, "incr_executed"), 1, "{}", model.name);
}

#[test]
fn fork_child_killed_inside_the_lock() {
    killed_inside_the_lock(&FORK);
}

#[test]
fn prefork_worker_killed_inside_the_lock() {
    killed_inside_the_lock(&PREFORK_SHARED);
}

/// Whether process `pid` is asleep in nanosleep(2), as `--debug-lock-hold-ns` puts it; `None`
/// where `/proc/PID/wchan` says nothing (a kernel that hides it).
fn in_nanosleep(pid: i32) -> Option<bool> {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    (!wchan.is_empty() && wchan != "0").then(|| wchan.contains("nanosleep"))
}

/// SIGKILL to the process serving an INCR, between its counter write and its record write,
/// with the table's lock held. The retry on a new connection is answered from the record the
/// next lock holder finished, and the server serves on.
fn killed_inside_the_lock(model: &Model) {
    // Long enough to be sure to kill inside it, short enough to keep the test fast: every
    // executed INCR pays it (seq 1 below too).
    let server = model.start(&["--debug-lock-hold-ns", "300000000"]);
    let mut a = model.client(&server);
    assert_eq!(said(&hello(&mut a, 9, 0)), word::NEW);
    assert_eq!(value(&incr(&mut a, 1, 1, 1, b"k")), 1);
    let victim = serving_pid(&server, &a);

    a.send(&incr_request(2, 1, 2, b"k"));
    let port = server.addr.port();
    wait_until(IO_TIMEOUT, "the INCR to be inside the lock", || {
        request_taken(port, &a) && in_nanosleep(victim) != Some(false)
    });
    if in_nanosleep(victim).is_none() {
        // No wchan to go by: the request was taken, and the hold lasts 300 ms, so a third of
        // it later the process is inside, even on a loaded machine.
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("SIGKILL the serving process");
    // The client sees its connection end without a reply: it cannot tell whether seq 2 ran.
    assert!(
        !matches!(a.try_read_response(), Ok(Some(_))),
        "{}: a reply from a killed process",
        model.name
    );
    drop(a);

    let mut b = model.client(&server);
    assert_eq!(said(&hello(&mut b, 9, 2)), word::RESUMED, "{}", model.name);
    assert_eq!(
        value(&incr(&mut b, 2, 1, 2, b"k")),
        2,
        "{}: the retry of the INCR killed inside the lock",
        model.name
    );
    assert_eq!(get(&mut b, b"k"), 2, "{}: run exactly once", model.name);
    // The server serves on, INCRs included.
    b.echo(b"still here");
    assert_eq!(value(&incr(&mut b, 3, 1, 3, b"k")), 3);
    drop(b);

    let stopped = server.stop();
    stopped.assert_clean(model.name);
    assert_eq!(
        sessions(&stopped, "lock_recoveries"),
        1,
        "{}: the kill was not inside the lock",
        model.name
    );
    assert_eq!(sessions(&stopped, "replayed"), 1, "{}", model.name);
    assert!(
        stopped.log.contains("took the lock over"),
        "{}",
        stopped.log
    );
}

/// TOOOLD, CONFLICT and NOSESSION, and their messages, on the event loop with a window of 4.
#[test]
fn too_old_conflict_and_no_session() {
    let server = EVENTLOOP_EPOLL.start(&["--dedup-window", "4"]);
    let mut a = server.client();
    assert_eq!(said(&hello(&mut a, 1, 0)), word::NEW);
    // Seqs 1..=6 pipelined, none answered yet as the client sees it: low stays 1.
    for seq in 1..=6 {
        a.send(&incr_request(seq, 1, 1, b"t"));
    }
    for seq in 1..=6 {
        assert_eq!(value(&a.read_response()), seq);
    }
    // Seq 1's record was pushed out of the window of 4 by seq 5.
    let r = incr(&mut a, 1, 1, 1, b"t");
    assert_eq!(refusal(&r), Refusal::TooOld, "{}", r.message());
    assert!(
        r.message().starts_with("TOOOLD client 1 seq 1: "),
        "{}",
        r.message()
    );
    assert_eq!(get(&mut a, b"t"), 6, "a TOOOLD must not run");

    // Client 2: seqs 1..=4, then seq 5 saying low 5. Seq 3's record is still in the ring,
    // but below low: forgotten.
    let mut b = server.client();
    assert_eq!(said(&hello(&mut b, 2, 0)), word::NEW);
    for seq in 1..=4 {
        assert_eq!(value(&incr(&mut b, seq, 1, seq, b"u")), seq);
    }
    assert_eq!(value(&incr(&mut b, 5, 1, 5, b"u")), 5);
    assert_eq!(refusal(&incr(&mut b, 3, 1, 3, b"u")), Refusal::TooOld);
    assert_eq!(get(&mut b, b"u"), 5);

    // The same seq with another key, or another amount: a client bug, refused, not run.
    let r = incr(&mut b, 5, 1, 5, b"other");
    assert_eq!(refusal(&r), Refusal::Conflict, "{}", r.message());
    assert_eq!(refusal(&incr(&mut b, 5, 2, 5, b"u")), Refusal::Conflict);
    assert_eq!(get(&mut b, b"other"), 0);
    // The same seq with the same content: a retry, answered from the record.
    assert_eq!(value(&incr(&mut b, 5, 1, 5, b"u")), 5);
    assert_eq!(get(&mut b, b"u"), 5);

    // No HELLO on this connection: a seq needs a session; seq 0 needs none.
    let mut c = server.client();
    let r = incr(&mut c, 1, 1, 1, b"u");
    assert_eq!(refusal(&r), Refusal::NoSession, "{}", r.message());
    assert_eq!(value(&incr(&mut c, 0, 1, 0, b"u")), 6);
    drop((a, b, c));

    let stopped = server.stop();
    stopped.assert_clean("eventloop");
    assert_eq!(sessions(&stopped, "too_old"), 2);
    assert_eq!(sessions(&stopped, "conflicts"), 2);
    assert_eq!(sessions(&stopped, "no_session"), 1);
    assert_eq!(sessions(&stopped, "replayed"), 1);
    assert_eq!(sessions(&stopped, "window"), 4);
    // The refusals are ERROR replies: counted as errors, and no connection was closed for them.
    assert_eq!(stopped.total("errors"), 5);
    assert_eq!(stopped.total("protocol_errors"), 0);
}

/// EXPIRED (an unknown client that says it sent before; a client evicted after its HELLO),
/// KEYSFULL and overflow, on prefork, where the evicting HELLOs and the refused INCR may be
/// served by different workers.
#[test]
fn expired_keys_full_and_overflow() {
    let server = PREFORK_SHARED.start(&["--dedup-clients", "8", "--counter-keys", "8"]);
    let mut a = PREFORK_SHARED.client(&server);
    assert_eq!(said(&hello(&mut a, 100, 0)), word::NEW);

    let mut b = PREFORK_SHARED.client(&server);
    let r = hello(&mut b, 555, 3);
    assert_eq!(refusal(&r), Refusal::Expired, "{}", r.message());
    // Eight new clients in a table of one bucket of eight: client 100, the least recently
    // used, is evicted by the last.
    for client in 101..=108 {
        assert_eq!(said(&hello(&mut b, client, 0)), word::NEW);
    }
    let r = incr(&mut a, 1, 1, 1, b"k0");
    assert_eq!(refusal(&r), Refusal::Expired, "{}", r.message());
    assert!(r.message().contains("evicted"), "{}", r.message());
    let mut c = PREFORK_SHARED.client(&server);
    assert_eq!(refusal(&hello(&mut c, 100, 1)), Refusal::Expired);

    // Counters are data: eight keys fill the table, the ninth is refused, none is evicted.
    for k in 0..8 {
        let key = format!("k{k}");
        assert_eq!(value(&incr(&mut b, 0, 1, 0, key.as_bytes())), 1);
    }
    assert_eq!(refusal(&incr(&mut b, 0, 1, 0, b"k8")), Refusal::KeysFull);
    assert_eq!(get(&mut b, b"k0"), 1);
    // Overflow is a plain error, and nothing runs.
    let r = incr(&mut b, 0, u64::MAX, 0, b"k0");
    assert_eq!(r.status, Status::Error);
    assert!(r.message().contains("overflow"), "{}", r.message());
    assert_eq!(get(&mut b, b"k0"), 1);
    drop((a, b, c));

    let stopped = server.stop();
    stopped.assert_clean("prefork");
    assert_eq!(sessions(&stopped, "evicted"), 1);
    assert_eq!(sessions(&stopped, "expired"), 3);
    assert_eq!(sessions(&stopped, "keys_full"), 1);
    assert_eq!(sessions(&stopped, "clients_live"), 8);
    assert_eq!(sessions(&stopped, "incr_executed"), 8);
}

/// A session belongs to the connection whose HELLO opened it, not just to the client id: a
/// new incarnation of the id (`HELLO sent 0`, as from a client restarted with it, and after
/// an eviction) gets a fresh session, and an old connection's retry is told EXPIRED instead of
/// finding no record and running again.
#[test]
fn an_old_connection_never_runs_a_seq_again_in_a_new_session_of_its_id() {
    let server = EVENTLOOP_EPOLL.start(&["--dedup-clients", "8"]);
    let mut a = EVENTLOOP_EPOLL.client(&server);
    assert_eq!(said(&hello(&mut a, 7, 0)), word::NEW);
    assert_eq!(value(&incr(&mut a, 1, 1, 1, b"k")), 1);
    // The same id, brand new again, on another connection.
    let mut b = EVENTLOOP_EPOLL.client(&server);
    assert_eq!(
        said(&hello(&mut b, 7, 0)),
        word::NEW,
        "a new incarnation, not a resume"
    );
    let r = incr(&mut a, 1, 1, 1, b"k");
    assert_eq!(refusal(&r), Refusal::Expired, "{}", r.message());
    assert_eq!(
        get(&mut b, b"k"),
        1,
        "the old connection's retry did not run"
    );
    // The new session's seq 1 is another request, and runs.
    assert_eq!(value(&incr(&mut b, 1, 1, 1, b"k")), 2);

    // Evicted, then the id opens a session again: the same for the evicted session's
    // connection.
    let mut c = EVENTLOOP_EPOLL.client(&server);
    assert_eq!(said(&hello(&mut c, 100, 0)), word::NEW);
    assert_eq!(value(&incr(&mut c, 1, 1, 1, b"j")), 1);
    let mut d = EVENTLOOP_EPOLL.client(&server);
    for client in 101..=108 {
        assert_eq!(said(&hello(&mut d, client, 0)), word::NEW);
    }
    assert_eq!(said(&hello(&mut d, 100, 0)), word::NEW);
    let r = incr(&mut c, 1, 1, 1, b"j");
    assert_eq!(refusal(&r), Refusal::Expired, "{}", r.message());
    assert_eq!(
        get(&mut d, b"j"),
        1,
        "the evicted session's retry did not run"
    );
    drop((a, b, c, d));
    server.stop().assert_clean("eventloop");
}

/// 100 000 distinct clients, each a HELLO and one INCR, pipelined over four connections,
/// through a table of 1024 clients: it evicts, keeps its size, and the server's memory stays
/// put.
#[test]
fn a_hundred_thousand_clients_stay_within_the_bound() {
    const CLIENTS: u64 = 100_000;
    const BOUND: u64 = 1024;
    const BATCH: u64 = 1000;
    let bound = BOUND.to_string();
    let server = EVENTLOOP_EPOLL.start(&["--dedup-clients", &bound, "--dedup-window", "8"]);
    let mut conns: Vec<Client> = (0..4).map(|_| server.client()).collect();
    // A first INCR, so the counter's key exists before the measurement starts.
    assert_eq!(value(&incr(&mut conns[0], 0, 0, 0, b"n")), 0);
    let rss_before = vm_rss_kib(server.pid()).expect("the server's VmRSS");

    let codec = Protocol::Binary.codec(1 << 20);
    let mut next = 1;
    while next <= CLIENTS {
        for conn in &mut conns {
            let ids = next..(next + BATCH).min(CLIENTS + 1);
            next = ids.end;
            let mut wire = Vec::new();
            for client in ids.clone() {
                encode(
                    &*codec,
                    Op::Hello {
                        client,
                        sent: 0,
                        format: None,
                    },
                    1,
                    b"",
                    &mut wire,
                );
                encode(&*codec, Op::Incr { by: 1, low: 1 }, 1, b"n", &mut wire);
            }
            conn.send_raw(&wire);
            for client in ids {
                assert_eq!(said(&conn.read_response()), word::NEW, "client {client}");
                value(&conn.read_response());
            }
        }
    }
    assert_eq!(get(&mut conns[0], b"n"), CLIENTS);
    let rss_after = vm_rss_kib(server.pid()).expect("the server's VmRSS");
    drop(conns);

    let stopped = server.stop();
    stopped.assert_clean("eventloop");
    let live = sessions(&stopped, "clients_live");
    assert!(live <= BOUND, "{live} clients live in a table of {BOUND}");
    let evicted = sessions(&stopped, "evicted");
    assert!(evicted >= CLIENTS - BOUND, "only {evicted} evicted");
    let bytes = sessions(&stopped, "table_bytes");
    let grew = rss_after.saturating_sub(rss_before);
    figures::record(
        EVENTLOOP_EPOLL.name,
        "RSS growth for 100000 session clients",
        grew,
        "KiB",
    );
    assert!(
        grew <= 4 * 1024,
        "the server's RSS grew by {grew} KiB for {CLIENTS} clients (table {bytes} bytes)"
    );
}

/// Appends one binary request to `wire`.
fn encode(codec: &dyn Codec, command: Op, id: u64, payload: &[u8], wire: &mut Vec<u8>) {
    codec
        .encode_request(
            &Request {
                id: Some(id),
                command,
                payload,
            },
            wire,
        )
        .expect("encode a session request");
}

/// A binary frame around `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn malformed_session_frames_on_threads() {
    malformed_session_frames(&THREAD);
}

#[test]
fn malformed_session_frames_on_prefork() {
    malformed_session_frames(&PREFORK_SHARED);
}

#[test]
fn malformed_session_frames_on_the_event_loop() {
    malformed_session_frames(&EVENTLOOP_EPOLL);
}

/// Each malformed session frame gets its ERROR and the connection stays open; a client on
/// another connection, in the middle of its session, is served before, between and after.
fn malformed_session_frames(model: &Model) {
    let server = model.start(&[]);
    let mut good = model.client(&server);
    assert_eq!(said(&hello(&mut good, 5, 0)), word::NEW);
    let mut bad = model.client(&server);

    let mut long_key = vec![0x11, 0x04, 0x01, 0x01];
    long_key.extend_from_slice(&[b'k'; MAX_KEY + 1]);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "HELLO client 0",
            vec![0x10, 0x03, 0x00, 0x00],
            "HELLO needs a client id other than 0",
        ),
        (
            "INCR with an empty key",
            vec![0x11, 0x04, 0x01, 0x01],
            "key length 0 is outside 1..=64",
        ),
        (
            "INCR with a 65-byte key",
            long_key,
            "key length 65 is outside 1..=64",
        ),
        (
            "INCR with a truncated low",
            vec![0x11, 0x04, 0x01, 0x80],
            "malformed low",
        ),
    ];
    for (seq, (what, body, expected)) in (1..).zip(cases) {
        bad.send_raw(&frame(&body));
        let r = bad.read_response();
        assert_eq!(r.status, Status::Error, "{}: {what}", model.name);
        assert!(
            r.message().starts_with(expected),
            "{}: {what}: {}",
            model.name,
            r.message()
        );
        assert_eq!(value(&incr(&mut good, seq, 1, seq, b"g")), seq);
    }
    // The bad connection is still open, and can start a session of its own.
    assert_eq!(said(&hello(&mut bad, 6, 0)), word::NEW);
    assert_eq!(value(&incr(&mut bad, 1, 1, 1, b"g")), 5);
    drop((good, bad));

    let stopped = server.stop();
    stopped.assert_clean(model.name);
    assert_eq!(stopped.total("protocol_errors"), 0, "{}", model.name);
    assert_eq!(stopped.total("errors"), 4, "{}", model.name);
}

/// Flags that would make the table unbounded, or empty, are usage errors.
#[test]
fn table_flags_are_bounded() {
    for args in [
        &["--dedup-clients", "0"][..],
        &["--dedup-clients", "7"],
        &["--dedup-window", "0"],
        &["--dedup-window", "5000"],
        &["--counter-keys", "0"],
        &["--counter-keys", "99999999999"],
        &["--dedup", "maybe"],
        &["--dedup-clients", "1048576", "--dedup-window", "4096"],
    ] {
        let (status, out) =
            run_tool(thread_bin(), args, Duration::from_secs(10)).expect("the server binary runs");
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?} should be a usage error:\n{out}"
        );
        assert!(out.contains("error:"), "{args:?}:\n{out}");
    }
}
