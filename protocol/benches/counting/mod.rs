//! The benches' cases counted in instructions instead of timed: what the CI's instruction gate
//! (`scripts/instr-gate.py --codec`) runs under Callgrind.
//!
//! Criterion times a case for as many iterations as fit in its measurement window, so the
//! count of what ran changes with the machine's speed; a gate that compares counts needs a
//! fixed amount of work. With `ECHOLAB_COUNT_ITERS=N` in its environment a bench binary skips
//! criterion and runs each of its cases, the very closures it would time, exactly 1, N and 2N
//! times, each run a call of [`count_case`], and prints `case NAME` after each case. Under
//! `valgrind --tool=callgrind --dump-after='*count_case*'` every call ends a dump, so the
//! third and second dumps of a case differ by N iterations and nothing else: the set-up
//! before the case, the first call's one-time costs (a buffer's first growth, a schema parsed
//! once) and the printing between cases fall in other dumps. Instructions per iteration are
//! (third - second) / N, exact to the instruction for a deterministic codec (iai-callgrind's
//! idea, without its runner).

/// The variable that switches a bench binary from timing to counting.
const VAR: &str = "ECHOLAB_COUNT_ITERS";

/// N when counting was asked for; `None` (criterion runs) otherwise. A value that is not a
/// positive number is a usage error: a gate that silently timed instead would count nothing.
pub fn iterations() -> Option<u64> {
    let v = std::env::var(VAR).ok()?;
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!("{VAR}={v:?}: expected a positive number of iterations");
            std::process::exit(2);
        }
    }
}

/// Runs `f` `iters` times. Never inlined: Callgrind dumps its counters when this returns.
#[inline(never)]
pub fn count_case(iters: u64, f: &mut dyn FnMut()) {
    for _ in 0..iters {
        f();
    }
}

/// One case: 1, `iters` and 2 × `iters` iterations, then its name for the gate to read.
pub fn case(name: &str, iters: u64, mut f: impl FnMut()) {
    count_case(1, &mut f);
    count_case(iters, &mut f);
    count_case(2 * iters, &mut f);
    println!("case {name}");
}
