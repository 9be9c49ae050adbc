//! Shared helpers of the bench suites: timing, medians, the BENCH line format.

use std::time::{Duration, Instant};

/// Median of `reps` runs of `f` (after one warm-up run).
pub fn median_time<E>(reps: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Duration, E> {
    f()?;
    let mut t = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed());
    }
    t.sort();
    Ok(t[t.len() / 2])
}

/// Median of a list of samples.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Print one `BENCH` line. `reference` is measured in the same run.
pub fn bench_line(name: &str, value: f64, unit: &str, reference: Option<f64>) {
    match reference {
        Some(r) => println!(
            "BENCH {name} value={value:.4} unit={unit} ref={r:.4} ratio={:.4}",
            value / r
        ),
        None => println!("BENCH {name} value={value:.4} unit={unit}"),
    }
}

/// Whether `target` is met, as a word for the table.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
