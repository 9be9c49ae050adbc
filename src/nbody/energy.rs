//! Total energy of an N-body system in float64: the integrator's accuracy check.

use super::Bodies;

/// Kinetic, potential and total energy (G = 1, potential softened with ε).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Energy {
    /// Σ ½ m v².
    pub kinetic: f64,
    /// −Σ_{i<j} m_i m_j / √(r_ij² + ε²).
    pub potential: f64,
}

impl Energy {
    /// Kinetic + potential.
    pub fn total(&self) -> f64 {
        self.kinetic + self.potential
    }

    /// Relative change of the total from `before` to `self`: |E₁ − E₀| / |E₀|.
    pub fn drift_from(&self, before: &Energy) -> f64 {
        (self.total() - before.total()).abs() / before.total().abs()
    }
}

/// The total energy, O(n²) in float64, spread over the host's cores.
pub fn total_energy(b: &Bodies, eps: f32) -> Energy {
    let n = b.len();
    let eps2 = eps as f64 * eps as f64;
    let kinetic: f64 = b
        .pos
        .chunks_exact(4)
        .zip(b.vel.chunks_exact(3))
        .map(|(p, v)| 0.5 * p[3] as f64 * v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>())
        .sum();
    let p: Vec<[f64; 4]> = b
        .pos
        .chunks_exact(4)
        .map(|p| [p[0] as f64, p[1] as f64, p[2] as f64, p[3] as f64])
        .collect();
    // Row i pairs with j > i: rows are dealt round-robin so threads get equal work.
    let row = |i: usize| -> f64 {
        let a = p[i];
        let mut s = 0.0;
        for q in &p[i + 1..] {
            let d = [q[0] - a[0], q[1] - a[1], q[2] - a[2]];
            s += q[3] / (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + eps2).sqrt();
        }
        a[3] * s
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n.max(1));
    let potential = if threads <= 1 || n < 512 {
        -(0..n).map(row).sum::<f64>()
    } else {
        let row = &row;
        -std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || (t..n).step_by(threads).map(row).sum::<f64>()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(f64::NAN)).sum::<f64>()
        })
    };
    Energy { kinetic, potential }
}
