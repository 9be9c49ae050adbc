//! Initial conditions: seeded, reproducible, checked.
//!
//! [`plummer`] draws a Plummer sphere in standard N-body units (G = 1, M = 1,
//! E = −1/4; Aarseth, Hénon & Wielen 1974), [`uniform_ball`] a cold uniform ball.
//! Both use a small splitmix64 generator so a seed gives the same bodies on every
//! machine, and both centre the system (zero centre of mass and momentum).

use crate::error::{Error, Result};

/// Bodies: positions with masses as float4 `(x, y, z, m)` (the kernel's layout)
/// and velocities as `(vx, vy, vz)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bodies {
    /// `4 n` floats: x, y, z, mass per body.
    pub pos: Vec<f32>,
    /// `3 n` floats: vx, vy, vz per body.
    pub vel: Vec<f32>,
}

impl Bodies {
    /// Bodies from positions+masses (`4 n`) and velocities (`3 n`), checked: at least
    /// one body, matching lengths, every value finite and every mass positive
    /// (the error names the first bad body).
    pub fn new(pos: Vec<f32>, vel: Vec<f32>) -> Result<Bodies> {
        let b = Bodies { pos, vel };
        b.validate()?;
        Ok(b)
    }

    /// Number of bodies.
    pub fn len(&self) -> usize {
        self.pos.len() / 4
    }

    /// Whether there are no bodies.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check the invariants of [`Bodies::new`].
    pub fn validate(&self) -> Result<()> {
        if self.pos.is_empty() {
            return Err(Error::InvalidInput(
                "an N-body system needs at least one body (got 0)".into(),
            ));
        }
        if !self.pos.len().is_multiple_of(4) || self.vel.len() * 4 != self.pos.len() * 3 {
            return Err(Error::InvalidInput(format!(
                "bodies: {} position floats (need 4 per body) and {} velocity floats (need 3 per body) do not match",
                self.pos.len(),
                self.vel.len()
            )));
        }
        const POS: [&str; 4] = ["x", "y", "z", "mass"];
        const VEL: [&str; 3] = ["vx", "vy", "vz"];
        for (i, (p, v)) in self.pos.chunks_exact(4).zip(self.vel.chunks_exact(3)).enumerate() {
            for (k, x) in p.iter().enumerate() {
                if !x.is_finite() {
                    return Err(Error::InvalidInput(format!("body {i}: {} is {x} (not finite)", POS[k])));
                }
            }
            if p[3] <= 0.0 {
                return Err(Error::InvalidInput(format!("body {i}: mass {} is not positive", p[3])));
            }
            for (k, x) in v.iter().enumerate() {
                if !x.is_finite() {
                    return Err(Error::InvalidInput(format!("body {i}: {} is {x} (not finite)", VEL[k])));
                }
            }
        }
        Ok(())
    }
}

/// splitmix64, uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A random direction scaled to `r`.
    fn sphere(&mut self, r: f64) -> [f64; 3] {
        let z = 2.0 * self.next() - 1.0;
        let phi = 2.0 * std::f64::consts::PI * self.next();
        let s = (1.0 - z * z).max(0.0).sqrt();
        [r * s * phi.cos(), r * s * phi.sin(), r * z]
    }
}

fn check_n(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidInput(
            "an N-body system needs at least one body (got 0)".into(),
        ));
    }
    if n > u32::MAX as usize / 4 {
        return Err(Error::InvalidInput(format!(
            "{n} bodies exceed the kernel's limit of {} (u32 indices of float4)",
            u32::MAX / 4
        )));
    }
    Ok(())
}

/// Shift to zero centre of mass and zero total momentum, then pack as f32.
fn finish(pos: Vec<[f64; 3]>, vel: Vec<[f64; 3]>, m: f64) -> Result<Bodies> {
    let n = pos.len() as f64;
    let mut cp = [0f64; 3];
    let mut cv = [0f64; 3];
    for (p, v) in pos.iter().zip(&vel) {
        for k in 0..3 {
            cp[k] += p[k] / n;
            cv[k] += v[k] / n;
        }
    }
    let mut bp = Vec::with_capacity(pos.len() * 4);
    let mut bv = Vec::with_capacity(pos.len() * 3);
    for (p, v) in pos.iter().zip(&vel) {
        bp.extend_from_slice(&[
            (p[0] - cp[0]) as f32,
            (p[1] - cp[1]) as f32,
            (p[2] - cp[2]) as f32,
            m as f32,
        ]);
        bv.extend_from_slice(&[(v[0] - cv[0]) as f32, (v[1] - cv[1]) as f32, (v[2] - cv[2]) as f32]);
    }
    Bodies::new(bp, bv)
}

/// A Plummer sphere of `n` equal-mass bodies in N-body units (G = M = 1,
/// E = −1/4, scale radius 3π/16), radii capped at 20 scale radii.
pub fn plummer(n: usize, seed: u64) -> Result<Bodies> {
    check_n(n)?;
    let mut rng = Rng(seed);
    let a = 3.0 * std::f64::consts::PI / 16.0;
    let mut pos = Vec::with_capacity(n);
    let mut vel = Vec::with_capacity(n);
    while pos.len() < n {
        // Radius from the inverse cumulative mass m(r) = r³ / (1 + r²)^{3/2}.
        let m = rng.next().max(1e-10);
        let r = 1.0 / (m.powf(-2.0 / 3.0) - 1.0).sqrt();
        if !r.is_finite() || r > 20.0 {
            continue;
        }
        // Speed as a fraction q of the escape speed: rejection on g(q) = q²(1 − q²)^{7/2}.
        let q = loop {
            let q = rng.next();
            let g = rng.next() * 0.1;
            if g < q * q * (1.0 - q * q).powf(3.5) {
                break q;
            }
        };
        let v = q * std::f64::consts::SQRT_2 * (1.0 + r * r).powf(-0.25);
        // Scale lengths by a and speeds by 1/√a (units of E = −1/4).
        pos.push(rng.sphere(r * a));
        vel.push(rng.sphere(v / a.sqrt()));
    }
    finish(pos, vel, 1.0 / n as f64)
}

/// A cold uniform ball of radius 1 with `n` equal-mass bodies (total mass 1) and
/// small random velocities (virial ratio about 0.1).
pub fn uniform_ball(n: usize, seed: u64) -> Result<Bodies> {
    check_n(n)?;
    let mut rng = Rng(seed);
    let mut pos = Vec::with_capacity(n);
    let mut vel = Vec::with_capacity(n);
    // |W| = 3/5 for a uniform unit ball of mass 1. Velocities uniform in a ball of
    // radius σ have <v²> = 3σ²/5, so K = 3σ²/10 and K = 0.1 |W| gives σ² = 0.2.
    let sigma = 0.2f64.sqrt();
    while pos.len() < n {
        let p = [2.0 * rng.next() - 1.0, 2.0 * rng.next() - 1.0, 2.0 * rng.next() - 1.0];
        if p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > 1.0 {
            continue;
        }
        pos.push(p);
        let speed = sigma * rng.next().cbrt();
        vel.push(rng.sphere(speed));
    }
    finish(pos, vel, 1.0 / n as f64)
}
