//! The built-in Jacobi-2D kernel on every available device: alone (whole
//! grids, bands with halos and odd leads, split chunks through the scheduler)
//! and through the task graph over row bands under both placements, each
//! compared bit for bit with a plain host reference; launches without the
//! rows they need are refused.

mod common;

use common::Rng;
use offload::schedule::{HostArg, PerfModel, Policy, Scheduler};
use offload::task::{Partition, Placement, TaskGraph};
use offload::{Arg, Device, Error, LaunchConfig, kernels};

/// One sweep of a `rows × width` grid, written independently of the crate:
/// borders copied, interior `0.25 * (((N + S) + E) + W)`.
fn reference_step(x: &[f32], width: usize) -> Vec<f32> {
    let rows = x.len() / width;
    let mut y = x.to_vec();
    for r in 1..rows.saturating_sub(1) {
        for c in 1..width.saturating_sub(1) {
            let at = |rr: usize, cc: usize| x[rr * width + cc];
            y[r * width + c] = 0.25f32 * (((at(r - 1, c) + at(r + 1, c)) + at(r, c + 1)) + at(r, c - 1));
        }
    }
    y
}

fn reference(x0: &[f32], width: usize, iters: usize) -> Vec<f32> {
    (0..iters).fold(x0.to_vec(), |x, _| reference_step(&x, width))
}

/// A grid with a hot top edge and random values elsewhere.
fn grid(rng: &mut Rng, width: usize, rows: usize) -> Vec<f32> {
    let mut x = rng.vec_f32(width * rows, 0.0, 1.0);
    x[..width].fill(4.0);
    x
}

/// The first element where `got` and `want` differ in bits, if any.
fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits())
        .map(|i| (i, got[i], want[i]))
}

/// Launch `jacobi` on `dev` once: `input` is the band's read range, the result
/// has `count` elements starting at element `lead` of it.
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &Device,
    input: &[f32],
    width: usize,
    lead: usize,
    row0: usize,
    rows: usize,
    offset: usize,
    count: usize,
) -> offload::Result<Vec<f32>> {
    let k = kernels::jacobi()?;
    let din = dev.upload(input)?;
    let mut dout = dev.upload(&vec![f32::NAN; count])?;
    dev.launch(
        &k,
        &LaunchConfig::for_items(count, dev.info()),
        &[
            Arg::input(&din),
            Arg::output(&mut dout),
            (width as u32).into(),
            (lead as u32).into(),
            (input.len() as u32).into(),
            (row0 as u32).into(),
            (rows as u32).into(),
            (offset as u32).into(),
            (count as u32).into(),
        ],
    )?;
    dout.to_vec()
}

#[test]
fn the_host_reference_matches_an_independent_one() {
    let mut rng = Rng::fresh("jacobi host");
    for (w, h) in [(130, 130), (1, 7), (2, 5), (3, 3), (17, 1), (64, 2), (33, 40)] {
        let x = grid(&mut rng, w, h);
        let mut y = vec![f32::NAN; x.len()];
        kernels::jacobi_host(&x, &mut y, w).unwrap();
        assert_eq!(first_difference(&y, &reference_step(&x, w)), None, "{w}x{h}");
    }
    let mut y = vec![0.0; 10];
    assert!(kernels::jacobi_host(&[0.0; 10], &mut y, 3).is_err());
    assert!(kernels::jacobi_host(&[0.0; 10], &mut y, 0).is_err());
}

#[test]
fn the_kernel_alone_matches_the_reference_on_every_device() {
    let rt = common::runtime();
    let mut rng = Rng::fresh("jacobi kernel");
    let (w, h) = (130, 130);
    let x = grid(&mut rng, w, h);
    let want = reference_step(&x, w);
    for dev in common::devices(&rt) {
        let label = dev.label().to_string();
        // The whole grid.
        let got = launch(&dev, &x, w, 0, 0, h, 0, w * h).unwrap();
        assert_eq!(first_difference(&got, &want), None, "whole grid on {label}");
        // A band of rows 40..90 with one halo row each side and 5 extra
        // elements before (as an aligned view would give).
        let (r0, r1) = (40, 90);
        let start = (r0 - 1) * w - 5;
        let got = launch(
            &dev,
            &x[start..(r1 + 1) * w],
            w,
            r0 * w - start,
            r0,
            h,
            0,
            (r1 - r0) * w,
        )
        .unwrap();
        assert_eq!(first_difference(&got, &want[r0 * w..r1 * w]), None, "band on {label}");
        // The first and the last band: border rows on one side, no halo there.
        let got = launch(&dev, &x[..31 * w], w, 0, 0, h, 0, 30 * w).unwrap();
        assert_eq!(first_difference(&got, &want[..30 * w]), None, "top band on {label}");
        let got = launch(&dev, &x[99 * w..], w, w, 100, h, 0, 30 * w).unwrap();
        assert_eq!(first_difference(&got, &want[100 * w..]), None, "bottom band on {label}");
        // A chunk that starts and ends mid-row (offset ≠ 0), as the scheduler cuts.
        let (off, count) = (3 * w + 17, 50 * w + 9);
        let got = launch(&dev, &x, w, 0, 0, h, off, count).unwrap();
        assert_eq!(
            first_difference(&got, &want[off..off + count]),
            None,
            "chunk on {label}"
        );
    }
}

#[test]
fn tall_narrow_grids_find_their_rows_and_columns() {
    // The OpenCL version finds rows and columns from a float estimate of
    // g / width for grids of up to 2^21 rows and by division above: both sides
    // of that limit, with quotients near it.
    let rt = common::runtime();
    let mut rng = Rng::fresh("jacobi tall");
    // Width 9 with 2^21 rows: g reaches past 2^24, where (float)g rounds.
    for (w, h) in [(9usize, 1usize << 21), (5, (1 << 21) + 3)] {
        let x = grid(&mut rng, w, h);
        let want = reference_step(&x, w);
        for dev in common::devices(&rt) {
            let got = launch(&dev, &x, w, 0, 0, h, 0, w * h).unwrap();
            assert_eq!(first_difference(&got, &want), None, "{w}x{h} on {}", dev.label());
            // A chunk near the end (offset ≠ 0, large quotients).
            let off = w * (h - 1000) + 1;
            let got = launch(&dev, &x, w, 0, 0, h, off, w * h - off).unwrap();
            assert_eq!(
                first_difference(&got, &want[off..]),
                None,
                "{w}x{h} tail on {}",
                dev.label()
            );
        }
    }
}

#[test]
fn launches_without_the_rows_they_need_are_refused() {
    let rt = common::runtime();
    let (w, h) = (64, 32);
    let x = vec![1.0f32; w * h];
    for dev in common::devices(&rt) {
        let refused = |r: offload::Result<Vec<f32>>, what: &str| match r {
            Err(Error::InvalidArgument { kernel, why }) => {
                assert_eq!(kernel, "jacobi");
                println!("{what} on {}: {why}", dev.label());
            }
            other => panic!("{what} on {}: expected InvalidArgument, got {other:?}", dev.label()),
        };
        // Rows 10..20 without the halo rows.
        refused(
            launch(&dev, &x[10 * w..20 * w], w, 0, 10, h, 0, 10 * w),
            "band without halos",
        );
        // Without the row below only.
        refused(
            launch(&dev, &x[9 * w..20 * w], w, w, 10, h, 0, 10 * w),
            "band without the row below",
        );
        // More owned elements than `in` holds; rows beyond the grid; width 0.
        refused(launch(&dev, &x, w, 0, 0, h, 0, w * h + 1), "count past in_len");
        refused(launch(&dev, &x, w, 0, 0, h - 1, 0, w * h), "rows past the grid");
        refused(launch(&dev, &x, 0, 0, 0, h, 0, 16), "width 0");
        // The same band with its halos is accepted.
        assert!(launch(&dev, &x[9 * w..21 * w], w, w, 10, h, 0, 10 * w).is_ok());
    }
}

#[test]
fn split_runs_through_the_scheduler_match_the_reference() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let mut rng = Rng::fresh("jacobi split");
    let (w, h) = (257, 200);
    let k = kernels::jacobi().unwrap();
    let x0 = grid(&mut rng, w, h);
    let want = reference(&x0, w, 4);
    // Each device alone (every chunk on it), then all of them together.
    let mut sets: Vec<Vec<Device>> = devs.iter().map(|d| vec![d.clone()]).collect();
    sets.push(devs.clone());
    for set in sets {
        let mut s = Scheduler::new(&set)
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(Policy::Dynamic { chunk: 3000 })
            .in_memory_model();
        let mut x = x0.clone();
        let mut items = vec![0usize; set.len()];
        for _ in 0..4 {
            let mut y = vec![f32::NAN; x.len()];
            let r = s
                .run(
                    &k,
                    w * h,
                    &mut [
                        HostArg::input(&x),
                        HostArg::output(&mut y),
                        HostArg::scalar(w as u32),
                        HostArg::scalar(0u32),
                        HostArg::scalar((w * h) as u32),
                        HostArg::scalar(0u32),
                        HostArg::scalar(h as u32),
                    ],
                )
                .unwrap();
            assert!(r.failures.is_empty(), "{r}");
            for (i, d) in set.iter().enumerate() {
                items[i] += r.device(d.label()).map_or(0, |s| s.items);
            }
            x = y;
        }
        let labels: Vec<&str> = set.iter().map(|d| d.label()).collect();
        assert_eq!(first_difference(&x, &want), None, "split over {labels:?}");
        if set.len() == 1 {
            assert_eq!(items[0], 4 * w * h, "{labels:?}");
        }
        println!("split over {labels:?}: items per device {items:?}");
    }
}

#[test]
fn row_bands_on_a_task_graph_match_the_reference_under_both_placements() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let k = kernels::jacobi().unwrap();
    let mut rng = Rng::fresh("jacobi tasks");
    let (n, iters, parts) = (130usize, 25usize, 5usize);
    let x0 = grid(&mut rng, n, n);
    let want = reference(&x0, n, iters);
    for placement in [Placement::Dmda, Placement::Eager] {
        let g = TaskGraph::builder(&devs)
            .allow_shared_cores(true)
            .placement(placement)
            .model(PerfModel::in_memory())
            .build()
            .unwrap();
        let u = g.data("u", &x0).unwrap();
        let v = g.data("v", &vec![f32::NAN; n * n]).unwrap();
        let how = Partition::Rows {
            row_len: n,
            parts,
            halo: 1,
        };
        let (us, vs) = (u.partition(how).unwrap(), v.partition(how).unwrap());
        assert_eq!(us.len(), parts);
        for it in 0..iters {
            let (src, dst) = if it.is_multiple_of(2) { (&us, &vs) } else { (&vs, &us) };
            for (s, d) in src.iter().zip(dst) {
                assert_eq!(s.range(), d.range());
                assert_eq!(d.range().start % n, 0, "bands are whole rows: {d:?}");
                g.submit(kernels::jacobi_task(&k, s, d, n, n).unwrap()).unwrap();
            }
        }
        let result = if iters.is_multiple_of(2) { &u } else { &v };
        let got = result.acquire().unwrap();
        let r = g.report();
        assert_eq!(
            first_difference(&got, &want),
            None,
            "{placement:?} over {}\n{r}",
            devs.iter().map(|d| d.label()).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(r.tasks.len(), iters * parts, "{r}");
        assert!(r.failures.is_empty() && r.dropped.is_empty(), "{r}");
        println!("{placement:?}\n{r}");
    }
}

/// `kernels::jacobi_task` refuses bands it cannot describe: a zero width, and a
/// written band that starts before the range its source reads.
#[test]
fn jacobi_task_refuses_bands_it_cannot_describe() {
    let rt = common::runtime();
    let g = TaskGraph::new(rt.devices()).unwrap();
    let k = kernels::jacobi().unwrap();
    let n = 16;
    let u = g.data("u", &vec![0.0f32; n * n]).unwrap();
    let v = g.data("v", &vec![0.0f32; n * n]).unwrap();
    let how = Partition::Rows {
        row_len: n,
        parts: 2,
        halo: 1,
    };
    let (us, vs) = (u.partition(how).unwrap(), v.partition(how).unwrap());
    let err = kernels::jacobi_task(&k, &us[0], &vs[0], 0, n).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    // Band 0 written from band 1's read range, which starts after band 0.
    let err = kernels::jacobi_task(&k, &us[1], &vs[0], n, n).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        err.to_string().contains("does not start inside the read range"),
        "{err}"
    );
    // The matching bands give a task.
    g.submit(kernels::jacobi_task(&k, &us[0], &vs[0], n, n).unwrap())
        .unwrap();
    g.wait_all().unwrap();
}
