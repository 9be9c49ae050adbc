//! Messages between ranks: non-blocking sends, polled receives, a barrier and
//! an allgather, every wait bounded by the cluster's timeout, every message
//! recorded as a [`Stage::Net`] record (bytes, time, peer in the label).
//!
//! Buffers handed to MPI are boxed and leaked for the life of their request
//! (rsmpi's `StaticScope`): a request completes, the box is reclaimed; a wait
//! that times out returns [`Error::NetTimeout`] and leaves the buffer leaked,
//! since MPI may still use it. The run is then over (the caller reports the
//! error and aborts), so the leak is bounded by one message per peer.
//!
//! Receives probe for the next message from the peer (`MPI_Improbe`) and take
//! it once it has arrived (`MPI_Mrecv`), so a message of the wrong size is an
//! error naming both sizes instead of MPI's fatal truncation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::datatype::Equivalence;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::error::{Error, Result};
use crate::profile::{Profiler, Stage};

/// Tag of data messages (payload after a [`HEADER`]-byte header).
pub(crate) const DATA_TAG: i32 = 0x0ff1;
/// Bytes of the header in front of each data message: the sender's running
/// task hash, its task count, the data id and the first element.
pub(crate) const HEADER: usize = 32;
/// The device label of network records in each rank's profile.
pub const NET_LANE: &str = "net";

/// Totals of what one rank sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Payload bytes sent point-to-point (headers not included).
    pub bytes_sent: u64,
    /// Payload bytes received point-to-point (headers not included).
    pub bytes_received: u64,
    /// Point-to-point messages sent.
    pub messages_sent: u64,
    /// Bytes this rank contributed to collectives (allgather).
    pub collective_bytes: u64,
    /// Nanoseconds spent waiting in receives, collectives and barriers.
    pub wait_ns: u64,
}

/// A box handed to MPI: reclaimed with `Box::from_raw` once its request completes.
struct Leaked(*mut [u8]);

impl Leaked {
    fn new(v: Vec<u8>) -> (Leaked, &'static mut [u8]) {
        let raw = Box::into_raw(v.into_boxed_slice());
        // SAFETY: `raw` comes from `Box::into_raw`, so it is valid, aligned and
        // unaliased; it is freed only by `reclaim`, after the one request that
        // uses this reference has completed.
        (Leaked(raw), unsafe { &mut *raw })
    }

    /// Free the box. Call only once the request using it has completed.
    fn reclaim(self) -> Vec<u8> {
        // SAFETY: the pointer came from `Box::into_raw` in `new`, is reclaimed
        // once (this consumes `self`), and the request that borrowed it has
        // completed, so MPI no longer touches it.
        unsafe { Box::from_raw(self.0) }.into_vec()
    }
}

/// A send in flight.
struct Outgoing {
    req: Request<'static, [u8], StaticScope>,
    buf: Leaked,
    peer: usize,
    label: String,
    bytes: u64,
    t0: Instant,
}

/// The rank's end of the network.
pub(crate) struct Net {
    pub world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    pub timeout: Duration,
    profiler: Arc<Profiler>,
    outgoing: Vec<Outgoing>,
    pub stats: NetStats,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The longest sleep between two polls of a wait.
const MAX_POLL_SLEEP: Duration = Duration::from_micros(500);

/// Poll `ready` until it says done or `timeout` passes: spin briefly, then
/// sleep between polls, each sleep a twentieth of the time waited so far (20 µs
/// to [`MAX_POLL_SLEEP`]). A rank waiting long for a slower one (imbalance)
/// then wakes a few hundred times a second instead of tens of thousands, which
/// leaves the processor to the ranks still computing (on machines whose cores
/// share execution units, a rank polling in a tight loop slows the others),
/// while adding at most 5 % (and at most 0.5 ms) to the wait.
fn poll_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> std::result::Result<(), Duration> {
    let t0 = Instant::now();
    let mut spins = 0u32;
    loop {
        if ready() {
            return Ok(());
        }
        let waited = t0.elapsed();
        if waited >= timeout {
            return Err(waited);
        }
        spins += 1;
        if spins < 200 {
            std::thread::yield_now();
        } else {
            std::thread::sleep((waited / 20).clamp(Duration::from_micros(20), MAX_POLL_SLEEP));
        }
    }
}

impl Net {
    pub fn new(world: SimpleCommunicator, timeout: Duration, profiler: Arc<Profiler>) -> Net {
        Net {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            timeout,
            profiler,
            outgoing: Vec::new(),
            stats: NetStats::default(),
        }
    }

    fn record(&self, label: &str, bytes: u64, t0: Instant, t1: Instant) {
        self.profiler
            .record(NET_LANE, Stage::Net, label, bytes, 0, t0, t1, None);
    }

    /// Start sending `header ++ payload` to `peer`; returns at once.
    pub fn send(&mut self, peer: usize, header: [u64; 4], payload: &[u8], label: String) {
        let t0 = Instant::now();
        let mut msg = Vec::with_capacity(HEADER + payload.len());
        for h in header {
            msg.extend_from_slice(&h.to_le_bytes());
        }
        msg.extend_from_slice(payload);
        let (buf, r) = Leaked::new(msg);
        let r: &'static [u8] = r;
        let req = self
            .world
            .process_at_rank(peer as i32)
            .immediate_send_with_tag(StaticScope, r, DATA_TAG);
        self.stats.bytes_sent += payload.len() as u64;
        self.stats.messages_sent += 1;
        self.outgoing.push(Outgoing {
            req,
            buf,
            peer,
            label,
            bytes: payload.len() as u64,
            t0,
        });
        self.progress();
    }

    /// Retire the sends that have completed.
    pub fn progress(&mut self) {
        let mut i = 0;
        while i < self.outgoing.len() {
            let o = self.outgoing.swap_remove(i);
            match o.req.test() {
                Ok(_) => {
                    let t1 = Instant::now();
                    self.record(&o.label, o.bytes, o.t0, t1);
                    drop(o.buf.reclaim());
                }
                Err(req) => {
                    self.outgoing.push(Outgoing { req, ..o });
                    let last = self.outgoing.len() - 1;
                    self.outgoing.swap(i, last);
                    i += 1;
                }
            }
        }
    }

    /// Wait until every send has completed.
    pub fn flush(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            self.progress();
            let Some(o) = self.outgoing.first() else {
                return Ok(());
            };
            let waited = t0.elapsed();
            if waited >= self.timeout {
                let err = Error::NetTimeout {
                    operation: format!("send ({})", o.label),
                    peer: format!("rank {}", o.peer),
                    waited_ms: ms(waited),
                    limit_ms: ms(self.timeout),
                };
                // MPI may still read these buffers: leave them leaked.
                for o in self.outgoing.drain(..) {
                    std::mem::forget(o.req);
                }
                return Err(err);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Receive the next data message from `peer`, which must carry `header`
    /// and `len` payload bytes.
    pub fn recv(&mut self, peer: usize, header: [u64; 4], len: usize, label: String) -> Result<Vec<u8>> {
        let t0 = Instant::now();
        let process = self.world.process_at_rank(peer as i32);
        let mut found = None;
        let polled = poll_until(self.timeout, || {
            found = process.immediate_matched_probe_with_tag(DATA_TAG);
            found.is_some()
        });
        // Sends progress while this rank waits.
        self.progress();
        let Some((msg, status)) = found else {
            return Err(Error::NetTimeout {
                operation: format!("receive ({label})"),
                peer: format!("rank {peer}"),
                waited_ms: ms(polled.err().unwrap_or_default()),
                limit_ms: ms(self.timeout),
            });
        };
        let count = status.count(u8::equivalent_datatype()).max(0) as usize;
        let mut buf = vec![0u8; count];
        msg.matched_receive_into(&mut buf[..]);
        let t1 = Instant::now();
        self.stats.wait_ns += t1.saturating_duration_since(t0).as_nanos() as u64;
        let mut got = [0u64; 4];
        for (i, g) in got.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            if let Some(s) = buf.get(i * 8..i * 8 + 8) {
                b.copy_from_slice(s);
            }
            *g = u64::from_le_bytes(b);
        }
        if count != HEADER + len || got != header {
            return Err(Error::GraphMismatch {
                rank: self.rank,
                tasks: header[1],
                why: format!(
                    "{label}: expected a message of {} bytes with header {header:x?} from rank {peer}, \
                     got {count} bytes with header {got:x?}",
                    HEADER + len
                ),
            });
        }
        self.record(&label, len as u64, t0, t1);
        self.stats.bytes_received += len as u64;
        buf.drain(..HEADER);
        Ok(buf)
    }

    /// Every rank's `mine` (all of the same length), concatenated in rank order
    /// (`mine` is handed to MPI as it is, not copied).
    pub fn all_gather(&mut self, mine: Vec<u8>, label: &str) -> Result<Vec<u8>> {
        let t0 = Instant::now();
        let len = mine.len();
        let (send, s) = Leaked::new(mine);
        let s: &'static [u8] = s;
        let (recv, r) = Leaked::new(vec![0u8; len * self.size]);
        let mut req = Some(self.world.immediate_all_gather_into(StaticScope, s, r));
        let polled = poll_until(self.timeout, || match req.take().map(|q| q.test()) {
            Some(Ok(_)) | None => true,
            Some(Err(q)) => {
                req = Some(q);
                false
            }
        });
        self.progress();
        if let Some(q) = req {
            // MPI may still use both buffers: leave them leaked.
            std::mem::forget(q);
            return Err(Error::NetTimeout {
                operation: format!("allgather ({label})"),
                peer: "all ranks".into(),
                waited_ms: ms(polled.err().unwrap_or_default()),
                limit_ms: ms(self.timeout),
            });
        }
        let t1 = Instant::now();
        drop(send.reclaim());
        self.stats.collective_bytes += len as u64;
        self.stats.wait_ns += t1.saturating_duration_since(t0).as_nanos() as u64;
        self.record(label, (len * (self.size - 1)) as u64, t0, t1);
        Ok(recv.reclaim())
    }

    /// Wait until every rank has reached this point.
    pub fn barrier(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let mut req = Some(self.world.immediate_barrier());
        let polled = poll_until(self.timeout, || match req.take().map(|q| q.test()) {
            Some(Ok(_)) | None => true,
            Some(Err(q)) => {
                req = Some(q);
                false
            }
        });
        if let Some(q) = req {
            std::mem::forget(q);
            return Err(Error::NetTimeout {
                operation: "barrier".into(),
                peer: "all ranks".into(),
                waited_ms: ms(polled.err().unwrap_or_default()),
                limit_ms: ms(self.timeout),
            });
        }
        self.stats.wait_ns += t0.elapsed().as_nanos() as u64;
        Ok(())
    }
}
