//! A seccomp filter that takes io_uring away from one child process, as Docker's default
//! profile and `kernel.io_uring_disabled=2` do: shared by the tests of server-uring and of
//! loadgen's `--engine uring`, which must each say so in one line and exit 2.

use std::io;

/// Installs a seccomp filter that fails io_uring_setup(2) with `EPERM` (BPF: load the system
/// call number; if it is io_uring_setup's, return ERRNO(EPERM); else ALLOW). The number is
/// 425 on every architecture: io_uring came after the system call tables were unified.
pub fn refuse_io_uring_setup() -> io::Result<()> {
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        // A = seccomp_data.nr, the first field.
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // if A == io_uring_setup: the next statement, else skip it.
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl(2) with PR_SET_NO_NEW_PRIVS takes integers only. (Without it, an
    // unprivileged process may not install a filter.)
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `program` and the filter it points to are live locals for the whole call, and
    // the kernel copies the filter before it returns.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
