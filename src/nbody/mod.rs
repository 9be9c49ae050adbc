//! A gravitational N-body simulation on top of the `nbody` kernel.
//!
//! * [`init`]: seeded initial conditions (a Plummer sphere in N-body units, or a
//!   uniform ball), checked for non-finite values;
//! * [`integrate`]: [`Simulation`], leapfrog kick–drift–kick over many steps, with
//!   accelerations from any [`Accelerations`] source — [`DeviceAccelerations`] runs
//!   the kernel on one [`crate::Device`]; a closure can plug in anything else (for
//!   example a split across several devices);
//! * [`energy`]: total energy (kinetic + softened potential) in float64, for the
//!   drift check;
//! * [`snapshot`]: a PNG picture of the positions (x–y projection, density-shaded).
//!
//! Units: G = 1, total mass 1; positions and velocities are f32 like the kernel.
//! This module only uses the public API of the crate (devices, buffers, launches).

pub mod energy;
pub mod init;
pub mod integrate;
pub mod resident;
pub mod snapshot;

pub use energy::{Energy, total_energy};
pub use init::{Bodies, plummer, uniform_ball};
pub use integrate::{Accelerations, DeviceAccelerations, RunReport, SimConfig, Simulation, SplitAccelerations};
pub use resident::ResidentSimulation;
pub use snapshot::write_png;
