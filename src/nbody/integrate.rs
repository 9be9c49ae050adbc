//! Leapfrog (kick–drift–kick) integration with pluggable accelerations.
//!
//! [`Simulation::run`] advances the bodies `steps` times by `dt`:
//!
//! ```text
//! v += a(x) dt/2;  x += v dt;  v += a(x) dt/2
//! ```
//!
//! with one acceleration evaluation per step (the last one is reused as the next
//! step's first kick). Accelerations come from an [`Accelerations`] source: the
//! single-device [`DeviceAccelerations`] (positions uploaded each step, the kernel
//! launched, accelerations read back, buffers kept across steps), or any closure
//! `FnMut(&[f32], &mut [f32]) -> Result<()>` taking `4 n` position floats and
//! filling `4 n` acceleration floats.

use std::time::{Duration, Instant};

use super::{Bodies, Energy, total_energy};
use crate::buffer::Buffer;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::kernels::{FLOPS_PER_INTERACTION, nbody, nbody_launch_config};
use crate::launch::{Arg, LaunchConfig};

/// A source of accelerations: fills `acc` (float4 per body, `w` ignored) for the
/// positions+masses `pos` (float4 per body) of all bodies.
pub trait Accelerations {
    /// Compute accelerations; `acc.len() == pos.len()`.
    fn accelerations(&mut self, pos: &[f32], acc: &mut [f32]) -> Result<()>;
}

impl<F> Accelerations for F
where
    F: FnMut(&[f32], &mut [f32]) -> Result<()>,
{
    fn accelerations(&mut self, pos: &[f32], acc: &mut [f32]) -> Result<()> {
        self(pos, acc)
    }
}

/// Accelerations from the `nbody` kernel on one device. Buffers are allocated once
/// for `n` bodies and reused every step.
pub struct DeviceAccelerations {
    device: Device,
    kernel: Kernel,
    pos: Buffer<f32>,
    acc: Buffer<f32>,
    n: usize,
    eps2: f32,
    cfg: LaunchConfig,
}

impl std::fmt::Debug for DeviceAccelerations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceAccelerations({} bodies on {})", self.n, self.device.label())
    }
}

impl DeviceAccelerations {
    /// Build the kernel on `device` and allocate buffers for `n` bodies with
    /// softening length `eps`.
    pub fn new(device: &Device, n: usize, eps: f32) -> Result<Self> {
        Self::with_kernel(device, nbody()?, n, eps)
    }

    /// As [`DeviceAccelerations::new`] with a given `nbody` kernel (for example one
    /// with a forced CPU path).
    pub fn with_kernel(device: &Device, kernel: Kernel, n: usize, eps: f32) -> Result<Self> {
        if n == 0 || n > u32::MAX as usize / 4 {
            return Err(Error::InvalidInput(format!(
                "DeviceAccelerations: {n} bodies; need 1..={}",
                u32::MAX / 4
            )));
        }
        check_eps(eps)?;
        device.build(&kernel)?;
        Ok(DeviceAccelerations {
            device: device.clone(),
            pos: device.alloc(4 * n)?,
            acc: device.alloc(4 * n)?,
            kernel,
            n,
            eps2: eps * eps,
            cfg: nbody_launch_config(n, device.info()),
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl Accelerations for DeviceAccelerations {
    fn accelerations(&mut self, pos: &[f32], acc: &mut [f32]) -> Result<()> {
        if pos.len() != 4 * self.n || acc.len() != 4 * self.n {
            return Err(Error::LengthMismatch {
                what: format!(
                    "N-body accelerations on {} (pos {} floats, acc)",
                    self.device.label(),
                    pos.len()
                ),
                host: acc.len(),
                buffer: 4 * self.n,
            });
        }
        self.pos.write(pos)?;
        let n = self.n as u32;
        self.device.launch(
            &self.kernel,
            &self.cfg,
            &[
                Arg::input(&self.pos),
                Arg::output(&mut self.acc),
                n.into(),
                self.eps2.into(),
                0u32.into(),
                n.into(),
            ],
        )?;
        self.acc.read(acc)
    }
}

/// Parameters of a simulation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    /// Number of bodies (for generated initial conditions).
    pub bodies: usize,
    /// Leapfrog steps per [`Simulation::run`].
    pub steps: usize,
    /// Timestep (positive, finite).
    pub dt: f32,
    /// Softening length ε (positive, finite); the kernel gets ε².
    pub eps: f32,
    /// Seed of the initial conditions.
    pub seed: u64,
}

impl Default for SimConfig {
    /// 4096 bodies, 50 steps of dt = 0.01, ε = 0.02, seed 1.
    fn default() -> Self {
        SimConfig {
            bodies: 4096,
            steps: 50,
            dt: 0.01,
            eps: 0.02,
            seed: 1,
        }
    }
}

fn check_eps(eps: f32) -> Result<()> {
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "softening length eps = {eps} must be positive and finite"
        )));
    }
    Ok(())
}

impl SimConfig {
    /// Check `dt` and `eps` (and `bodies` > 0).
    pub fn validate(&self) -> Result<()> {
        if self.bodies == 0 {
            return Err(Error::InvalidInput(
                "an N-body system needs at least one body (got 0)".into(),
            ));
        }
        if !(self.dt > 0.0 && self.dt.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "timestep dt = {} must be positive and finite",
                self.dt
            )));
        }
        check_eps(self.eps)
    }
}

/// What one [`Simulation::run`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Bodies.
    pub bodies: usize,
    /// Steps taken.
    pub steps: usize,
    /// Acceleration evaluations (steps + 1).
    pub evaluations: usize,
    /// Energy before the first step.
    pub energy_before: Energy,
    /// Energy after the last step.
    pub energy_after: Energy,
    /// Wall time of the whole run (without the energy computations).
    pub wall: Duration,
    /// Time spent in acceleration evaluations (transfers and kernels included).
    pub accel_time: Duration,
}

impl RunReport {
    /// Body–body interactions computed (`n² × evaluations`).
    pub fn interactions(&self) -> f64 {
        (self.bodies as f64).powi(2) * self.evaluations as f64
    }
    /// Interactions per second over the acceleration time.
    pub fn interactions_per_sec(&self) -> f64 {
        self.interactions() / self.accel_time.as_secs_f64().max(1e-12)
    }
    /// GFLOP/s at 20 flops per interaction, over the acceleration time.
    pub fn gflops(&self) -> f64 {
        self.interactions_per_sec() * FLOPS_PER_INTERACTION / 1e9
    }
    /// Relative total-energy drift |E₁ − E₀| / |E₀|.
    pub fn energy_drift(&self) -> f64 {
        self.energy_after.drift_from(&self.energy_before)
    }
}

/// A leapfrog N-body simulation.
#[derive(Clone, Debug)]
pub struct Simulation {
    config: SimConfig,
    bodies: Bodies,
    acc: Vec<f32>,
}

impl Simulation {
    /// A Plummer sphere of `config.bodies` bodies from `config.seed`.
    pub fn new(config: SimConfig) -> Result<Simulation> {
        config.validate()?;
        let bodies = super::plummer(config.bodies, config.seed)?;
        Simulation::from_bodies(bodies, config)
    }

    /// A simulation of given bodies (`config.bodies` and `seed` are taken from them
    /// and ignored). Non-finite values are rejected with the body's index.
    pub fn from_bodies(bodies: Bodies, mut config: SimConfig) -> Result<Simulation> {
        bodies.validate()?;
        config.bodies = bodies.len();
        config.validate()?;
        Ok(Simulation {
            acc: vec![0.0; bodies.pos.len()],
            config,
            bodies,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The bodies now.
    pub fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    /// Total energy now (float64).
    pub fn energy(&self) -> Energy {
        total_energy(&self.bodies, self.config.eps)
    }

    /// Advance `config.steps` leapfrog steps, calling `progress(step)` after each.
    /// On error the bodies are left at the last completed step.
    pub fn run(&mut self, accel: &mut dyn Accelerations, mut progress: impl FnMut(usize)) -> Result<RunReport> {
        let energy_before = self.energy();
        let n = self.bodies.len();
        let dt = self.config.dt;
        let half = 0.5 * dt;
        let t0 = Instant::now();
        let mut accel_time = Duration::ZERO;
        let mut eval = |pos: &[f32], acc: &mut [f32]| -> Result<()> {
            let s = Instant::now();
            accel.accelerations(pos, acc)?;
            accel_time += s.elapsed();
            if let Some(i) = acc.iter().position(|a| !a.is_finite()) {
                return Err(Error::InvalidInput(format!(
                    "acceleration of body {} is {} (not finite); check eps and the positions",
                    i / 4,
                    acc[i]
                )));
            }
            Ok(())
        };
        eval(&self.bodies.pos, &mut self.acc)?;
        let mut pos = self.bodies.pos.clone();
        let mut vel = self.bodies.vel.clone();
        for step in 0..self.config.steps {
            for i in 0..n {
                for k in 0..3 {
                    vel[3 * i + k] += half * self.acc[4 * i + k];
                    pos[4 * i + k] += dt * vel[3 * i + k];
                }
            }
            eval(&pos, &mut self.acc)?;
            for i in 0..n {
                for k in 0..3 {
                    vel[3 * i + k] += half * self.acc[4 * i + k];
                }
            }
            self.bodies.pos.copy_from_slice(&pos);
            self.bodies.vel.copy_from_slice(&vel);
            progress(step + 1);
        }
        let wall = t0.elapsed();
        Ok(RunReport {
            bodies: n,
            steps: self.config.steps,
            evaluations: self.config.steps + 1,
            energy_before,
            energy_after: self.energy(),
            wall,
            accel_time,
        })
    }
}

/// Accelerations from the `nbody` kernel split across several devices by the
/// [`Scheduler`](crate::schedule::Scheduler): positions are broadcast to every
/// device, each device computes the accelerations of the bodies it is given.
/// Items per device are summed over all steps for the final report.
pub struct SplitAccelerations {
    scheduler: crate::schedule::Scheduler,
    kernel: Kernel,
    n: usize,
    eps2: f32,
    /// Per device label: items computed, chunks, failures seen, over all steps.
    totals: Vec<(String, usize, usize)>,
    failures: Vec<String>,
    last: Option<crate::schedule::SplitReport>,
}

impl std::fmt::Debug for SplitAccelerations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SplitAccelerations({} bodies over {:?})",
            self.n,
            self.scheduler.labels()
        )
    }
}

impl SplitAccelerations {
    /// Split the accelerations of `n` bodies with softening `eps` over `devices`
    /// (those that cannot run the kernel are left out by the scheduler).
    pub fn new(devices: &[Device], n: usize, eps: f32) -> Result<Self> {
        if n == 0 || n > u32::MAX as usize / 4 {
            return Err(Error::InvalidInput(format!(
                "SplitAccelerations: {n} bodies; need 1..={}",
                u32::MAX / 4
            )));
        }
        check_eps(eps)?;
        let scheduler = crate::schedule::Scheduler::new(devices)?.max_block(crate::kernels::NBODY_MAX_BLOCK);
        Ok(SplitAccelerations {
            scheduler,
            kernel: nbody()?,
            n,
            eps2: eps * eps,
            totals: Vec::new(),
            failures: Vec::new(),
            last: None,
        })
    }

    /// Items (bodies × steps) and chunks per device over every step so far.
    pub fn totals(&self) -> &[(String, usize, usize)] {
        &self.totals
    }

    /// Device failures recovered from, over every step so far.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The split report of the most recent step.
    pub fn last_report(&self) -> Option<&crate::schedule::SplitReport> {
        self.last.as_ref()
    }
}

impl Accelerations for SplitAccelerations {
    fn accelerations(&mut self, pos: &[f32], acc: &mut [f32]) -> Result<()> {
        use crate::schedule::HostArg;
        let n = self.n as u32;
        let report = self.scheduler.run(
            &self.kernel,
            self.n,
            &mut [
                HostArg::input(pos),
                HostArg::output(acc),
                HostArg::scalar(n),
                HostArg::scalar(self.eps2),
            ],
        )?;
        for s in &report.devices {
            match self.totals.iter_mut().find(|t| t.0 == s.device) {
                Some(t) => {
                    t.1 += s.items;
                    t.2 += s.chunks;
                }
                None => self.totals.push((s.device.clone(), s.items, s.chunks)),
            }
        }
        self.failures
            .extend(report.failures.iter().map(|f| format!("{}: {}", f.device, f.error)));
        self.last = Some(report);
        Ok(())
    }
}
