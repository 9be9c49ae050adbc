//! The dispatcher of a split launch: which items each device computes next,
//! by policy (Static shares from the model, Dynamic equal chunks, HGuided
//! shrinking chunks with the end-game guard), with probe chunks that calibrate
//! the performance model, retries of failed devices' chunks, and the booking
//! of finished chunks. It decides only; whoever runs the chunks (the
//! scheduler's device threads, or the task graph's workers) calls
//! [`Plan::next`], then [`Plan::finish`] or [`Plan::kill`], under one lock.
//!
//! This module touches no device.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use super::model::{Estimate, Observation, PerfModel};
use super::partition::{self, Cost};
use super::policy::Policy;
use super::report::Failure;
use crate::error::Error;

/// What a finished chunk measured (times from its commands' events: the
/// device's clock where the backend has one).
#[derive(Default)]
pub(crate) struct ChunkStats {
    pub up: Duration,
    pub kernel: Duration,
    pub down: Duration,
    pub h2d: u64,
    pub d2h: u64,
}

/// The fixed facts of one split launch.
pub(crate) struct Plan {
    pub items: usize,
    pub policy: Policy,
    /// Chunk sizes are multiples of these, per device.
    pub multiples: Vec<usize>,
    /// Largest chunk per device.
    pub caps: Vec<usize>,
    /// Bytes moved per item.
    pub bpi: f64,
    /// Bytes per item of the elementwise device buffers (at least 1).
    pub dev_bpi: usize,
    /// Performance-model keys per device.
    pub keys: Vec<String>,
    /// Labels per device.
    pub labels: Vec<String>,
    /// Chunks each device keeps in flight.
    pub depths: Vec<usize>,
}

impl State {
    /// The state of a launch over `devices` devices, learning into `model`.
    pub(crate) fn new(devices: usize, model: PerfModel) -> State {
        State {
            cursor: 0,
            retry: VecDeque::new(),
            planned: false,
            in_flight: 0,
            done: 0,
            next_chunk: 0,
            devs: (0..devices)
                .map(|_| DevState {
                    alive: true,
                    ..Default::default()
                })
                .collect(),
            model,
            errors: Vec::new(),
            failures: Vec::new(),
        }
    }
}

#[derive(Default)]
pub(crate) struct DevState {
    pub alive: bool,
    pub ready: bool,
    pub retired: Option<String>,
    pub probes_started: u8,
    pub probes_done: u8,
    pub probe_obs: Vec<Observation>,
    pub work_chunks: usize,
    pub items: usize,
    pub chunks: usize,
    pub probes: usize,
    pub busy: Duration,
    pub h2d: u64,
    pub d2h: u64,
    pub in_flight_items: usize,
    /// Static policy: this device's own range and the largest piece taken at once.
    pub own: Range<usize>,
    pub piece: usize,
}

pub(crate) struct State {
    pub cursor: usize,
    pub retry: VecDeque<Range<usize>>,
    pub planned: bool,
    pub in_flight: usize,
    pub done: usize,
    pub next_chunk: usize,
    pub devs: Vec<DevState>,
    pub model: PerfModel,
    pub errors: Vec<Error>,
    pub failures: Vec<Failure>,
}

pub(crate) enum Next {
    Run {
        range: Range<usize>,
        probe: bool,
        index: usize,
    },
    Wait,
    Exit,
}

impl Plan {
    /// Whether device `d` may still get work: items are left to hand out, a
    /// chunk waits for a retry, or (Static) its own share is not done.
    pub(crate) fn wanted(&self, st: &State, d: usize) -> bool {
        let ds = &st.devs[d];
        if !ds.alive {
            return false;
        }
        if !st.retry.is_empty() || !ds.own.is_empty() {
            return true;
        }
        match self.policy {
            // Once planned, the Static shares are fixed: no share, no work.
            Policy::Static if st.planned => false,
            _ => st.cursor < self.items,
        }
    }

    /// Mark device `d` failed: its chunk and its unstarted static share go back
    /// to the retry queue; the error is kept.
    pub(crate) fn kill(&self, st: &mut State, d: usize, chunk: Option<Range<usize>>, e: Error) {
        tracing::warn!(device = %self.labels[d], error = %e, "device failed during a split launch; dropping it");
        let ds = &mut st.devs[d];
        ds.alive = false;
        let own = std::mem::replace(&mut ds.own, 0..0);
        if let Some(c) = &chunk {
            st.retry.push_back(c.clone());
        }
        if !own.is_empty() {
            st.retry.push_back(own);
        }
        st.failures.push(Failure {
            device: self.labels[d].clone(),
            chunk,
            error: e.to_string(),
        });
        st.errors.push(e);
    }

    /// Book a successful chunk and teach the model.
    pub(crate) fn finish(
        &self,
        st: &mut State,
        d: usize,
        range: &Range<usize>,
        probe: bool,
        busy: Duration,
        s: ChunkStats,
    ) {
        let n = range.len();
        st.done += n;
        let obs = Observation {
            items: n,
            kernel_s: s.kernel.as_secs_f64(),
            bytes: s.h2d + s.d2h,
            transfer_s: (s.up + s.down).as_secs_f64(),
        };
        let key = &self.keys[d];
        let ds = &mut st.devs[d];
        ds.items += n;
        ds.chunks += 1;
        ds.busy += busy;
        ds.h2d += s.h2d;
        ds.d2h += s.d2h;
        if probe {
            ds.probes += 1;
            ds.probes_done += 1;
            ds.probe_obs.push(obs);
            if ds.probe_obs.len() == 2 {
                let (a, b) = (ds.probe_obs[0], ds.probe_obs[1]);
                st.model.calibrate(key, a, b);
            }
        } else {
            ds.work_chunks += 1;
            st.model.observe(key, obs);
        }
    }

    pub(crate) fn estimate(&self, st: &State, d: usize) -> Option<Estimate> {
        st.model.get(&self.keys[d]).copied()
    }

    /// Probe chunk sizes: a small one, then one eight times larger.
    pub(crate) fn probe_size(&self, d: usize, nth: u8) -> usize {
        let m = self.multiples[d];
        let base = (self.items / 2048).max(m).div_ceil(m) * m;
        if nth == 0 { base } else { base * 8 }
    }

    /// Take up to `n` items from the shared cursor.
    pub(crate) fn take(&self, st: &mut State, n: usize) -> Range<usize> {
        let n = n.min(self.items - st.cursor);
        let r = st.cursor..st.cursor + n;
        st.cursor += n;
        r
    }

    pub(crate) fn run(&self, st: &mut State, range: Range<usize>, probe: bool) -> Next {
        let index = st.next_chunk;
        st.next_chunk += 1;
        Next::Run { range, probe, index }
    }

    /// The dispatcher: what device `d` does next.
    pub(crate) fn next(&self, st: &mut State, d: usize) -> Next {
        if !st.devs[d].alive {
            return Next::Exit;
        }
        let m = self.multiples[d];
        let cap = self.caps[d];
        if let Some(mut r) = st.retry.pop_front() {
            if r.len() > cap {
                st.retry.push_front(r.start + cap..r.end);
                r.end = r.start + cap;
            }
            return self.run(st, r, false);
        }
        let remaining = self.items - st.cursor;
        let calibrated = self.is_calibrated(st, d);
        if self.policy.uses_model() && !calibrated && st.devs[d].probes_started < 2 && remaining > 0 {
            let nth = st.devs[d].probes_started;
            st.devs[d].probes_started += 1;
            let n = partition::round_chunk(self.probe_size(d, nth), remaining, m).min(cap);
            let r = self.take(st, n);
            return self.run(st, r, true);
        }
        match self.policy {
            Policy::Static => {
                if !st.planned {
                    // Plan once every live device is calibrated or has finished its probes.
                    let settled = (0..self.keys.len()).all(|e| {
                        let x = &st.devs[e];
                        !x.alive || x.probes_done >= 2 || self.is_calibrated(st, e)
                    });
                    if settled || remaining == 0 {
                        self.plan_static(st);
                    } else {
                        return Next::Wait;
                    }
                }
                let ds = &mut st.devs[d];
                if !ds.own.is_empty() {
                    let n = ds.own.len().min(ds.piece.max(1)).min(cap);
                    let r = ds.own.start..ds.own.start + n;
                    ds.own.start += n;
                    return self.run(st, r, false);
                }
            }
            Policy::Dynamic { chunk } if remaining > 0 => {
                let want = if chunk == 0 {
                    (self.items / (16 * self.keys.len())).max(1)
                } else {
                    chunk
                };
                let r = self.take(st, partition::round_chunk(want, remaining, m).min(cap));
                return self.run(st, r, false);
            }
            Policy::HGuided { k, min_chunk } if remaining > 0 => {
                if let Some(n) = self.hguided(st, d, remaining, k, min_chunk) {
                    let r = self.take(st, n.min(cap));
                    return self.run(st, r, false);
                }
            }
            _ => {}
        }
        let all_own_empty = st.devs.iter().all(|x| x.own.is_empty() || !x.alive);
        if st.cursor == self.items && st.retry.is_empty() && st.in_flight == 0 && all_own_empty {
            Next::Exit
        } else {
            Next::Wait
        }
    }

    pub(crate) fn is_calibrated(&self, st: &State, d: usize) -> bool {
        self.estimate(st, d).is_some_and(|e| e.calibrated())
    }

    /// Per-item seconds (transfer included) of device `d`, if the model knows it.
    pub(crate) fn cost(&self, st: &State, d: usize) -> Option<Cost> {
        self.estimate(st, d).map(|e| Cost {
            fixed_s: e.latency_s,
            per_item_s: e.per_item_s(self.bpi),
        })
    }

    /// Why a device gets nothing, in words with the numbers.
    pub(crate) fn exclusion_reason(&self, mine: Cost, n: usize, others_s: f64, rest: f64) -> String {
        format!(
            "predicted to finish after the others finish the whole job: its smallest useful chunk ({n} items) would take {:.3} ms, the others finish the remaining {rest:.0} items in {:.3} ms",
            mine.time(n as f64) * 1e3,
            others_s * 1e3
        )
    }

    /// The HGuided chunk for `d`, or `None` when `d` retires (it could not finish
    /// a useful chunk before the others finish everything).
    pub(crate) fn hguided(
        &self,
        st: &mut State,
        d: usize,
        remaining: usize,
        k: f64,
        min_chunk: usize,
    ) -> Option<usize> {
        let m = self.multiples[d];
        let others: Vec<usize> = (0..self.keys.len())
            .filter(|&e| e != d && st.devs[e].alive && st.devs[e].retired.is_none())
            .collect();
        if st.devs[d].retired.is_some() {
            if others.is_empty() {
                st.devs[d].retired = None;
            } else {
                return None;
            }
        }
        let mine = self.cost(st, d);
        let thr_d = mine.map_or(1.0, |c| 1.0 / c.per_item_s);
        let thr = |e: usize| self.cost(st, e).map(|c| 1.0 / c.per_item_s);
        let sum_others: f64 = others.iter().map(|&e| thr(e).unwrap_or(thr_d)).sum();
        let share = thr_d / (thr_d + sum_others);
        let min_chunk = if min_chunk > 0 {
            min_chunk
        } else {
            // Auto: the chunk whose latency is at most 5% of its time.
            mine.map_or(m, |c| {
                (19.0 * c.fixed_s / c.per_item_s).ceil().min(remaining as f64) as usize
            })
            .max(m)
        };
        // The floor bounds the chunks of one run however small this device's share.
        let floor = partition::chunk_floor(self.items, m);
        let mut n = partition::hguided_chunk(remaining, share, k, min_chunk.max(floor), m);
        // The end-game guard: never take a chunk that would finish after the
        // calibrated others could finish everything left.
        // Only devices that are ready count: one still building may never start.
        let calibrated_others: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&e| st.devs[e].ready && self.is_calibrated(st, e))
            .collect();
        let me = mine.filter(|_| self.is_calibrated(st, d));
        if let Some(me) = me
            && !calibrated_others.is_empty()
        {
            let rate_o: f64 = calibrated_others.iter().filter_map(|&e| thr(e)).sum();
            let in_flight: usize = calibrated_others.iter().map(|&e| st.devs[e].in_flight_items).sum();
            let rest = remaining as f64 + 0.5 * in_flight as f64;
            let allowed = partition::useful_chunk(me, rest, rate_o);
            if allowed < n {
                if allowed >= floor || allowed >= remaining {
                    n = partition::round_chunk(allowed, remaining, m).min(allowed.max(1));
                } else {
                    let reason = self.exclusion_reason(me, floor.min(remaining), rest / rate_o, rest);
                    st.devs[d].retired = Some(reason);
                    return None;
                }
            }
        }
        Some(n)
    }

    /// The Static plan: split what is left by the balance solver.
    pub(crate) fn plan_static(&self, st: &mut State) {
        st.planned = true;
        let start = st.cursor;
        let left = self.items - start;
        let live: Vec<usize> = (0..self.keys.len()).filter(|&d| st.devs[d].alive).collect();
        if live.is_empty() || left == 0 {
            return;
        }
        let known: Vec<Option<Cost>> = live.iter().map(|&d| self.cost(st, d)).collect();
        let fallback = known.iter().flatten().map(|c| c.per_item_s).fold(f64::NAN, f64::min);
        let costs: Vec<Cost> = known
            .iter()
            .map(|c| {
                c.unwrap_or(Cost {
                    fixed_s: 0.0,
                    per_item_s: if fallback.is_finite() { fallback } else { 1e-6 },
                })
            })
            .collect();
        let (shares, t) = partition::balance(left, &costs);
        let mults: Vec<usize> = live.iter().map(|&d| self.multiples[d]).collect();
        let ranges = partition::split_static(left, &shares, &mults);
        for ((&d, r), c) in live.iter().zip(ranges).zip(&costs) {
            let ds = &mut st.devs[d];
            ds.own = start + r.start..start + r.end;
            if ds.own.is_empty() {
                ds.retired = Some(self.exclusion_reason(*c, self.multiples[d], t, left as f64));
            }
            ds.piece = static_piece(ds.own.len(), self.depths[d], self.dev_bpi, self.multiples[d]);
        }
        st.cursor = self.items;
    }
}

/// Device bytes (over all elementwise buffers) one Static piece moves at most,
/// unless that would make more than [`STATIC_MAX_PIECES`] pieces.
pub(crate) const STATIC_PIECE_BYTES: usize = 8 << 20;
/// Most pieces one device's Static share is moved in.
pub(crate) const STATIC_MAX_PIECES: usize = 64;

/// The piece a device takes of its Static share of `own` items at a time: at
/// most a quarter of the share on devices that keep two chunks in flight (so
/// uploads overlap kernels), and at most [`STATIC_PIECE_BYTES`] of device memory, so
/// that the chunk buffers stay small and are reused instead of one buffer of
/// the whole share being allocated, faulted in and copied through per run.
/// Rounded up to the device's work-group multiple.
pub(crate) fn static_piece(own: usize, depth: usize, dev_bpi: usize, multiple: usize) -> usize {
    let m = multiple.max(1);
    let by_lanes = if depth > 1 { own.div_ceil(4) } else { own };
    let by_bytes = (STATIC_PIECE_BYTES / dev_bpi.max(1)).max(own.div_ceil(STATIC_MAX_PIECES));
    by_lanes.min(by_bytes).max(1).div_ceil(m) * m
}
