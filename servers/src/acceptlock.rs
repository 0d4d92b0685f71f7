//! prefork's accept lock: an `fcntl` write lock on a temporary file, taken by one worker at a
//! time around accepting. Blocking workers wait for it (UNP's `my_lock_wait`); event-loop
//! workers only try it, once a turn, and watch the listener while they hold it (nginx's
//! `accept_mutex`).
//!
//! Why `fcntl` and not `flock`: an `flock` lock belongs to the *open file description*, and
//! `fork` shares descriptions between parent and children, so every worker would hold "the
//! same" lock and none would ever wait. `fcntl` record locks belong to the *process*, so one
//! descriptor inherited by all workers gives one lock each can take in turn. The file is
//! unlinked at once: only the descriptor is needed.
//!
//! Why not a mutex in the shared memory, as nginx's `ngx_shmtx` (an atomic in shared memory)
//! is: the kernel releases a process's `fcntl` locks when it dies, however it dies, so a worker
//! SIGKILLed while holding the lock costs the others nothing; a lock word in shared memory
//! would need nginx's check of the dead holder's pid (or a robust pthread mutex) to be freed.
//! The price is a system call per attempt, which an event loop pays once per turn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg};

/// The lock: one descriptor, inherited by every worker.
#[derive(Debug)]
pub struct AcceptLock {
    file: OwnedFd,
}

impl AcceptLock {
    /// A new lock on a fresh, already unlinked temporary file.
    pub fn new() -> io::Result<AcceptLock> {
        let template = std::env::temp_dir().join("echolab-prefork-lock-XXXXXX");
        let (fd, path) = nix::unistd::mkstemp(&template)?;
        // SAFETY: mkstemp just returned this descriptor, open and owned by nobody else.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::unistd::unlink(&path);
        Ok(AcceptLock { file })
    }

    fn set(&self, kind: libc::c_int, wait: bool) -> nix::Result<()> {
        let lock = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0, // the whole file
            l_pid: 0,
        };
        let arg = if wait {
            FcntlArg::F_SETLKW(&lock)
        } else {
            FcntlArg::F_SETLK(&lock)
        };
        fcntl(self.file.as_raw_fd(), arg).map(drop)
    }

    /// fcntl(F_SETLKW): blocks until this worker holds the lock; EINTR on a signal.
    pub fn acquire(&self) -> nix::Result<()> {
        self.set(libc::F_WRLCK, true)
    }

    /// fcntl(F_SETLK): takes the lock if no other worker holds it, without waiting. False
    /// when another holds it (EAGAIN or EACCES), or on any failure: the caller tries again
    /// on a later turn either way.
    pub fn try_acquire(&self) -> bool {
        self.set(libc::F_WRLCK, false).is_ok()
    }

    /// Gives the lock up.
    pub fn release(&self) {
        let _ = self.set(libc::F_UNLCK, false);
    }
}
