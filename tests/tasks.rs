//! The task layer on every available device: random DAGs against a sequential
//! reference under both placements, residency (data stays on a device between
//! tasks), partitions with halos, typed errors for bad tasks, and faults (a
//! dropped device's tasks run elsewhere, lost data is recomputed or named).

mod common;

use common::Rng;
use offload::schedule::{FaultOp, FaultPlan, PerfModel, inject_faults};
use offload::task::{Partition, Placement, Task, TaskGraph};
use offload::{Access, BackendKind, CpuCtx, Device, Error, Kernel, Param, Split, kernels};

fn graph(devs: &[Device], p: Placement) -> TaskGraph {
    TaskGraph::builder(devs)
        .allow_shared_cores(true)
        .placement(p)
        .model(PerfModel::in_memory())
        .build()
        .unwrap()
}

/// `out[i] = (in[j-1] + in[j] + in[j+1]) / 3` with `j = lead + i`, clamped at the
/// ends of `in` (`in_len` elements): a 3-point blur over a block with halos.
fn blur() -> Kernel {
    const CL: &str = "__kernel void blur(__global const float* in, __global float* out, const uint lead, \
                      const uint in_len, const uint count) {\n\
                      uint i = get_global_id(0); if (i >= count) return;\n\
                      uint j = lead + i; float c = in[j];\n\
                      float l = j > 0 ? in[j - 1] : c; float r = j + 1 < in_len ? in[j + 1] : c;\n\
                      out[i] = (l + c + r) / 3.0f;\n}\n";
    const CU: &str = "extern \"C\" __global__ void blur(const float* in, float* out, unsigned lead, unsigned in_len, \
                      unsigned count) {\n\
                      unsigned i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= count) return;\n\
                      unsigned j = lead + i; float c = in[j];\n\
                      float l = j > 0 ? in[j - 1] : c; float r = j + 1 < in_len ? in[j + 1] : c;\n\
                      out[i] = (l + c + r) / 3.0f;\n}\n";
    let each = Split::Elementwise { per_item: 1 };
    // SAFETY: both sources read `in[0..in_len)` (in_len is checked against the
    // buffer below) and write `out[i]` for `i < count` only.
    unsafe {
        Kernel::builder("blur")
            .param(Param::buffer::<f32>("in", Access::Read, Split::Broadcast))
            .param(Param::buffer::<f32>("out", Access::Write, each))
            .param(Param::scalar::<u32>("lead"))
            .param(Param::scalar::<u32>("in_len"))
            .param(Param::Count)
            .extent_from("in", &["in_len"], 1)
            .opencl(CL, "blur")
            .cuda(CU, "blur")
    }
    .cpu(|ctx: &CpuCtx<'_>| {
        let input = ctx.input::<f32>(0);
        let lead = ctx.scalar::<u32>(2) as usize;
        let in_len = ctx.scalar::<u32>(3) as usize;
        let items = ctx.items_below(ctx.count());
        let out = ctx.output::<f32>(1);
        for (k, i) in items.enumerate() {
            let j = lead + i;
            let c = input[j];
            let l = if j > 0 { input[j - 1] } else { c };
            let r = if j + 1 < in_len { input[j + 1] } else { c };
            out[k] = (l + c + r) / 3.0;
        }
    })
    .build()
    .unwrap()
}

fn blur_reference(x: &[f32]) -> Vec<f32> {
    let n = x.len();
    (0..n)
        .map(|j| {
            let c = x[j];
            let l = if j > 0 { x[j - 1] } else { c };
            let r = if j + 1 < n { x[j + 1] } else { c };
            (l + c + r) / 3.0
        })
        .collect()
}

#[test]
fn random_dags_match_a_sequential_reference_under_both_placements() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let add = kernels::vector_add().unwrap();
    for placement in [Placement::Dmda, Placement::Eager] {
        let mut rng = Rng::fresh("task dags");
        let g = graph(&devs, placement);
        let n = 20_000;
        let mut host: Vec<Vec<f32>> = (0..5).map(|_| rng.vec_f32(n, -1.0, 1.0)).collect();
        let data: Vec<_> = host
            .iter()
            .enumerate()
            .map(|(i, v)| g.data(&format!("x{i}"), v).unwrap())
            .collect();
        for _ in 0..60 {
            let a = (rng.next_u64() % 5) as usize;
            let b = (rng.next_u64() % 5) as usize;
            let mut c = (rng.next_u64() % 5) as usize;
            while c == a || c == b {
                c = (c + 1) % 5;
            }
            g.submit(Task::new(&add).read(&data[a]).read(&data[b]).write(&data[c]).items(n))
                .unwrap();
            let sum: Vec<f32> = host[a].iter().zip(&host[b]).map(|(x, y)| x + y).collect();
            host[c] = sum;
        }
        g.wait_all().unwrap();
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d.acquire().unwrap(), host[i], "x{i} under {placement:?}");
        }
        let r = g.report();
        assert_eq!(r.tasks.len(), 60, "{r}");
        assert!(r.critical_path_s > 0.0 && r.critical_path_s <= r.work_s + 1e-9, "{r}");
        assert!(r.parallelism_bound() >= 1.0);
        let dot = r.to_dot();
        assert!(dot.starts_with("digraph") && dot.matches(" -> ").count() >= 59, "{dot}");
        println!("{placement:?}\n{r}");
    }
}

#[test]
fn data_stays_resident_between_tasks_on_a_device() {
    let rt = common::runtime();
    let mut devs = common::devices_of(&rt, BackendKind::OpenCl);
    devs.extend(common::devices_of(&rt, BackendKind::Cuda));
    let add = kernels::vector_add().unwrap();
    for dev in devs {
        let g = graph(std::slice::from_ref(&dev), Placement::Dmda);
        let n = 1 << 16;
        let a = g.data("a", &vec![1.0f32; n]).unwrap();
        let b = g.data("b", &vec![0.5f32; n]).unwrap();
        // a = a + b, ten times: a and b go to the device once and stay there.
        for _ in 0..10 {
            let t = g.data("t", &vec![0.0f32; n]).unwrap();
            g.submit(Task::new(&add).read(&a).read(&b).write(&t).items(n)).unwrap();
            g.submit(Task::new(&add).read(&t).read(&b).write(&a).items(n)).unwrap();
        }
        assert_eq!(a.acquire().unwrap(), vec![11.0; n], "{}", dev.label());
        let r = g.report();
        let bytes = (n * 4) as u64;
        assert_eq!(r.devices[0].bytes_in, 2 * bytes, "only a and b were uploaded\n{r}");
        assert_eq!(r.devices[0].bytes_resident, (20 * 2 - 2) * bytes, "{r}");
    }
}

#[test]
fn partitions_with_halos_match_a_reference_on_all_devices() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let k = blur();
    let mut rng = Rng::fresh("halos");
    let n = 40_001;
    let x0 = rng.vec_f32(n, 0.0, 1.0);
    for placement in [Placement::Dmda, Placement::Eager] {
        let g = graph(&devs, placement);
        let u = g.data("u", &x0).unwrap();
        let v = g.data("v", &vec![0.0f32; n]).unwrap();
        let parts = 7;
        let us = u.partition(Partition::Blocks { parts, halo: 1 }).unwrap();
        let vs = v.partition(Partition::Blocks { parts, halo: 1 }).unwrap();
        let mut want = x0.clone();
        for it in 0..12 {
            let (src, dst) = if it % 2 == 0 { (&us, &vs) } else { (&vs, &us) };
            for (s, d) in src.iter().zip(dst) {
                let lead = (d.range().start - s.read_range().start) as u32;
                let in_len = s.read_range().len() as u32;
                g.submit(
                    Task::new(&k)
                        .read(s)
                        .write(d)
                        .scalar(lead)
                        .scalar(in_len)
                        .items(d.len()),
                )
                .unwrap();
            }
            want = blur_reference(&want);
        }
        let got = u.acquire().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{placement:?}: element {i}: {g} vs {w}"
            );
        }
        // A child reads at least its halo, and parts and read ranges start where
        // every device can start a view.
        let align = devs.iter().map(|d| d.info().view_align_bytes).max().unwrap();
        for c in &us[..parts - 1] {
            assert!(c.read_range().end > c.range().end, "{c:?}");
        }
        for c in &us[1..] {
            assert!(c.read_range().start < c.range().start, "{c:?}");
            assert_eq!(c.range().start * 4 % align, 0, "{c:?}");
            assert_eq!(c.read_range().start * 4 % align, 0, "{c:?}");
        }
        assert_eq!(us[0].read_range().start, 0, "halos stay inside the array");
        assert_eq!(us.iter().map(|c| c.len()).sum::<usize>(), n);
        println!("{placement:?}\n{}", g.report());
    }
}

#[test]
fn bad_tasks_are_refused_with_typed_errors() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let g = graph(&devs, Placement::Dmda);
    let add = kernels::vector_add().unwrap();
    let a = g.data("a", &[1.0f32; 16]).unwrap();
    let i = g.data("i", &[1u32; 16]).unwrap();
    let e = g
        .submit(Task::new(&add).read(&a).read(&a).read(&a).items(16))
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { why, .. } if why.contains("Read") && why.contains("Write")),
        "{e}"
    );
    let e = g.submit(Task::new(&add).read(&a).read(&a).items(16)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ArgCount {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = g
        .submit(Task::new(&add).read(&a).read(&i).write(&a).items(16))
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { why, .. } if why.contains("u32")),
        "{e}"
    );
    let e = g.submit(Task::new(&add).read(&a).read(&a).write(&a)).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { why, .. } if why.contains("item space")),
        "{e}"
    );
    let other = offload::Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap();
    let e = g
        .submit(
            Task::new(&add)
                .read(&a)
                .read(&a)
                .write(&a)
                .items(16)
                .on(&other.devices()[0]),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { why, .. } if why.contains("not in the graph")),
        "{e}"
    );
    // A launch the device refuses (16 elements, 64 items) fails the task, names it,
    // and the data keeps its values.
    let b = g.data("b", &[0.0f32; 16]).unwrap();
    let t = g.submit(Task::new(&add).read(&a).read(&a).write(&b).items(64)).unwrap();
    let e = t.wait().unwrap_err();
    // Every device refused it (and, as in the scheduler, was dropped for it).
    assert!(
        matches!(&e, Error::AllDevicesFailed { errors, .. }
            if !errors.is_empty() && errors.iter().all(|x| matches!(x, Error::BufferTooShort { .. }))),
        "{e}"
    );
    assert_eq!(a.acquire().unwrap(), vec![1.0; 16]);
    assert!(g.wait_all().is_err());
    // Partitions that do not fit are refused.
    assert!(a.partition(Partition::Blocks { parts: 17, halo: 0 }).is_err());
    assert!(
        a.partition(Partition::Rows {
            row_len: 5,
            parts: 2,
            halo: 0
        })
        .is_err()
    );
}

#[test]
fn a_failed_device_is_dropped_and_lost_data_is_recomputed() {
    let rt = common::runtime();
    let Some(cpu) = rt.devices().iter().find(|d| d.backend() == BackendKind::Cpu).cloned() else {
        return common::missing("cpu", "no CPU device");
    };
    let ocls = common::devices_of(&rt, BackendKind::OpenCl);
    let Some(ocl) = ocls.first() else { return };
    let add = kernels::vector_add().unwrap();
    let n = 4096;
    // Every read from the faulty device fails: what only it holds is lost.
    let faulty = inject_faults(ocl, FaultPlan::none().fail_from(FaultOp::Read, 1));
    let devs = [cpu.clone(), faulty.clone(), ocl.clone()];
    let g = graph(&devs, Placement::Dmda);
    let a = g.data("a", &vec![1.0f32; n]).unwrap();
    let b = g.data("b", &vec![2.0f32; n]).unwrap();
    let c = g.data("c", &vec![0.0f32; n]).unwrap();
    let d = g.data("d", &vec![0.0f32; n]).unwrap();
    // c = a + b on the faulty device (the first allowed, nothing known yet);
    // d = c + b on the CPU must fetch c: the read fails, the device is dropped,
    // c is lost and recomputed on the other OpenCL device.
    g.submit(Task::new(&add).read(&a).read(&b).write(&c).items(n).on(&faulty).on(ocl))
        .unwrap();
    g.submit(Task::new(&add).read(&c).read(&b).write(&d).items(n).on(&cpu))
        .unwrap();
    assert_eq!(d.acquire().unwrap(), vec![5.0; n]);
    assert_eq!(c.acquire().unwrap(), vec![3.0; n]);
    let r = g.report();
    assert_eq!(r.dropped.len(), 1, "{r}");
    assert!(
        r.tasks
            .iter()
            .any(|t| t.recovery_of == Some(0) && t.device == g.labels()[2]),
        "{r}"
    );

    // The same with the producer tied to the faulty device: the loss is reported,
    // naming the data and the elements.
    let faulty = inject_faults(ocl, FaultPlan::none().fail_from(FaultOp::Read, 1));
    let devs = [cpu.clone(), faulty.clone()];
    let g = graph(&devs, Placement::Dmda);
    let a = g.data("a", &vec![1.0f32; n]).unwrap();
    let c = g.data("c", &vec![0.0f32; n]).unwrap();
    let d = g.data("d", &vec![0.0f32; n]).unwrap();
    g.submit(Task::new(&add).read(&a).read(&a).write(&c).items(n).on(&faulty))
        .unwrap();
    let t = g
        .submit(Task::new(&add).read(&c).read(&a).write(&d).items(n).on(&cpu))
        .unwrap();
    let e = t.wait().unwrap_err();
    assert!(
        matches!(&e, Error::DataLost { data, range, .. } if data == "c" && *range == (0..n)),
        "{e}"
    );
    // The registered values of `a` are still there.
    assert_eq!(a.acquire().unwrap(), vec![1.0; n]);
}

#[test]
fn split_tasks_compute_chunks_on_resident_parts() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let add = kernels::vector_add().unwrap();
    let mut rng = Rng::fresh("split tasks");
    let n = 1 << 20;
    let a0 = rng.vec_f32(n, -1.0, 1.0);
    let b0 = rng.vec_f32(n, -1.0, 1.0);
    for policy in [
        offload::schedule::Policy::default(),
        offload::schedule::Policy::Dynamic { chunk: 1 << 16 },
        offload::schedule::Policy::Static,
    ] {
        let g = TaskGraph::builder(&devs)
            .allow_shared_cores(true)
            .split_policy(policy)
            .model(PerfModel::in_memory())
            .build()
            .unwrap();
        let a = g.data("a", &a0).unwrap();
        let b = g.data("b", &b0).unwrap();
        let c = g.data("c", &vec![0.0f32; n]).unwrap();
        let d = g.data("d", &vec![0.0f32; n]).unwrap();
        // c = a + b, d = c + b, c = d + a: each split over every device.
        g.submit(Task::new(&add).read(&a).read(&b).write(&c).items(n).split())
            .unwrap();
        g.submit(Task::new(&add).read(&c).read(&b).write(&d).items(n).split())
            .unwrap();
        g.submit(Task::new(&add).read(&d).read(&a).write(&c).items(n).split())
            .unwrap();
        let want_d: Vec<f32> = a0.iter().zip(&b0).map(|(x, y)| (x + y) + y).collect();
        let want_c: Vec<f32> = want_d.iter().zip(&a0).map(|(x, y)| x + y).collect();
        assert_eq!(d.acquire().unwrap(), want_d, "{policy:?}");
        assert_eq!(c.acquire().unwrap(), want_c, "{policy:?}");
        let r = g.report();
        for id in 0..3 {
            let items: usize = r
                .tasks
                .iter()
                .filter(|t| t.id == id)
                .map(|t| t.chunk.map_or(n, |(a, b)| b - a))
                .sum();
            assert_eq!(items, n, "task {id}: every item once\n{r}");
        }
        // Chunks read what earlier chunks left on their device in place.
        assert!(r.bytes_resident() > 0, "{r}");
        println!("{policy:?}\n{r}");
    }
}

#[test]
fn a_split_task_survives_a_failing_device() {
    let rt = common::runtime();
    let Some(ocl) = common::devices_of(&rt, BackendKind::OpenCl).first().cloned() else {
        return;
    };
    let cpu = rt.device("cpu").unwrap();
    let add = kernels::vector_add().unwrap();
    let n = 1 << 18;
    for k in 1..4 {
        let faulty = inject_faults(&ocl, FaultPlan::none().fail_on(FaultOp::Launch, k));
        let devs = [cpu.clone(), faulty];
        let g = TaskGraph::builder(&devs)
            .allow_shared_cores(true)
            .split_policy(offload::schedule::Policy::Dynamic { chunk: 1 << 14 })
            .model(PerfModel::in_memory())
            .build()
            .unwrap();
        let a = g.data("a", &vec![1.0f32; n]).unwrap();
        let c = g.data("c", &vec![0.0f32; n]).unwrap();
        g.submit(Task::new(&add).read(&a).read(&a).write(&c).items(n).split())
            .unwrap();
        assert_eq!(c.acquire().unwrap(), vec![2.0; n], "failing launch #{k}");
    }
}

/// A matrix in tile layout, cut into 2-D tiles: one task per tile, placed over
/// every device, and the result read back in row-major order.
#[test]
fn tiles_of_a_matrix_are_tasks_over_every_device() {
    let rt = common::runtime();
    let devs: Vec<Device> = rt.devices().to_vec();
    let (rows, cols, tr, tc) = (128, 192, 64, 64);
    let a: Vec<f32> = (0..rows * cols).map(|i| (i % 97) as f32).collect();
    let b: Vec<f32> = (0..rows * cols).map(|i| (i % 13) as f32 * 0.5).collect();
    let g = graph(&devs, Placement::Dmda);
    let ta = g
        .data("a", &offload::task::to_tiles(&a, rows, cols, tr, tc).unwrap())
        .unwrap();
    let tb = g
        .data("b", &offload::task::to_tiles(&b, rows, cols, tr, tc).unwrap())
        .unwrap();
    let tcd = g.data("c", &vec![0.0f32; rows * cols]).unwrap();
    let how = Partition::Tiles {
        rows,
        cols,
        tile_rows: tr,
        tile_cols: tc,
    };
    let (pa, pb, pc) = (
        ta.partition(how).unwrap(),
        tb.partition(how).unwrap(),
        tcd.partition(how).unwrap(),
    );
    assert_eq!(pa.len(), (rows / tr) * (cols / tc));
    let add = kernels::vector_add().unwrap();
    for ((x, y), z) in pa.iter().zip(&pb).zip(&pc) {
        g.submit(Task::new(&add).read(x).read(y).write(z).items(tr * tc))
            .unwrap();
    }
    let c = offload::task::from_tiles(&tcd.acquire().unwrap(), rows, cols, tr, tc).unwrap();
    for i in 0..rows * cols {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
    // Tiles that are not whole, or a matrix of the wrong size, are refused.
    assert!(
        ta.partition(Partition::Tiles {
            rows,
            cols,
            tile_rows: 50,
            tile_cols: tc
        })
        .is_err()
    );
    assert!(
        ta.partition(Partition::Tiles {
            rows: rows + 64,
            cols,
            tile_rows: tr,
            tile_cols: tc
        })
        .is_err()
    );
}

/// The tiled matrix multiply as a DAG: C(i,j) += A(i,p) · B(p,j) for every p,
/// one task each (a chain per C tile, the A and B tiles read by many), placed
/// over every device; the result matches a float64 reference.
#[test]
fn tiled_gemm_dag_matches_the_reference() {
    let rt = common::runtime();
    let devs: Vec<Device> = rt.devices().to_vec();
    let (m, n, k, t) = (96, 64, 160, 32);
    let mut rng = Rng::fresh("tiled_gemm");
    let a = rng.vec_f32(m * k, -0.5, 0.5);
    let b = rng.vec_f32(k * n, -0.5, 0.5);
    let g = graph(&devs, Placement::Dmda);
    let tiles = |rows, cols| Partition::Tiles {
        rows,
        cols,
        tile_rows: t,
        tile_cols: t,
    };
    let da = g.data("A", &offload::task::to_tiles(&a, m, k, t, t).unwrap()).unwrap();
    let db = g.data("B", &offload::task::to_tiles(&b, k, n, t, t).unwrap()).unwrap();
    let dc = g.data("C", &vec![0.0f32; m * n]).unwrap();
    let (ta, tb, tc) = (
        da.partition(tiles(m, k)).unwrap(),
        db.partition(tiles(k, n)).unwrap(),
        dc.partition(tiles(m, n)).unwrap(),
    );
    let kern = kernels::gemm_tile().unwrap();
    let (mt, nt, kt) = (m / t, n / t, k / t);
    for i in 0..mt {
        for j in 0..nt {
            for p in 0..kt {
                g.submit(
                    Task::new(&kern)
                        .read(&ta[i * kt + p])
                        .read(&tb[p * nt + j])
                        .read_write(&tc[i * nt + j])
                        .scalar(t as u32)
                        .items(t * t)
                        .name(&format!("C{i}{j} += A{i}{p} B{p}{j}")),
                )
                .unwrap();
            }
        }
    }
    let c = offload::task::from_tiles(&dc.acquire().unwrap(), m, n, t, t).unwrap();
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            worst = worst.max((c[i * n + j] as f64 - want).abs() / want.abs().max(1.0));
        }
    }
    assert!(worst < 1e-5, "relative error {worst}");
    let r = g.report();
    assert_eq!(r.tasks.len(), mt * nt * kt, "{r}");
    // The chain of one C tile is the critical path: kt tasks.
    assert!(r.critical_path.len() >= kt, "{r}");
    // Too many items for the tile is refused before anything runs.
    let bad = g.submit(
        Task::new(&kern)
            .read(&ta[0])
            .read(&tb[0])
            .read_write(&tc[0])
            .scalar(16u32)
            .items(t * t),
    );
    let refused = bad.and_then(|h| h.wait());
    assert!(refused.is_err(), "t = 16 with {} items", t * t);
}
