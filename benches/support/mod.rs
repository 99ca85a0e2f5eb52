//! What the interleaved benches share: the median, and rounds that time
//! each variant in turn (A B C, A B C, ...) so a slow spell of a shared
//! machine hits every variant alike.

#![allow(dead_code)]

use std::time::Instant;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `rounds` rounds; in each, `run(variant)` once per variant. Returns the
/// seconds each variant took, per round (`times[variant][round]`).
pub fn interleaved(rounds: usize, variants: usize, mut run: impl FnMut(usize)) -> Vec<Vec<f64>> {
    let mut times = vec![Vec::with_capacity(rounds); variants];
    for _ in 0..rounds {
        for (variant, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            run(variant);
            t.push(start.elapsed().as_secs_f64());
        }
    }
    times
}
