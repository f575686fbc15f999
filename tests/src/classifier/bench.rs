//! The measuring loop of the classifier benchmarks: each case run with
//! `repeat` through BPF_PROG_TEST_RUN on every harness, rounds interleaved
//! across harnesses and reversed every other round, so that drift hits
//! them alike.

use super::{allow_as_next, Classifier, Hook};
use anyhow::{ensure, Result};

/// One measured case: `None` runs the `noop` program (the floor).
pub struct Case {
    pub name: &'static str,
    pub hook: Option<Hook>,
    pub frame: Vec<u8>,
    /// The verdict every harness must give.
    pub want: u32,
    /// `__sk_buff.ingress_ifindex`: the device the frame came in on before
    /// it was forwarded, 0 for a frame the host sent.
    pub forwarded_from: u32,
}

impl Case {
    /// Runs the case's classifier `repeat` times on `c`: its verdict and
    /// the average ns per run. The floor case (no hook) runs `noop`.
    pub fn run(&self, c: &Classifier, repeat: u32) -> Result<(u32, u128)> {
        match self.hook {
            Some(hook) if self.forwarded_from != 0 => {
                c.run_forwarded_repeat(hook, &self.frame, self.forwarded_from, repeat)
            }
            Some(hook) => c.run_repeat(hook, &self.frame, repeat),
            None => c.run_noop(&self.frame, repeat),
        }
    }
}

/// Best ns per packet of every case on every harness
/// (`best[harness][case]`). The floor is always the first harness's
/// `noop`.
pub fn measure(
    harnesses: &[&Classifier],
    cases: &[Case],
    rounds: usize,
    repeat: u32,
) -> Result<Vec<Vec<u128>>> {
    let mut best = vec![vec![u128::MAX; cases.len()]; harnesses.len()];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for i in order {
            let case = &cases[i];
            for (h, c) in harnesses.iter().enumerate() {
                // The floor is the first harness's `noop` for all.
                let on = if case.hook.is_some() { c } else { harnesses[0] };
                let (v, ns) = case.run(on, repeat)?;
                ensure!(
                    allow_as_next(v) == case.want,
                    "{}: verdict {v}, expected {}",
                    case.name,
                    case.want
                );
                best[h][i] = best[h][i].min(ns);
            }
        }
    }
    Ok(best)
}
