//! The table of server variants the lifecycle and robustness tests run against: each binary
//! with the flags that select one model (thread per connection, a pool of 4, fork, prefork
//! with 4 workers in each accept mode, the event loop on each backend).

use super::*;

/// A server binary and the flags that select its model.
#[derive(Debug)]
pub struct Variant {
    /// How the model is named in messages.
    pub name: &'static str,
    /// Its binary (`None` while it is not built).
    pub bin: fn() -> Option<&'static str>,
    /// The flags that select the model.
    pub args: &'static [&'static str],
    /// prefork with SO_REUSEPORT: a connection may be queued behind a busy worker (see
    /// `Client::connect_accepted`).
    pub may_queue: bool,
}

fn thread_model() -> Option<&'static str> {
    Some(thread_bin())
}

fn fork_model() -> Option<&'static str> {
    Some(fork_bin())
}

pub const THREAD: Variant = Variant {
    name: "thread",
    bin: thread_model,
    args: &[],
    may_queue: false,
};
pub const THREAD_POOL: Variant = Variant {
    name: "thread --pool 4",
    bin: thread_model,
    args: &["--pool", "4"],
    may_queue: false,
};
pub const FORK: Variant = Variant {
    name: "fork",
    bin: fork_model,
    args: &[],
    may_queue: false,
};
pub const PREFORK_SHARED: Variant = Variant {
    name: "prefork --accept shared",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "shared"],
    may_queue: false,
};
pub const PREFORK_LOCKED: Variant = Variant {
    name: "prefork --accept locked",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "locked"],
    may_queue: false,
};
pub const PREFORK_REUSEPORT: Variant = Variant {
    name: "prefork --accept reuseport",
    bin: prefork_bin,
    args: &["--workers", "4", "--accept", "reuseport"],
    may_queue: true,
};

fn eventloop_model() -> Option<&'static str> {
    Some(eventloop_bin())
}

pub const EVENTLOOP_SELECT: Variant = Variant {
    name: "eventloop --backend select",
    bin: eventloop_model,
    args: &["--backend", "select"],
    may_queue: false,
};
pub const EVENTLOOP_POLL: Variant = Variant {
    name: "eventloop --backend poll",
    bin: eventloop_model,
    args: &["--backend", "poll"],
    may_queue: false,
};
pub const EVENTLOOP_EPOLL: Variant = Variant {
    name: "eventloop --backend epoll",
    bin: eventloop_model,
    args: &["--backend", "epoll"],
    may_queue: false,
};

impl Variant {
    /// Starts the server with the variant's flags plus `extra`; `None` (after saying so) when
    /// its binary is not built yet.
    pub fn start(&self, test: &str, extra: &[&str]) -> Option<Server> {
        let Some(bin) = (self.bin)() else {
            skip(
                &format!("{test} ({})", self.name),
                "server-prefork is not built yet (CARGO_BIN_EXE_server-prefork is unset)",
            );
            return None;
        };
        let mut args = self.args.to_vec();
        args.extend_from_slice(extra);
        Some(Server::start(bin, &args))
    }

    /// A connection some worker has accepted (see `Client::connect_accepted`).
    pub fn client(&self, server: &Server) -> Client {
        Client::connect_accepted(server.addr, server.protocol, self.may_queue)
    }
}
