//! The distributed layer on real MPI ranks (cargo feature `mpi`).
//!
//! MPI initialises once per process, so each test here starts its own test
//! binary under `mpirun` (`-np 2` and `-np 4 --oversubscribe`), running one
//! ignored child test per rank; every child asserts the rank count it was
//! started for (a binary started by another MPI's `mpirun` would run as
//! independent single ranks and must not pass), and the parent asserts that
//! every rank printed its success line. `mpirun` missing is a failure.
#![cfg(feature = "mpi")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use offload::distributed::{Cluster, DistTask};
use offload::task::Partition;
use offload::{BackendKind, Error, Runtime, kernels};

const NP_ENV: &str = "OFFLOAD_TEST_MPI_NP";

/// Run child test `child` on `np` ranks; returns (success, stdout + stderr, wall).
fn mpirun(np: usize, child: &str, env: &[(&str, &str)]) -> (bool, String, Duration) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env(NP_ENV, np.to_string())
        .args(["--oversubscribe", "-np", &np.to_string()])
        .arg(exe)
        .args([child, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("mpirun (install openmpi-bin) could not be started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, t0.elapsed())
}

fn assert_all_ranks(np: usize, child: &str, tag: &str) {
    let (ok, text, _) = mpirun(np, child, &[]);
    assert!(ok, "{child} on {np} ranks failed:\n{text}");
    for r in 0..np {
        let line = format!("{tag} rank {r} of {np} ok");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

/// The rank count this child was started for; a child run by hand (not by a
/// parent test) fails loudly.
fn expected_np() -> usize {
    std::env::var(NP_ENV)
        .expect("a child test runs under mpirun, started by its parent test")
        .parse()
        .unwrap()
}

fn cluster(rt: &Runtime) -> Cluster {
    let c = Cluster::builder(rt).build().unwrap();
    assert_eq!(
        c.size(),
        expected_np(),
        "rank count (is mpirun from the MPI this was built with?)"
    );
    c
}

fn cpu_runtime() -> Runtime {
    Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .cpu_threads(1)
        .build()
        .unwrap()
}

#[test]
fn jacobi_halo_exchange_np2() {
    assert_all_ranks(2, "child_jacobi", "jacobi");
}

#[test]
fn jacobi_halo_exchange_np4() {
    assert_all_ranks(4, "child_jacobi", "jacobi");
}

#[test]
fn allgather_np2() {
    assert_all_ranks(2, "child_allgather", "allgather");
}

#[test]
fn allgather_np4() {
    assert_all_ranks(4, "child_allgather", "allgather");
}

#[test]
fn mismatched_task_graphs_are_an_error_np2() {
    assert_all_ranks(2, "child_mismatch", "mismatch");
}

#[test]
fn dead_rank_times_out_np2() {
    let (ok, text, wall) = mpirun(2, "child_dead_rank", &[("OFFLOAD_MPI_TIMEOUT_MS", "1500")]);
    assert!(!ok, "the run must fail when a rank stops answering:\n{text}");
    assert!(
        text.contains("did not complete within the 1500 ms limit"),
        "rank 0 must report the timeout:\n{text}"
    );
    // Rank 1 stays silent for 30 s: the others must not wait for it.
    assert!(wall < Duration::from_secs(20), "took {wall:?}:\n{text}");
}

/// Jacobi sweeps over row bands owned by the ranks: bitwise equal to the host
/// sweep, and each rank sends exactly its boundary rows.
#[test]
#[ignore = "child of jacobi_halo_exchange_np*: runs under mpirun"]
fn child_jacobi() {
    let rt = cpu_runtime();
    let c = cluster(&rt);
    let (n, iters) = (64usize, 6usize);
    let parts = 2 * c.size();
    let mut u0 = vec![0.0f32; n * n];
    for (i, x) in u0.iter_mut().enumerate() {
        *x = ((i * 7919) % 1000) as f32 / 1000.0;
    }
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let u = c.data("u", &u0, how).unwrap();
    let v = c.data("v", &u0, how).unwrap();
    let k = kernels::jacobi().unwrap();
    for it in 0..iters {
        let (s, d) = if it.is_multiple_of(2) { (&u, &v) } else { (&v, &u) };
        for b in 0..parts {
            let (sl, dl) = (s.local_part(b).unwrap(), d.local_part(b).unwrap());
            c.submit(
                DistTask::new(&k)
                    .read(s.part(b))
                    .write(d.part(b))
                    .scalar(n as u32)
                    .scalar((dl.range().start - sl.read_range().start) as u32)
                    .scalar(sl.read_range().len() as u32)
                    .scalar((dl.range().start / n) as u32)
                    .scalar(n as u32)
                    .items(dl.len())
                    .name(&format!("sweep {it} band {b}")),
            )
            .unwrap();
        }
    }
    c.sync().unwrap();
    let stats = c.net_stats();
    let rank = c.rank();
    let neighbours = (rank > 0) as u64 + (rank + 1 < c.size()) as u64;
    // Sweep 0 reads the registered grid, valid everywhere; each later sweep
    // needs one row from each neighbouring rank.
    let row = (n * 4) as u64;
    assert_eq!(stats.bytes_sent, (iters as u64 - 1) * neighbours * row, "{stats:?}");
    assert_eq!(stats.bytes_received, (iters as u64 - 1) * neighbours * row, "{stats:?}");
    let got = c.gather(if iters.is_multiple_of(2) { &u } else { &v }).unwrap();
    let mut want = u0.clone();
    let mut next = vec![0.0f32; n * n];
    for _ in 0..iters {
        kernels::jacobi_host(&want, &mut next, n).unwrap();
        std::mem::swap(&mut want, &mut next);
    }
    let differ = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g.to_bits() != w.to_bits())
        .count();
    assert_eq!(differ, 0, "rank {rank}: {differ} elements differ from the host sweep");
    // The merged profile has a net lane per rank that sent something.
    let merged = c.gather_profile().unwrap();
    if let Some(p) = merged {
        for r in 0..c.size() {
            let lane = format!("rank {r} net");
            assert!(p.devices().contains(&lane), "no {lane:?} in {:?}", p.devices());
        }
    }
    println!("jacobi rank {rank} of {} ok", c.size());
}

/// Each rank writes its block; one allgather makes the whole array current
/// everywhere, and a task reading all of it then needs no messages.
#[test]
#[ignore = "child of allgather_np*: runs under mpirun"]
fn child_allgather() {
    let rt = cpu_runtime();
    let c = cluster(&rt);
    let len = 1024 * c.size();
    let x: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..len).map(|i| (i % 13) as f32).collect();
    let how = Partition::Blocks {
        parts: c.size(),
        halo: 0,
    };
    let dx = c.data("x", &x, how).unwrap();
    let dy = c.data("y", &y, how).unwrap();
    let dz = c.data("z", &vec![-1.0f32; len], how).unwrap();
    let add = kernels::vector_add().unwrap();
    for b in 0..c.size() {
        let n = dz.part_range(b).unwrap().len();
        c.submit(
            DistTask::new(&add)
                .read(dx.part(b))
                .read(dy.part(b))
                .write(dz.part(b))
                .items(n),
        )
        .unwrap();
    }
    c.all_gather(&dz).unwrap();
    let before = c.net_stats();
    // z's parts are now valid everywhere: x = z + y on each block needs nothing.
    let got = dz.local().acquire().unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, x[i] + y[i], "element {i}");
    }
    c.sync().unwrap();
    assert_eq!(c.net_stats().bytes_sent, before.bytes_sent);
    println!("allgather rank {} of {} ok", c.rank(), c.size());
}

/// Rank 1 names a task differently: every rank's sync reports the mismatch.
#[test]
#[ignore = "child of mismatched_task_graphs_are_an_error_np2: runs under mpirun"]
fn child_mismatch() {
    let rt = cpu_runtime();
    let c = cluster(&rt);
    let x = c
        .data("x", &vec![1.0f32; 256], Partition::Blocks { parts: 2, halo: 0 })
        .unwrap();
    let y = c
        .data("y", &vec![2.0f32; 256], Partition::Blocks { parts: 2, halo: 0 })
        .unwrap();
    let add = kernels::vector_add().unwrap();
    let name = if c.rank() == 1 { "different" } else { "same" };
    c.submit(
        DistTask::new(&add)
            .read(x.part(0))
            .read(x.part(0))
            .write(y.part(0))
            .items(128)
            .name(name),
    )
    .unwrap();
    match c.sync() {
        Err(Error::GraphMismatch { why, .. }) => {
            assert!(why.contains("rank 0") && why.contains("rank 1"), "{why}");
        }
        other => panic!("expected a graph mismatch, got {other:?}"),
    }
    println!("mismatch rank {} of {} ok", c.rank(), c.size());
}

/// Rank 1 stops answering; rank 0's next wait fails within the timeout and
/// ends the run.
#[test]
#[ignore = "child of dead_rank_times_out_np2: runs under mpirun"]
fn child_dead_rank() {
    let rt = cpu_runtime();
    let c = cluster(&rt);
    if c.rank() == 1 {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let t0 = Instant::now();
    match c.sync() {
        Err(e @ Error::NetTimeout { .. }) => {
            assert!(t0.elapsed() < Duration::from_secs(10));
            c.abort(3, &e);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}
