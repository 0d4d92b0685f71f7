//! The one table of the server models every "each model" test runs against: each binary with
//! the flags that select one model (thread per connection, a pool of 4, fork, prefork with 4
//! workers in each accept mode, prefork with 4 event-loop workers in each of theirs, the event
//! loop on each backend, 2 event loops on threads, and the io_uring loop with each way of
//! receiving), and what a test needs to know
//! about it — how many clients it serves at once, whether a connection can queue behind a busy
//! worker, its workers and its backend.
//!
//! Why one table: conformance, first contact, lifecycle and robustness all run "every model",
//! and a model added, renamed or given other flags must change in all of them at once.
//! [`every_model!`] hands the whole list to a test file's macro, which makes a module of tests
//! per model.

use super::*;

/// A server binary, the flags that select its model, and what it promises.
#[derive(Debug)]
pub struct Model {
    /// How the model is named in messages.
    pub name: &'static str,
    /// Its binary.
    pub bin: fn() -> &'static str,
    /// The flags that select the model.
    pub args: &'static [&'static str],
    /// How many connections the model serves at the same moment. Thread per connection, fork
    /// and the event loop serve every connection at once; the pool and prefork serve one
    /// connection per worker at a time and queue the rest, so holding 64 long connections open
    /// at once against 4 workers would wait forever: their "all at once" checks use 4.
    pub parallel: usize,
    /// prefork with SO_REUSEPORT: the kernel hashes each new connection onto one worker's
    /// listen queue, so a connection can wait behind a worker that holds another client (see
    /// [`Client::connect_accepted`]).
    pub may_queue: bool,
    /// The workers the stats file must list (prefork's processes, event-loop threads), if any.
    pub workers: Option<Workers>,
    /// The event loop's readiness backend, which the stats must name (`model`
    /// `eventloop/<backend>`, `extra.backend`), with no `workers` list: one thread has none.
    pub backend: Option<&'static str>,
}

/// The workers a model's stats list: how many, and which field names each.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    /// One stats entry per worker.
    pub count: usize,
    /// The field that names each worker: `pid` for processes, `tid` for threads.
    pub id: &'static str,
}

/// prefork's 4 worker processes.
const FOUR_PROCESSES: Option<Workers> = Some(Workers {
    count: 4,
    id: "pid",
});

pub const THREAD: Model = Model {
    name: "thread",
    bin: thread_bin,
    args: &[],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: None,
};
pub const THREAD_POOL: Model = Model {
    name: "thread --pool 4",
    bin: thread_bin,
    args: &["--pool", "4"],
    parallel: 4,
    may_queue: false,
    workers: None,
    backend: None,
};
pub const FORK: Model = Model {
    name: "fork",
    bin: fork_bin,
    args: &[],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: None,
};
pub const PREFORK_SHARED: Model = Model {
    name: "prefork --accept shared",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "shared"],
    parallel: 4,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_LOCKED: Model = Model {
    name: "prefork --accept locked",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "locked"],
    parallel: 4,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_REUSEPORT: Model = Model {
    name: "prefork --accept reuseport",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "reuseport"],
    parallel: 4,
    may_queue: true,
    workers: FOUR_PROCESSES,
    backend: None,
};
// prefork with event-loop workers: 4 workers that each serve every connection they accept
// at once, so the model as a whole serves any number at once (`parallel` 64) and never queues
// a connection behind a busy worker (a loop is never busy with one client, only for the length
// of a request), even with reuseport's hashing. `backend` stays `None`: that field promises a
// single loop's stats (`eventloop/<backend>`, no workers list), and these have workers.
pub const PREFORK_LOOP_SHARED: Model = Model {
    name: "prefork --worker eventloop --accept shared",
    bin: prefork_bin,
    args: &[
        "--workers",
        "4",
        "--worker",
        "eventloop",
        "--backend",
        "epoll",
        "--accept",
        "shared",
    ],
    parallel: 64,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_LOOP_EXCLUSIVE: Model = Model {
    name: "prefork --worker eventloop --accept exclusive",
    bin: prefork_bin,
    args: &[
        "--workers",
        "4",
        "--worker",
        "eventloop",
        "--backend",
        "epoll",
        "--accept",
        "exclusive",
    ],
    parallel: 64,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_LOOP_REUSEPORT: Model = Model {
    name: "prefork --worker eventloop --accept reuseport",
    bin: prefork_bin,
    args: &[
        "--workers",
        "4",
        "--worker",
        "eventloop",
        "--backend",
        "epoll",
        "--accept",
        "reuseport",
    ],
    parallel: 64,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_LOOP_LOCKED: Model = Model {
    name: "prefork --worker eventloop --accept locked",
    bin: prefork_bin,
    args: &[
        "--workers",
        "4",
        "--worker",
        "eventloop",
        "--backend",
        "epoll",
        "--accept",
        "locked",
    ],
    parallel: 64,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const PREFORK_LOOP_POLL_SHARED: Model = Model {
    name: "prefork --worker eventloop --backend poll --accept shared",
    bin: prefork_bin,
    args: &[
        "--workers",
        "4",
        "--worker",
        "eventloop",
        "--backend",
        "poll",
        "--accept",
        "shared",
    ],
    parallel: 64,
    may_queue: false,
    workers: FOUR_PROCESSES,
    backend: None,
};
pub const EVENTLOOP_SELECT: Model = Model {
    name: "eventloop --backend select",
    bin: eventloop_bin,
    args: &["--backend", "select"],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: Some("select"),
};
pub const EVENTLOOP_POLL: Model = Model {
    name: "eventloop --backend poll",
    bin: eventloop_bin,
    args: &["--backend", "poll"],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: Some("poll"),
};
pub const EVENTLOOP_EPOLL: Model = Model {
    name: "eventloop --backend epoll",
    bin: eventloop_bin,
    args: &["--backend", "epoll"],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: Some("epoll"),
};
// Two event loops on threads of one process, each with its own SO_REUSEPORT listener: like
// prefork's reuseport loops, the model as a whole serves any number of connections at once and
// never queues one behind a busy loop (only for the length of a request). `backend` is `None`
// for the same reason as there: that field promises one loop's stats, with no workers list;
// these list each loop thread, by tid.
pub const EVENTLOOP_THREADS: Model = Model {
    name: "eventloop --threads 2",
    bin: eventloop_bin,
    args: &["--backend", "epoll", "--threads", "2"],
    parallel: 64,
    may_queue: false,
    workers: Some(Workers {
        count: 2,
        id: "tid",
    }),
    backend: None,
};

// The io_uring loop: one thread that serves every connection at once, like the event loop,
// and has no workers list. `backend` stays `None`: that field promises `eventloop/<backend>`
// stats, and this model's are `uring/<recv>`. A row per way of receiving: multishot into the
// provided-buffer ring (what this kernel does by default), and single receives into each
// connection's own buffer (what a kernel without multishot receives falls back to, which no
// other test would run on a kernel that has them).
pub const URING: Model = Model {
    name: "uring",
    bin: uring_bin,
    args: &[],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: None,
};
pub const URING_SINGLE: Model = Model {
    name: "uring --recv single",
    bin: uring_bin,
    args: &["--recv", "single"],
    parallel: 64,
    may_queue: false,
    workers: None,
    backend: None,
};

/// Every model, in the table's order.
pub const ALL: [&Model; 17] = [
    &THREAD,
    &THREAD_POOL,
    &FORK,
    &PREFORK_SHARED,
    &PREFORK_LOCKED,
    &PREFORK_REUSEPORT,
    &PREFORK_LOOP_SHARED,
    &PREFORK_LOOP_EXCLUSIVE,
    &PREFORK_LOOP_REUSEPORT,
    &PREFORK_LOOP_LOCKED,
    &PREFORK_LOOP_POLL_SHARED,
    &EVENTLOOP_SELECT,
    &EVENTLOOP_POLL,
    &EVENTLOOP_EPOLL,
    &EVENTLOOP_THREADS,
    &URING,
    &URING_SINGLE,
];

/// Calls the macro `$table` with every model as `module => MODEL` pairs, for a test file that
/// makes a module of tests per model (`mod thread_per_connection { #[test] fn binary() ... }`).
// Not every test crate makes a module per model.
#[allow(unused_macros)]
macro_rules! every_model {
    ($table:ident) => {
        $table! {
            thread_per_connection => THREAD,
            thread_pool => THREAD_POOL,
            fork => FORK,
            prefork_shared => PREFORK_SHARED,
            prefork_locked => PREFORK_LOCKED,
            prefork_reuseport => PREFORK_REUSEPORT,
            prefork_loop_shared => PREFORK_LOOP_SHARED,
            prefork_loop_exclusive => PREFORK_LOOP_EXCLUSIVE,
            prefork_loop_reuseport => PREFORK_LOOP_REUSEPORT,
            prefork_loop_locked => PREFORK_LOOP_LOCKED,
            prefork_loop_poll_shared => PREFORK_LOOP_POLL_SHARED,
            eventloop_select => EVENTLOOP_SELECT,
            eventloop_poll => EVENTLOOP_POLL,
            eventloop_epoll => EVENTLOOP_EPOLL,
            eventloop_threads => EVENTLOOP_THREADS,
            uring => URING,
            uring_single => URING_SINGLE,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use every_model;

impl Model {
    /// Starts the server with the model's flags plus `extra`.
    pub fn start(&self, extra: &[&str]) -> Server {
        let mut args = self.args.to_vec();
        args.extend_from_slice(extra);
        Server::start((self.bin)(), &args)
    }

    /// A connection some worker has accepted (see [`Client::connect_accepted`]): where
    /// connections can queue behind a busy worker, retried from other source ports until one
    /// is; elsewhere, one accepted within [`IO_TIMEOUT`].
    pub fn client(&self, server: &Server) -> Client {
        Client::connect_accepted(server.addr, server.protocol, self.may_queue)
    }

    /// A new connection. Where connections can queue behind a busy worker, one that some
    /// worker has accepted (as [`Model::client`]); elsewhere a plain connect, as every
    /// connection is served or queued for the next free worker anyway.
    pub fn connect(&self, server: &Server) -> Client {
        if self.may_queue {
            Client::connect_accepted(server.addr, server.protocol, true)
        } else {
            server.client()
        }
    }

    /// Whether each worker serves many connections at once (event-loop workers, loops on
    /// threads). There, which worker takes a new connection is the kernel's choice (or the
    /// accept lock's), and one worker may hold every client a test opens: a test that needs a
    /// client on a given worker asks for it with [`Model::client_where`].
    pub fn workers_multiplex(&self) -> bool {
        self.workers.is_some_and(|w| self.parallel > w.count)
    }

    /// A served connection (one echo answered) held by a process of `pids` that `wanted`
    /// accepts, with that process's pid. New connections are made, 20 ms apart so that idle
    /// loops are back in their wait, up to 64 of them. One that lands on an unwanted worker is
    /// kept, and made to keep its worker busy for 2 s (two SLEEPs of 1 s, the longest one may
    /// ask): with `EPOLLEXCLUSIVE` the kernel wakes the same idle worker every time, and under
    /// the accept lock an idle holder takes the lock back at once, so only busy workers let
    /// the next connection go elsewhere, and every unwanted worker must still be busy when it
    /// comes (300 ms each was too short on a loaded CI machine: the three took turns being
    /// free). The busy ones are closed on return; their workers finish the SLEEPs first.
    pub fn client_where(
        &self,
        server: &Server,
        pids: &[i32],
        wanted: impl Fn(i32) -> bool,
    ) -> (Client, i32) {
        let mut busy = Vec::new();
        let mut owners = Vec::new();
        for _ in 0..64 {
            let mut c = self.client(server);
            c.echo(b"which worker?");
            let owner = accepted_inode(server.addr.port(), c.local_port())
                .and_then(|inode| socket_owner(pids, inode));
            match owner {
                Some(o) if wanted(o) => return (c, o),
                Some(o) => {
                    owners.push(o);
                    for id in [u64::MAX - 1, u64::MAX] {
                        c.send(&Request {
                            id: Some(id),
                            command: Op::Sleep { micros: 1_000_000 },
                            payload: b"keep this worker busy",
                        });
                    }
                    busy.push(c);
                }
                None => {}
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{}: 64 connections, none on the wanted worker of {pids:?} (they went to {owners:?})",
            self.name
        )
    }

    /// How long a connection from [`Model::connect`] or [`Model::client`] may take to be
    /// served, and so how long a thread that has one may wait for others that are getting
    /// theirs: an I/O timeout, plus, where a connection can queue behind a busy worker, every
    /// retry [`Client::connect_accepted`] may make.
    pub fn served_within(&self) -> Duration {
        if self.may_queue {
            IO_TIMEOUT + REQUEUE_WITHIN
        } else {
            IO_TIMEOUT
        }
    }
}
