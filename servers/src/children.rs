//! Reaping, for the models that fork: collect exited children, and at shutdown wait for the
//! rest, then kill whoever outstays the grace period.
//!
//! A child that exits stays a *zombie* — its pid and exit status kept by the kernel — until its
//! parent collects it with `waitpid`. SIGCHLD says that children exited, but signals of one kind
//! coalesce: ten exits while one SIGCHLD is pending deliver one signal. So reaping is a loop of
//! `waitpid(-1, WNOHANG)` until it reports that no exited child is left.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::signals::SignalPipe;

/// A parent's record of its children.
pub trait Family {
    /// The children not yet reaped.
    fn live(&self) -> Vec<Pid>;
    /// `pid` was reaped with `status`.
    fn exited(&mut self, pid: Pid, status: WaitStatus);
}

/// How many `waitpid` calls to make per SIGCHLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaping {
    /// Until no exited child is left: the correct way.
    All,
    /// Exactly one: the classic bug (children whose signals coalesced stay zombies).
    One,
}

/// waitpid(-1, WNOHANG) until no exited child is left (or once, with [`Reaping::One`]),
/// reporting each one to `family`.
pub fn reap(family: &mut impl Family, how: Reaping) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            // Children exist but none has exited.
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    family.exited(pid, status);
                }
            }
            // waitpid(2): EINTR if a signal lands mid-call; try again.
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all.
            Err(_) => return,
        }
        if how == Reaping::One {
            return;
        }
    }
}

/// At shutdown, once the children have been told to stop: reap them as they exit, for up to
/// `grace`; then SIGKILL the ones still running and reap those too, so that no child, zombie
/// or orphan outlives the parent. Returns how many had to be killed.
pub fn reap_all(family: &mut impl Family, signals: &SignalPipe, grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    reap(family, Reaping::All);
    while !family.live().is_empty() && Instant::now() < deadline {
        // Sleep until SIGCHLD (the self-pipe) or 50 ms, whichever comes first.
        let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
        signals.take();
        reap(family, Reaping::All);
    }
    let stragglers = family.live();
    for &pid in &stragglers {
        crate::info!("child {pid} still running after the grace period; killing it");
        let _ = kill(pid, Signal::SIGKILL);
    }
    for &pid in &stragglers {
        // waitpid(2) for this child, blocking: it was just sent SIGKILL.
        loop {
            match waitpid(pid, None) {
                Err(Errno::EINTR) => continue,
                Ok(status) => family.exited(pid, status),
                Err(_) => {}
            }
            break;
        }
    }
    stragglers.len()
}
