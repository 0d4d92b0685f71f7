//! The session table: the counters `INCR` and `GET` act on, and the records that let a retried
//! `INCR` be answered instead of run twice, in one fixed-size block of fork-shared memory.
//!
//! The protocol half (what HELLO, INCR and GET mean, the refusal code words) is
//! `echolab_protocol::session`; this is the server half, and every model uses this one type.
//!
//! **Where it lives.** One `MAP_SHARED` anonymous mapping, created before any `fork`, as the
//! counters of [`crate::stats`] are. That is the fork model's lesson made concrete: after
//! `fork`, parent and child share nothing they did not map as shared beforehand, so a table
//! in ordinary memory would give each fork child, and each prefork worker, a private copy,
//! and a retry that reconnects to another process would find no record and run again. With
//! the mapping, every process reads and writes the same physical pages. The thread models and
//! the event loop use the same type: there the mapping is only ever seen by one process,
//! which costs nothing and keeps one code path for every model.
//!
//! **Fixed size, nothing allocated after start.** Both tables are set-associative, like a CPU
//! cache: a key (or client id) hashes to one bucket of [`WAYS`] slots and can only live there.
//! - Counters: each slot holds a key of up to [`MAX_KEY`] bytes inline and its value. A key
//!   whose bucket is full is refused (`KEYSFULL`): counters are the data, never evicted.
//! - Clients: each slot holds the client id, its `low` (every record below it forgotten), a
//!   last-use stamp, and a ring of `window` records `{seq, fingerprint, reply}` indexed by
//!   `seq % window`. A new client whose bucket is full evicts the least recently used client
//!   of that bucket (counted); the evicted client's next request is refused `EXPIRED`.
//!
//! So memory is `clients x (4 + 3 x window) x 8` bytes plus `counter_keys x 80`, decided by
//! the flags at start (logged, and reported as `table_bytes`), whatever clients do: a
//! hundred thousand clients cost what four thousand do. (The kernel makes a page of the
//! mapping resident when it is first touched, so an idle server pays for the slots it used.) Redis's client table, by contrast,
//! grows with its clients; Raft's client sessions are bounded the same way as here, by
//! evicting the least recently used.
//!
//! **One lock for every process**: a process-shared, *robust* pthread mutex in the mapping.
//! Process-shared, because fork children and workers must exclude each other; robust, because
//! any of them can be SIGKILLed (a crash, the OOM killer, a test) while holding it, and an
//! ordinary mutex would then stay locked forever and stop every process of the server. With a
//! robust mutex the kernel notices the dead owner, and the next `pthread_mutex_lock` returns
//! `EOWNERDEAD`: that process repairs the table, calls `pthread_mutex_consistent`, and counts
//! a `lock_recoveries`. One lock is the simplest thing that is correct; it is also the cost
//! every model pays on INCR and GET, one lock round trip, and with N processes, a line of them.
//! A production store would shard the lock per bucket, or give each worker its own clients.
//!
//! **A kill inside the critical section.** What it executes is one redo record (the
//! *journal* in the header): first the journal is written and armed (the counter's new value,
//! and where the reply record goes), then the counter and the record are written, the record's
//! `seq` last, then the journal is disarmed. Every write is an absolute value, never an
//! increment, so applying the journal twice is the same as once. Whoever recovers the lock
//! after `EOWNERDEAD` applies an armed journal again. So a kill
//! - before the journal is armed leaves the request not run, and unanswered: its retry runs it;
//! - after it is armed leaves it run *and* recorded, once the next process takes the lock:
//!   its retry is answered from the record, the case the table exists for.
//!
//! What remains, honestly: a new client's slot or a new counter key half written by a killed
//! process is invisible (its id or length is published last) and reused later; a statistic
//! bumped just after a write may be lost with the process (`clients_live` then reads one low);
//! and a robust mutex
//! only helps when its owner *dies*: a process stopped (SIGSTOP, a debugger) or stuck while
//! holding the lock stalls every INCR and GET of the server until it moves again. The table
//! is memory only: a server restart forgets every session, and clients are told `EXPIRED`.
//!
//! The fingerprint that tells a retry from a different request reusing its seq is a 64-bit
//! hash of the key and the amount: two different requests that collide would be taken for a
//! retry (a chance of 2^-64 per reused seq; storing the key in each record would rule it out at
//! 72 more bytes per record).

use std::cell::UnsafeCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::Duration;

use echolab_protocol::session::{hello, Refusal, MAX_KEY};
use echolab_protocol::{Command, Reply, Request};
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use serde::Serialize;

/// Slots per bucket, in both tables: a key or a client can only live in the eight slots of
/// its bucket, so a lookup reads at most eight, and eviction is least-recently-used within them.
pub const WAYS: usize = 8;

/// The most `--dedup-clients`.
pub const MAX_CLIENTS: u32 = 1 << 20;
/// The most `--dedup-window`.
pub const MAX_WINDOW: u32 = 4096;
/// The most `--counter-keys`.
pub const MAX_COUNTER_KEYS: u32 = 1 << 20;
/// The largest table the flags together may ask for: 1 GiB. Each flag alone is bounded, but
/// clients times window is not, and the mapping is made whole at start.
pub const MAX_TABLE_BYTES: usize = 1 << 30;

/// Words (u64) per counter slot: key length (0 = empty), the key in 8 words, the value.
const COUNTER_WORDS: usize = 2 + MAX_KEY / 8;
/// Words per record in a client's ring: seq (0 = empty), fingerprint, reply value.
const RECORD_WORDS: usize = 3;
/// Words at the start of a client slot: client id (0 = empty), low, last use, generation.
const CLIENT_HEAD: usize = 4;
/// Where in a client slot its generation is: a number no other session of any client has had
/// (drawn from the last-use clock when the slot is given out), so a connection can tell the
/// session its HELLO opened from a later one of the same client id.
const GENERATION: usize = 3;
/// A journal with no reply record to write (an INCR outside a session, or `--dedup off`).
const NO_RECORD: u64 = u64::MAX;

/// How the table is sized and what it does, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `--dedup on`: record executed INCRs and answer retries from the records.
    pub dedup: bool,
    /// `--dedup-clients`: the most clients remembered at once (rounded down to whole buckets).
    pub clients: u32,
    /// `--dedup-window`: records kept per client.
    pub window: u32,
    /// `--counter-keys`: the most counters (rounded down to whole buckets).
    pub counter_keys: u32,
    /// `--debug-lock-hold-ns`: a testing aid, the time every executed INCR spends between
    /// writing the counter and writing its record, with the lock held.
    pub debug_lock_hold: Duration,
}

impl Config {
    fn client_buckets(&self) -> usize {
        if self.dedup {
            (self.clients as usize / WAYS).max(1)
        } else {
            // --dedup off records nothing: no client table at all.
            0
        }
    }

    fn counter_buckets(&self) -> usize {
        (self.counter_keys as usize / WAYS).max(1)
    }

    fn client_words(&self) -> usize {
        CLIENT_HEAD + RECORD_WORDS * self.window as usize
    }

    /// Words after the header: the counter table, then the client table.
    fn words(&self) -> Option<usize> {
        let counters = self.counter_buckets().checked_mul(WAYS * COUNTER_WORDS)?;
        let clients = self
            .client_buckets()
            .checked_mul(WAYS)?
            .checked_mul(self.client_words())?;
        counters.checked_add(clients)
    }

    /// The size of the mapping these settings need, in bytes, or an error a person can act on
    /// when it would pass [`MAX_TABLE_BYTES`].
    pub fn table_bytes(&self) -> Result<usize, String> {
        let bytes = self
            .words()
            .and_then(|w| w.checked_mul(8))
            .and_then(|b| b.checked_add(WORDS_AT));
        match bytes {
            Some(b) if b <= MAX_TABLE_BYTES => Ok(b),
            _ => Err(format!(
                "the session table would take more than {} MiB (--dedup-clients {} x \
                 --dedup-window {} records of 24 bytes, plus --counter-keys {} x 80 bytes): \
                 lower one of them",
                MAX_TABLE_BYTES >> 20,
                self.clients,
                self.window,
                self.counter_keys
            )),
        }
    }
}

/// The statistics the table keeps, in the shared mapping so that fork children's and
/// workers' counts add up to the server's.
#[repr(C)]
#[derive(Debug, Default)]
struct Tallies {
    incr_executed: AtomicU64,
    replayed: AtomicU64,
    evicted: AtomicU64,
    too_old: AtomicU64,
    conflicts: AtomicU64,
    expired: AtomicU64,
    no_session: AtomicU64,
    keys_full: AtomicU64,
    lock_recoveries: AtomicU64,
    /// A gauge: slots holding a client. Kept rather than counted at report time, because
    /// counting would read (and so make resident) a page of every client slot, used or not.
    clients_live: AtomicU64,
}

/// The redo record of the one INCR being executed (see the module doc): armed, the word that
/// holds the counter and the value it gets, and where the reply record goes and what it says.
#[repr(C)]
#[derive(Debug, Default)]
struct Journal {
    armed: AtomicU64,
    counter: AtomicU64,
    value: AtomicU64,
    record: AtomicU64,
    seq: AtomicU64,
    fingerprint: AtomicU64,
}

/// The start of the mapping. Everything but the mutex is atomic, so any process may read a
/// statistic without the lock; the tables after it are plain `AtomicU64` words.
#[repr(C)]
struct Header {
    lock: UnsafeCell<libc::pthread_mutex_t>,
    /// The last-use clock: bumped, under the lock, on every use of a client.
    clock: AtomicU64,
    journal: Journal,
    tallies: Tallies,
}

/// Where the words begin: after the header, on a cache line of their own.
const WORDS_AT: usize = std::mem::size_of::<Header>().div_ceil(64) * 64;

/// What one connection remembers of its session: the client id its last accepted HELLO
/// named, and that session's generation. Per connection, never shared: the shared part is the
/// [`Store`].
///
/// Why the generation: the client id alone would let a connection outlive its session. If
/// the client is evicted and the same id says `HELLO 0` again (a client restarted with the
/// same id), the table holds a new, empty session under that id; an old connection retrying
/// a seq that ran in the first session would find no record there and run it again. With the
/// generation it is told `EXPIRED` instead.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    client: Option<u64>,
    generation: u64,
}

impl Session {
    /// The client this connection speaks for, once a HELLO was accepted.
    pub fn client(&self) -> Option<u64> {
        self.client
    }
}

/// The session statistics of the shutdown report (`sessions` in the stats file).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SessionReport {
    /// `--dedup on`.
    pub dedup: bool,
    /// The size of the shared mapping, fixed at start.
    pub table_bytes: u64,
    /// Clients the table can hold (`--dedup-clients` rounded down to whole buckets; 0 when
    /// dedup is off).
    pub clients_capacity: u64,
    /// Records kept per client (`--dedup-window`).
    pub window: u64,
    /// Counters the table can hold (`--counter-keys` rounded down to whole buckets).
    pub keys_capacity: u64,
    /// Clients in the table now.
    pub clients_live: u64,
    /// INCRs that ran (changed a counter).
    pub incr_executed: u64,
    /// INCRs answered from a record, not run.
    pub replayed: u64,
    /// Clients pushed out of a full bucket by a new one.
    pub evicted: u64,
    /// `TOOOLD` refusals.
    pub too_old: u64,
    /// `CONFLICT` refusals.
    pub conflicts: u64,
    /// `EXPIRED` refusals.
    pub expired: u64,
    /// `NOSESSION` refusals.
    pub no_session: u64,
    /// `KEYSFULL` refusals.
    pub keys_full: u64,
    /// Times a process took the lock from one that died holding it.
    pub lock_recoveries: u64,
}

/// The counters and the dedup records, in memory shared with every child forked after
/// [`Store::new`].
#[derive(Debug)]
pub struct Store {
    base: NonNull<u8>,
    bytes: usize,
    config: Config,
    /// Where the client slots begin, in words.
    clients_at: usize,
    /// Keyed at random once, before any fork, so every process hashes alike while a client
    /// cannot choose keys that all land in one bucket (as SipHash keys protect Rust's HashMap).
    hasher: RandomState,
}

// SAFETY: the mapping is only reached through `&Header` and `&[AtomicU64]`: atomics, and a
// pthread mutex, which is made for sharing between threads (and here, processes). The
// pointer is never handed out mutably.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

/// Held while the table is being read or changed; unlocks when dropped, even on a panic.
struct Locked<'a> {
    store: &'a Store,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this process holds the lock (a `Locked` exists only after a successful
        // lock), and the mutex lives as long as the store the guard borrows.
        unsafe { libc::pthread_mutex_unlock(self.store.header().lock.get()) };
    }
}

/// Which request a refusal is about, for its message.
struct Who {
    client: Option<u64>,
    seq: u64,
}

impl Who {
    fn refuse(&self, refusal: Refusal, why: &str) -> String {
        match self.client {
            Some(c) => refusal.message(&format!("client {c} seq {}: {why}", self.seq)),
            None => refusal.message(&format!("client none seq {}: {why}", self.seq)),
        }
    }
}

impl Store {
    /// Maps a zeroed table sized by `config` and sets up its process-shared robust mutex.
    /// Call it before the first `fork`, and before any thread that will use it starts.
    pub fn new(config: Config) -> io::Result<Store> {
        let bytes = config.table_bytes().map_err(io::Error::other)?;
        let len = NonZeroUsize::new(bytes).ok_or_else(|| io::Error::other("empty table"))?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object. The kernel zero-fills it,
        // and zero bytes are valid atomics (0: every slot empty, every statistic 0); the
        // mutex is initialised below before any use. mmap returns page-aligned memory, which
        // satisfies the header's and the words' alignment.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?
        .cast::<u8>();
        let store = Store {
            base,
            bytes,
            config,
            clients_at: config.counter_buckets() * WAYS * COUNTER_WORDS,
            hasher: RandomState::new(),
        };
        store.init_lock()?;
        crate::info!(
            "session table: {bytes} bytes (dedup {}, {} clients x {} records, {} counter keys)",
            if config.dedup { "on" } else { "off" },
            config.client_buckets() * WAYS,
            config.window,
            config.counter_buckets() * WAYS
        );
        Ok(store)
    }

    /// pthread_mutex_init(3) with PTHREAD_PROCESS_SHARED (the mutex is used from several
    /// processes through the shared mapping) and PTHREAD_MUTEX_ROBUST (a dead owner does not
    /// leave it locked forever).
    fn init_lock(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| match rc {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        };
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before the other calls use
        // it, and destroyed once the mutex is made. The mutex is in our mapping, which no
        // other process or thread can use yet (nothing has been forked or started).
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let set = check(libc::pthread_mutexattr_setpshared(
                attr.as_mut_ptr(),
                libc::PTHREAD_PROCESS_SHARED,
            ))
            .and_then(|()| {
                check(libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|()| {
                check(libc::pthread_mutex_init(
                    self.header().lock.get(),
                    attr.as_ptr(),
                ))
            });
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            set
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a `Header`, valid from creation (see `new`), and
        // lives as long as `self`.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn words(&self) -> &[AtomicU64] {
        let n = (self.bytes - WORDS_AT) / 8;
        // SAFETY: the words lie inside the mapping, after the header, 64-byte aligned; zero
        // bytes are valid `AtomicU64`s, and the slice lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(WORDS_AT).cast(), n) }
    }

    /// The settings the table was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The size of the shared mapping, in bytes.
    pub fn table_bytes(&self) -> usize {
        self.bytes
    }

    /// Takes the lock. After `EOWNERDEAD` (the last owner died holding it) it first finishes
    /// what the dead process was doing: the journal, if armed, is applied again.
    fn lock(&self) -> Result<Locked<'_>, String> {
        let lock = self.header().lock.get();
        // SAFETY: the mutex was initialised in `new` and lives in the mapping for as long as
        // `self`; pthread_mutex_lock(3) is made for concurrent callers.
        match unsafe { libc::pthread_mutex_lock(lock) } {
            0 => Ok(Locked { store: self }),
            libc::EOWNERDEAD => {
                // We hold the lock now, but the mutex stays "inconsistent" until we say it is
                // repaired: if we died too before that, the next process would recover again.
                let locked = Locked { store: self };
                self.roll_forward();
                // SAFETY: this thread holds the mutex, after EOWNERDEAD, as the call requires.
                unsafe { libc::pthread_mutex_consistent(lock) };
                self.header().tallies.lock_recoveries.fetch_add(1, Relaxed);
                crate::info!(
                    "session table: took the lock over from a process that died holding it"
                );
                Ok(locked)
            }
            // ENOTRECOVERABLE only if some recoverer unlocked without pthread_mutex_consistent,
            // which this module never does. Say so rather than block or crash.
            e => Err(format!(
                "session table unavailable: {}",
                io::Error::from_raw_os_error(e)
            )),
        }
    }

    /// Finishes an INCR that a dead process left half done (see the module doc).
    fn roll_forward(&self) {
        let j = &self.header().journal;
        if j.armed.load(Acquire) == 0 {
            return;
        }
        let (counter, record) = (j.counter.load(Relaxed), j.record.load(Relaxed));
        // An armed journal is whole (armed is written last), so these are in range; checked
        // anyway, since a bad index here would panic in every process that takes the lock.
        let words = self.words().len() as u64;
        if counter < words && (record == NO_RECORD || record + 2 < words) {
            self.apply(
                counter as usize,
                j.value.load(Relaxed),
                record,
                j.seq.load(Relaxed),
                j.fingerprint.load(Relaxed),
                Duration::ZERO,
            );
        } else {
            crate::info!("session table: a dead process's journal is out of range; dropped");
        }
        j.armed.store(0, Release);
    }

    /// Answers one session request (HELLO, INCR, GET): the reply, or an ERROR's message.
    /// Any other command is a caller's bug, answered with an error.
    pub fn answer(
        &self,
        session: &mut Session,
        request: &Request<'_>,
    ) -> Result<Reply<'static>, String> {
        match request.command {
            Command::Hello { client, sent, .. } => self.hello(session, client, sent),
            Command::Incr { by, low } => {
                self.incr(session, request.id.unwrap_or(0), by, low, request.payload)
            }
            Command::Get => self.get(request.payload),
            other => Err(format!("not a session command: {other:?}")),
        }
    }

    /// HELLO: open or resume `client`'s session on this connection.
    pub fn hello(
        &self,
        session: &mut Session,
        client: u64,
        sent: u64,
    ) -> Result<Reply<'static>, String> {
        // The codec refuses client 0 already; here too, because 0 marks an empty slot.
        if client == 0 {
            return Err("HELLO needs a client id other than 0".into());
        }
        if !self.config.dedup {
            // Accepted, and nothing kept: every retry will run again. That is the lesson.
            session.client = Some(client);
            return Ok(Reply::Word(hello::UNRECORDED));
        }
        let _locked = self.lock()?;
        if let Some(slot) = self.find_client(client) {
            if sent > 0 {
                self.touch(slot);
                session.client = Some(client);
                session.generation = self.words()[slot + GENERATION].load(Relaxed);
                return Ok(Reply::Word(hello::RESUMED));
            }
            // A known id that says it has used no seq is a new incarnation of the client (a
            // client restarted with the same id): the records are not its own. It gets a
            // fresh session in the same slot, and a connection still holding the old one is
            // told EXPIRED on its next INCR, never answered from these records or run again.
            self.reset_client(slot, client);
            session.client = Some(client);
            session.generation = self.words()[slot + GENERATION].load(Relaxed);
            return Ok(Reply::Word(hello::NEW));
        }
        if sent > 0 {
            session.client = None;
            self.bump(|t| &t.expired);
            return Err(Who {
                client: Some(client),
                seq: sent,
            }
            .refuse(
                Refusal::Expired,
                &format!(
                    "this server does not know the client, which says it has used {sent} \
                     sequence numbers: they were forgotten (evicted, or the server restarted) \
                     and may or may not have run; start a new session with a new client id"
                ),
            ));
        }
        let slot = self.new_client(client);
        session.client = Some(client);
        session.generation = self.words()[slot + GENERATION].load(Relaxed);
        Ok(Reply::Word(hello::NEW))
    }

    /// INCR: add `by` to the counter `key`, at most once per `(client, seq)` with dedup on.
    pub fn incr(
        &self,
        session: &Session,
        seq: u64,
        by: u64,
        low: u64,
        key: &[u8],
    ) -> Result<Reply<'static>, String> {
        let who = Who {
            client: session.client,
            seq,
        };
        // Seq 0 is "no session", like a plain Redis INCR: run it, keep nothing. So is every
        // INCR with --dedup off, retry or not.
        if seq == 0 || !self.config.dedup {
            let _locked = self.lock()?;
            return self.execute(&who, key, by, None).map(Reply::Value);
        }
        let Some(client) = session.client else {
            self.bump(|t| &t.no_session);
            return Err(who.refuse(
                Refusal::NoSession,
                "an INCR with a sequence number needs a session: send HELLO on this \
                 connection first (or seq 0 for no deduplication)",
            ));
        };
        let _locked = self.lock()?;
        let words = self.words();
        let Some(slot) = self
            .find_client(client)
            .filter(|&slot| words[slot + GENERATION].load(Relaxed) == session.generation)
        else {
            self.bump(|t| &t.expired);
            return Err(who.refuse(
                Refusal::Expired,
                "the session was evicted since this connection's HELLO (the table keeps the \
                 most recently used clients), or the client id opened a new session since: \
                 whether earlier seqs ran is unknown: start a new session with a new client id",
            ));
        };
        self.touch(slot);
        let words = self.words();
        // `low` only ever rises: a client's lowest unanswered seq cannot go back.
        let known_low = words[slot + 1].load(Relaxed);
        let low = low.max(known_low);
        if low > known_low {
            words[slot + 1].store(low, Relaxed);
        }
        if seq < low {
            self.bump(|t| &t.too_old);
            return Err(who.refuse(
                Refusal::TooOld,
                &format!(
                    "below the client's low {low}: its record was forgotten, and whether it \
                     ran cannot be told"
                ),
            ));
        }
        let record =
            slot + CLIENT_HEAD + RECORD_WORDS * (seq % u64::from(self.config.window)) as usize;
        let fingerprint = fingerprint(key, by);
        let recorded = words[record].load(Acquire);
        if recorded == seq {
            if words[record + 1].load(Relaxed) != fingerprint {
                self.bump(|t| &t.conflicts);
                return Err(who.refuse(
                    Refusal::Conflict,
                    "this seq ran before with another key or amount: a client bug, not a \
                     retry; not run",
                ));
            }
            self.bump(|t| &t.replayed);
            return Ok(Reply::Value(words[record + 2].load(Relaxed)));
        }
        if recorded > seq {
            self.bump(|t| &t.too_old);
            return Err(who.refuse(
                Refusal::TooOld,
                &format!(
                    "pushed out of the window of {} records by seq {recorded}: whether it ran \
                     cannot be told",
                    self.config.window
                ),
            ));
        }
        self.execute(&who, key, by, Some((record, seq, fingerprint)))
            .map(Reply::Value)
    }

    /// GET: the counter's value, 0 if it was never incremented.
    pub fn get(&self, key: &[u8]) -> Result<Reply<'static>, String> {
        let _locked = self.lock()?;
        let value = match self.find_counter(key, false) {
            Ok(Some(slot)) => self.words()[slot + COUNTER_WORDS - 1].load(Relaxed),
            _ => 0,
        };
        Ok(Reply::Value(value))
    }

    /// Runs an INCR, with the lock held: journal, counter, record (see the module doc).
    fn execute(
        &self,
        who: &Who,
        key: &[u8],
        by: u64,
        record: Option<(usize, u64, u64)>,
    ) -> Result<u64, String> {
        let slot = match self.find_counter(key, true) {
            Ok(Some(slot)) => slot,
            _ => {
                self.bump(|t| &t.keys_full);
                return Err(who.refuse(
                    Refusal::KeysFull,
                    &format!(
                        "no room for the counter '{}': its bucket of {WAYS} keys is full \
                         (--counter-keys {}); not run",
                        key.escape_ascii(),
                        self.config.counter_keys
                    ),
                ));
            }
        };
        let counter = slot + COUNTER_WORDS - 1;
        let old = self.words()[counter].load(Relaxed);
        let Some(new) = old.checked_add(by) else {
            return Err(format!(
                "INCR by {by} would overflow the counter '{}' (now {old}); not run",
                key.escape_ascii()
            ));
        };
        let (record, seq, fingerprint) = match record {
            Some((r, s, f)) => (r as u64, s, f),
            None => (NO_RECORD, 0, 0),
        };
        let j = &self.header().journal;
        j.counter.store(counter as u64, Relaxed);
        j.value.store(new, Relaxed);
        j.record.store(record, Relaxed);
        j.seq.store(seq, Relaxed);
        j.fingerprint.store(fingerprint, Relaxed);
        // Armed last: a journal seen armed is whole.
        j.armed.store(1, Release);
        self.apply(
            counter,
            new,
            record,
            seq,
            fingerprint,
            self.config.debug_lock_hold,
        );
        j.armed.store(0, Release);
        self.bump(|t| &t.incr_executed);
        Ok(new)
    }

    /// Writes an INCR's effects: the counter, then its record, the record's seq last. Only
    /// absolute values, so doing it again after a crash is harmless. Release stores keep the
    /// order (the compiler's and the CPU's) that a process killed half-way relies on.
    fn apply(
        &self,
        counter: usize,
        value: u64,
        record: u64,
        seq: u64,
        fingerprint: u64,
        hold: Duration,
    ) {
        let words = self.words();
        words[counter].store(value, Release);
        if !hold.is_zero() {
            // --debug-lock-hold-ns: the window a test kills a process in. The counter has
            // its new value and the record is not written: without the journal, a retry
            // after a kill here would run a second time.
            std::thread::sleep(hold);
        }
        if record != NO_RECORD {
            let r = record as usize;
            words[r + 1].store(fingerprint, Relaxed);
            words[r + 2].store(value, Relaxed);
            words[r].store(seq, Release);
        }
    }

    /// The slot of counter `key`, making one if `insert` and its bucket has room. `Err` when
    /// the bucket is full.
    fn find_counter(&self, key: &[u8], insert: bool) -> Result<Option<usize>, ()> {
        let packed = pack(key);
        let words = self.words();
        let bucket = (self.hasher.hash_one(key) as usize) % self.config.counter_buckets();
        let mut empty = None;
        for way in 0..WAYS {
            let slot = (bucket * WAYS + way) * COUNTER_WORDS;
            let len = words[slot].load(Acquire);
            if len == 0 {
                empty = empty.or(Some(slot));
            } else if len == key.len() as u64
                && packed
                    .iter()
                    .zip(&words[slot + 1..])
                    .all(|(k, w)| *k == w.load(Relaxed))
            {
                return Ok(Some(slot));
            }
        }
        if !insert {
            return Ok(None);
        }
        let slot = empty.ok_or(())?;
        for (i, k) in packed.iter().enumerate() {
            words[slot + 1 + i].store(*k, Relaxed);
        }
        words[slot + COUNTER_WORDS - 1].store(0, Relaxed);
        // The length last: a slot killed half-way through is still empty.
        words[slot].store(key.len() as u64, Release);
        Ok(Some(slot))
    }

    fn client_bucket(&self, client: u64) -> usize {
        (self.hasher.hash_one(client) as usize) % self.config.client_buckets()
    }

    fn client_slot(&self, bucket: usize, way: usize) -> usize {
        self.clients_at + (bucket * WAYS + way) * self.config.client_words()
    }

    /// The slot of `client`, if the table knows it.
    fn find_client(&self, client: u64) -> Option<usize> {
        let bucket = self.client_bucket(client);
        let words = self.words();
        (0..WAYS)
            .map(|way| self.client_slot(bucket, way))
            .find(|&slot| words[slot].load(Acquire) == client)
    }

    /// Marks a client used now, for least-recently-used eviction.
    fn touch(&self, slot: usize) {
        let now = self.header().clock.fetch_add(1, Relaxed) + 1;
        self.words()[slot + 2].store(now, Relaxed);
    }

    /// Gives `client` a slot in its bucket: an empty one, or the least recently used one's.
    /// Returns the slot.
    fn new_client(&self, client: u64) -> usize {
        let bucket = self.client_bucket(client);
        let words = self.words();
        let slots = (0..WAYS).map(|way| self.client_slot(bucket, way));
        let (slot, was_empty) = match slots.clone().find(|&s| words[s].load(Relaxed) == 0) {
            Some(empty) => (empty, true),
            None => {
                self.bump(|t| &t.evicted);
                let lru = slots
                    .min_by_key(|&s| words[s + 2].load(Relaxed))
                    .unwrap_or(self.client_slot(bucket, 0));
                (lru, false)
            }
        };
        self.reset_client(slot, client);
        if was_empty {
            self.bump(|t| &t.clients_live);
        }
        slot
    }

    /// Makes `slot` a new session of `client`: no records, `low` 0, a new generation.
    fn reset_client(&self, slot: usize, client: u64) {
        let words = self.words();
        // The id goes first (to "empty") and comes back last, so a process killed in between
        // leaves an empty slot, never a client with another client's records.
        words[slot].store(0, Release);
        for w in &words[slot + 1..slot + self.config.client_words()] {
            w.store(0, Relaxed);
        }
        self.touch(slot);
        // The clock only rises, so this generation was never given out before.
        let generation = words[slot + 2].load(Relaxed);
        words[slot + GENERATION].store(generation, Relaxed);
        words[slot].store(client, Release);
    }

    fn bump(&self, which: impl FnOnce(&Tallies) -> &AtomicU64) {
        which(&self.header().tallies).fetch_add(1, Relaxed);
    }

    /// The statistics, read without the lock (each is an atomic). The prefork parent reads
    /// them while workers run, and must never wait for a worker's lock.
    pub fn report(&self) -> SessionReport {
        let t = &self.header().tallies;
        let clients = self.config.client_buckets() * WAYS;
        SessionReport {
            dedup: self.config.dedup,
            table_bytes: self.bytes as u64,
            clients_capacity: clients as u64,
            window: u64::from(self.config.window),
            keys_capacity: (self.config.counter_buckets() * WAYS) as u64,
            clients_live: t.clients_live.load(Relaxed),
            incr_executed: t.incr_executed.load(Relaxed),
            replayed: t.replayed.load(Relaxed),
            evicted: t.evicted.load(Relaxed),
            too_old: t.too_old.load(Relaxed),
            conflicts: t.conflicts.load(Relaxed),
            expired: t.expired.load(Relaxed),
            no_session: t.no_session.load(Relaxed),
            keys_full: t.keys_full.load(Relaxed),
            lock_recoveries: t.lock_recoveries.load(Relaxed),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are those mmap returned; nothing borrowed from the
        // mapping outlives `self`. (Fork children leave with _exit and never get here; the
        // mapping goes with their address space.)
        let _ = unsafe { munmap(self.base.cast(), self.bytes) };
    }
}

/// A key as the eight words a counter slot stores, zero-padded. Callers pass keys of at most
/// [`MAX_KEY`] bytes (the codec refuses longer ones); anything past that is ignored.
fn pack(key: &[u8]) -> [u64; MAX_KEY / 8] {
    let mut bytes = [0u8; MAX_KEY];
    let n = key.len().min(MAX_KEY);
    bytes[..n].copy_from_slice(&key[..n]);
    let mut words = [0u64; MAX_KEY / 8];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    words
}

/// What tells a retry from a different request reusing its seq: FNV-1a over the key and the
/// amount. Not keyed: it only has to be the same in every process, and a client gains
/// nothing by colliding with its own requests.
fn fingerprint(key: &[u8], by: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.iter().chain(&by.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clients: u32, window: u32) -> Config {
        Config {
            dedup: true,
            clients,
            window,
            counter_keys: 64,
            debug_lock_hold: Duration::ZERO,
        }
    }

    fn value(r: Result<Reply, String>) -> u64 {
        match r {
            Ok(Reply::Value(v)) => v,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn refusal(r: Result<Reply, String>) -> Refusal {
        match r {
            Err(m) => Refusal::of_message(m.as_bytes()).unwrap_or_else(|| panic!("{m}")),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_retry_is_answered_from_its_record() {
        let store = Store::new(config(64, 4)).unwrap();
        let mut s = Session::default();
        assert!(store.hello(&mut s, 0, 0).is_err());
        assert_eq!(store.hello(&mut s, 7, 0), Ok(Reply::Word(hello::NEW)));
        assert_eq!(value(store.incr(&s, 1, 5, 1, b"k")), 5);
        assert_eq!(value(store.incr(&s, 2, 5, 1, b"k")), 10);
        assert_eq!(value(store.incr(&s, 2, 5, 1, b"k")), 10);
        assert_eq!(refusal(store.incr(&s, 2, 6, 1, b"k")), Refusal::Conflict);
        assert_eq!(value(store.get(b"k")), 10);
        // Seqs 3..=6 push seq 2 out of a window of 4.
        for seq in 3..=6 {
            value(store.incr(&s, seq, 1, 1, b"k"));
        }
        assert_eq!(refusal(store.incr(&s, 2, 5, 1, b"k")), Refusal::TooOld);
        // low 6 forgets seq 5, whose record is still there.
        assert_eq!(refusal(store.incr(&s, 5, 1, 6, b"k")), Refusal::TooOld);
        let r = store.report();
        assert_eq!((r.replayed, r.conflicts, r.too_old), (1, 1, 2));
        assert_eq!(r.incr_executed, 6);
    }

    #[test]
    fn a_full_bucket_evicts_its_least_recently_used_client() {
        // One bucket of eight.
        let store = Store::new(config(8, 4)).unwrap();
        let mut first = Session::default();
        store.hello(&mut first, 1, 0).unwrap();
        for c in 2..=9 {
            store.hello(&mut Session::default(), c, 0).unwrap();
        }
        assert_eq!(refusal(store.incr(&first, 1, 1, 1, b"k")), Refusal::Expired);
        assert_eq!(
            refusal(store.hello(&mut Session::default(), 1, 3)),
            Refusal::Expired
        );
        let r = store.report();
        assert_eq!((r.evicted, r.clients_live), (1, 8));
    }

    #[test]
    fn counters_are_never_evicted() {
        let store = Store::new(Config {
            counter_keys: 8,
            ..config(8, 4)
        })
        .unwrap();
        let s = Session::default();
        for k in 0..8u8 {
            value(store.incr(&s, 0, 1, 0, &[b'a' + k]));
        }
        assert_eq!(refusal(store.incr(&s, 0, 1, 0, b"z")), Refusal::KeysFull);
        assert_eq!(value(store.get(b"a")), 1);
        assert!(store.incr(&s, 0, u64::MAX, 0, b"a").is_err());
    }

    #[test]
    fn a_lock_held_by_a_dead_process_is_recovered_and_its_incr_finished() {
        let store = Store::new(config(64, 4)).unwrap();
        let mut s = Session::default();
        store.hello(&mut s, 7, 0).unwrap();
        let seq = 1;
        let record = {
            let slot = store.find_client(7).unwrap();
            slot + CLIENT_HEAD + RECORD_WORDS * (seq as usize % 4)
        };
        // SAFETY: the test harness is multi-threaded, so the child only takes the lock, writes
        // atomics in shared memory and calls _exit: no allocation, no other lock.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let locked = store.lock();
                // An INCR to 41 armed and half applied: the counter written, not the record.
                let counter = store.find_counter(b"k", true).unwrap().unwrap() + COUNTER_WORDS - 1;
                let j = &store.header().journal;
                j.counter.store(counter as u64, Relaxed);
                j.value.store(41, Relaxed);
                j.record.store(record as u64, Relaxed);
                j.seq.store(seq, Relaxed);
                j.fingerprint.store(fingerprint(b"k", 41), Relaxed);
                j.armed.store(1, Release);
                store.words()[counter].store(41, Release);
                std::mem::forget(locked);
                // SAFETY: _exit skips the parent's test harness destructors in the child.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(value(store.incr(&s, 1, 41, 1, b"k")), 41);
        assert_eq!(value(store.get(b"k")), 41);
        let r = store.report();
        assert_eq!((r.lock_recoveries, r.replayed, r.incr_executed), (1, 1, 0));
    }

    #[test]
    fn bounds() {
        assert!(config(MAX_CLIENTS, MAX_WINDOW).table_bytes().is_err());
        let small = config(8, 1).table_bytes().unwrap();
        assert!(small < 16 << 10, "{small}");
        let default = config(4096, 128).table_bytes().unwrap();
        assert!(default < 16 << 20, "{default}");
    }
}
