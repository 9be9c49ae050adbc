//! N-body on a task graph: positions, velocities and accelerations stay on the
//! devices, and each step moves only what another device changed.
//!
//! Per step, three tasks:
//!
//! 1. `nbody_kdk(dt/2, dt)`: half kick, then drift, of every body;
//! 2. `nbody` accelerations, a split task ([`crate::task::Task::split`]) over
//!    every device of the graph: each chunk of bodies from all positions
//!    (broadcast);
//! 3. `nbody_kdk(dt/2, 0)`: the second half kick.
//!
//! The kick–drift tasks are not split: they are a few memory-bound operations
//! per body, cheaper than a launch round trip on a second device plus the
//! traffic of scattering the bodies (measured with the `tasks` bench: splitting
//! them too lowered the CPU + PoCL balance efficiency from 0.874 to 0.833); the
//! placement puts them where the bodies are. A device fetches only the
//! positions another device updated since it last had them, and an
//! acceleration chunk moves only to where the next kick runs.
//! The arithmetic is [`super::Simulation::run`]'s, in the same order.
//!
//! This module uses the task layer only; it touches no device directly.

use std::time::Instant;

use super::{Bodies, Energy, RunReport, SimConfig, total_energy};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::kernels::{nbody, nbody_kdk};
use crate::task::{Data, GraphReport, Task, TaskGraph};

/// A leapfrog N-body simulation whose state lives on a [`TaskGraph`]'s devices.
pub struct ResidentSimulation {
    config: SimConfig,
    graph: TaskGraph,
    pos: Data<f32>,
    vel: Data<f32>,
    acc: Data<f32>,
    force: Kernel,
    kdk: Kernel,
    /// Accelerations of the current positions are in `acc`.
    primed: bool,
    energy: Energy,
}

impl std::fmt::Debug for ResidentSimulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ResidentSimulation({} bodies over {:?})",
            self.config.bodies,
            self.graph.labels()
        )
    }
}

impl ResidentSimulation {
    /// A Plummer sphere of `config.bodies` bodies over `devices` (a task graph
    /// with its defaults; those that cannot run the kernels are left out of the
    /// split tasks).
    pub fn new(devices: &[Device], config: SimConfig) -> Result<ResidentSimulation> {
        config.validate()?;
        let bodies = super::plummer(config.bodies, config.seed)?;
        ResidentSimulation::from_bodies(TaskGraph::new(devices)?, bodies, config)
    }

    /// Given bodies on `graph` (built with the options wanted: placement, split
    /// policy, model, shared cores).
    pub fn from_bodies(graph: TaskGraph, bodies: Bodies, mut config: SimConfig) -> Result<ResidentSimulation> {
        bodies.validate()?;
        config.bodies = bodies.len();
        config.validate()?;
        if config.bodies > u32::MAX as usize / 4 {
            return Err(Error::InvalidInput(format!(
                "{} bodies; at most {}",
                config.bodies,
                u32::MAX / 4
            )));
        }
        let energy = total_energy(&bodies, config.eps);
        let pos = graph.data("pos", &bodies.pos)?;
        let vel = graph.data("vel", &bodies.vel)?;
        let acc = graph.data("acc", &vec![0.0f32; bodies.pos.len()])?;
        Ok(ResidentSimulation {
            config,
            graph,
            pos,
            vel,
            acc,
            force: nbody()?,
            kdk: nbody_kdk()?,
            primed: false,
            energy,
        })
    }

    /// The graph (its report says what ran where and what moved).
    pub fn graph(&self) -> &TaskGraph {
        &self.graph
    }

    /// What the graph ran so far.
    pub fn report(&self) -> GraphReport {
        self.graph.report()
    }

    fn accelerations(&self) -> Result<()> {
        let n = self.config.bodies;
        let eps2 = self.config.eps * self.config.eps;
        self.graph.submit(
            Task::new(&self.force)
                .read(&self.pos)
                .write(&self.acc)
                .scalar(n as u32)
                .scalar(eps2)
                .items(n)
                .split()
                .name("accelerations"),
        )?;
        Ok(())
    }

    fn kick_drift(&self, kick: f32, drift: f32, name: &str) -> Result<()> {
        self.graph.submit(
            Task::new(&self.kdk)
                .read_write(&self.pos)
                .read_write(&self.vel)
                .read(&self.acc)
                .scalar(kick)
                .scalar(drift)
                .items(self.config.bodies)
                .name(name),
        )?;
        Ok(())
    }

    /// Advance `config.steps` leapfrog steps, calling `progress(step)` as each
    /// is submitted, and wait for them. The report's energies are computed on the
    /// host from the bodies brought home before and after.
    pub fn run(&mut self, mut progress: impl FnMut(usize)) -> Result<RunReport> {
        let energy_before = self.energy;
        let t0 = Instant::now();
        let dt = self.config.dt;
        let half = 0.5 * dt;
        let mut evaluations = 0;
        if !self.primed {
            self.accelerations()?;
            evaluations += 1;
            self.primed = true;
        }
        for step in 0..self.config.steps {
            self.kick_drift(half, dt, "kick+drift")?;
            self.accelerations()?;
            self.kick_drift(half, 0.0, "kick")?;
            evaluations += 1;
            progress(step + 1);
        }
        self.graph.wait_all()?;
        let wall = t0.elapsed();
        let bodies = self.bodies()?;
        self.energy = total_energy(&bodies, self.config.eps);
        // Each evaluation from its first chunk's start to its last chunk's end.
        let mut spans: std::collections::BTreeMap<usize, (f64, f64)> = std::collections::BTreeMap::new();
        for t in self
            .report()
            .tasks
            .iter()
            .filter(|t| t.name.starts_with("accelerations"))
        {
            let e = spans.entry(t.id).or_insert((t.start_s, t.end_s));
            e.0 = e.0.min(t.start_s);
            e.1 = e.1.max(t.end_s);
        }
        let accel_time = std::time::Duration::from_secs_f64(spans.values().map(|(a, b)| (b - a).max(0.0)).sum());
        Ok(RunReport {
            bodies: self.config.bodies,
            steps: self.config.steps,
            evaluations,
            energy_before,
            energy_after: self.energy,
            wall,
            accel_time,
        })
    }

    /// The bodies now, brought to the host.
    pub fn bodies(&self) -> Result<Bodies> {
        Ok(Bodies {
            pos: self.pos.acquire()?,
            vel: self.vel.acquire()?,
        })
    }
}
