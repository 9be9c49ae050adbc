//! The roofline: calibration kernels on every device, declared work reaching the
//! profile, the report's numbers, and the SVG (parsed: points inside the plot,
//! on the right side of the roof).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use offload::profile::roofline::{KernelWork, Peaks, RooflineData};
use offload::profile::{Clock, Profile, Stage, StageRecord};
use offload::{Arg, LaunchConfig};

fn kernel_rec(device: &str, label: &str, start_ns: u64, end_ns: u64) -> StageRecord {
    StageRecord {
        device: device.into(),
        queue: 0,
        stage: Stage::Kernel,
        label: label.into(),
        bytes: 0,
        items: 1,
        start_ns,
        end_ns,
        clock: Clock::Device,
    }
}

fn work(device: &str, label: &str, flops: f64, bytes: f64) -> KernelWork {
    KernelWork {
        device: device.into(),
        label: label.into(),
        flops,
        bytes,
        launches: 1,
    }
}

/// Two devices, a memory-bound and a compute-bound kernel, built by hand.
fn synthetic() -> Profile {
    Profile {
        records: vec![
            kernel_rec("gpu:0", "stream", 0, 1_000_000),
            kernel_rec("gpu:0", "dense", 1_000_000, 3_000_000),
            kernel_rec("cpu:0", "dense", 0, 10_000_000),
        ],
        roofline: RooflineData {
            work: vec![
                // 4e5 flops and 4.8e7 bytes in 1 ms: 0.4 GFLOP/s, 48 GB/s.
                work("gpu:0", "stream", 4e5, 4.8e7),
                // 2e9 flops, 1e7 bytes in 2 ms: 1000 GFLOP/s, 200 flop/B.
                work("gpu:0", "dense", 2e9, 1e7),
                // 5e8 flops, 1e6 bytes in 10 ms: 50 GFLOP/s.
                work("cpu:0", "dense", 5e8, 1e6),
            ],
            peaks: vec![
                (
                    "gpu:0".into(),
                    Peaks {
                        gflops: 2000.0,
                        gbps: 100.0,
                    },
                ),
                (
                    "cpu:0".into(),
                    Peaks {
                        gflops: 100.0,
                        gbps: 20.0,
                    },
                ),
            ],
        },
        ..Default::default()
    }
}

#[test]
fn report_gives_rates_intensity_roof_and_fraction() {
    let r = synthetic().roofline();
    assert_eq!(r.points.len(), 3);
    let stream = &r.points[0];
    assert!((stream.gflops - 0.4).abs() < 1e-9, "{stream:?}");
    assert!((stream.gbps - 48.0).abs() < 1e-9);
    assert!((stream.intensity - 4e5 / 4.8e7).abs() < 1e-12);
    // Roof at that intensity: 100 GB/s × I.
    let roof = 100.0 * stream.intensity;
    assert!((stream.bound_gflops.unwrap() - roof).abs() < 1e-9);
    assert!((stream.fraction.unwrap() - 0.48).abs() < 1e-9);
    let dense = &r.points[1];
    assert!((dense.gflops - 1000.0).abs() < 1e-6);
    assert!((dense.fraction.unwrap() - 0.5).abs() < 1e-9);
    let cpu = &r.points[2];
    assert!((cpu.fraction.unwrap() - 0.5).abs() < 1e-9);
    let text = synthetic().report().to_string();
    assert!(text.contains("gpu:0 roofline: FMA peak 2000.0 GFLOP/s"), "{text}");
    assert!(text.contains("48.0%"), "{text}");
}

/// Parse the SVG: per panel the plot rectangle, the roof polyline and the points.
fn check_svg(svg: &str, expect_points: usize) {
    let doc = roxmltree::Document::parse(svg).expect("the roofline SVG parses");
    let num = |n: &roxmltree::Node<'_, '_>, a: &str| -> f64 { n.attribute(a).unwrap().parse::<f64>().unwrap() };
    let mut points = 0;
    for panel in doc.descendants().filter(|n| n.attribute("class") == Some("panel")) {
        let plot = panel
            .descendants()
            .find(|n| n.attribute("class") == Some("plot"))
            .expect("a plot frame");
        let (x0, y0, w, h) = (
            num(&plot, "x"),
            num(&plot, "y"),
            num(&plot, "width"),
            num(&plot, "height"),
        );
        let roof: Option<Vec<(f64, f64)>> =
            panel
                .descendants()
                .find(|n| n.attribute("class") == Some("roof"))
                .map(|n| {
                    n.attribute("points")
                        .unwrap()
                        .split_whitespace()
                        .map(|p| {
                            let (x, y) = p.split_once(',').unwrap();
                            (x.parse().unwrap(), y.parse().unwrap())
                        })
                        .collect()
                });
        for c in panel.descendants().filter(|n| n.attribute("class") == Some("point")) {
            points += 1;
            let (cx, cy) = (num(&c, "cx"), num(&c, "cy"));
            assert!(
                cx >= x0 && cx <= x0 + w && cy >= y0 && cy <= y0 + h,
                "point {:?} at ({cx}, {cy}) outside the plot ({x0}, {y0}, {w}, {h})",
                c.attribute("data-label")
            );
            assert!(c.descendants().any(|t| t.has_tag_name("title")), "a tooltip");
            // Below the roof (larger y on screen), within drawing precision.
            if let Some(roof) = &roof {
                let seg = roof
                    .windows(2)
                    .find(|s| s[0].0 <= cx && cx <= s[1].0)
                    .expect("the roof spans the point");
                let (a, b) = (seg[0], seg[1]);
                let t = if b.0 > a.0 { (cx - a.0) / (b.0 - a.0) } else { 0.0 };
                let roof_y = a.1 + t * (b.1 - a.1);
                assert!(
                    cy >= roof_y - 0.5,
                    "point {:?} above the roof ({cy} < {roof_y})",
                    c.attribute("data-label")
                );
            }
        }
    }
    assert_eq!(points, expect_points);
}

#[test]
fn svg_points_inside_the_plot_and_under_the_roof() {
    let p = synthetic();
    let svg = p.to_svg_roofline();
    check_svg(&svg, 3);
    // Labels are escaped: a label with markup still parses.
    let mut q = synthetic();
    q.records.push(kernel_rec("cpu:0", "a<b>&c", 0, 1_000_000));
    q.roofline.work.push(work("cpu:0", "a<b>&c", 1e6, 1e6));
    check_svg(&q.to_svg_roofline(), 4);
    // Empty profile: a valid SVG that says so.
    let e = Profile::default().to_svg_roofline();
    roxmltree::Document::parse(&e).unwrap();
    assert!(e.contains("empty roofline"));
}

#[test]
fn svg_fails_on_a_point_above_the_roof() {
    // The check itself must be able to fail: a kernel claiming 3× the peak.
    let mut p = synthetic();
    p.roofline.work[2].flops *= 6.0;
    let svg = p.to_svg_roofline();
    let r = std::panic::catch_unwind(|| check_svg(&svg, 3));
    assert!(r.is_err(), "a point above the roof is caught");
}

/// On every device: the calibration gives positive peaks, declared work reaches
/// the profile, and a real vector_add run lands under its device's roof.
#[test]
fn calibration_and_declared_work_on_every_device() {
    let rt = common::runtime();
    for d in &common::devices(&rt) {
        let peaks = offload::roofline::peaks(d).unwrap();
        assert!(peaks.valid(), "{}: {peaks:?}", d.label());
        // Cached under the device's key.
        assert_eq!(offload::roofline::cached(d), Some(peaks), "{}", d.label());
        let n = 1 << 20;
        let mut rng = common::Rng::fresh("roofline");
        let a = rng.vec_f32(n, 0.5, 1.5);
        let b = rng.vec_f32(n, 0.5, 1.5);
        let k = offload::kernels::vector_add().unwrap();
        assert!(k.has_cost());
        let da = d.upload(&a).unwrap();
        let db = d.upload(&b).unwrap();
        let mut dc = d.alloc::<f32>(n).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        for _ in 0..3 {
            d.launch(
                &k,
                &cfg,
                &[
                    Arg::input(&da),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    0u32.into(),
                    (n as u32).into(),
                ],
            )
            .unwrap();
        }
        let prof = rt.profile();
        let w = prof
            .roofline
            .work
            .iter()
            .find(|w| w.device == d.label() && w.label == "vector_add")
            .expect("declared work recorded");
        assert_eq!(w.launches, 3);
        assert_eq!(w.flops, 3.0 * n as f64);
        assert_eq!(w.bytes, 36.0 * n as f64);
        let pt = prof
            .roofline()
            .points
            .into_iter()
            .find(|p| p.device == d.label() && p.label == "vector_add")
            .expect("a roofline point");
        assert!(pt.fraction.unwrap() > 0.0, "{pt:?}");
        let c = dc.to_vec().unwrap();
        assert!(a.iter().zip(&b).zip(&c).all(|((x, y), z)| x + y == *z));
    }
}

/// The FMA calibration kernel computes the same chains on every device.
#[test]
fn fma_peak_kernel_matches_a_reference() {
    let rt = common::runtime();
    let k = offload::kernels::fma_peak().unwrap();
    let n = 1000usize;
    let iters = 50u32;
    let (x, y) = (0.999f32, 0.001f32);
    let reference: Vec<f64> = (0..n)
        .map(|i| {
            (0..8)
                .map(|c| {
                    let mut a = (i & 1023) as f64 * 1e-4 + c as f64 * 0.01;
                    for _ in 0..iters {
                        a = a * x as f64 + y as f64;
                    }
                    a
                })
                .sum()
        })
        .collect();
    for d in &common::devices(&rt) {
        let mut out = d.upload(&vec![f32::NAN; n]).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        d.launch(
            &k,
            &cfg,
            &[
                Arg::output(&mut out),
                x.into(),
                y.into(),
                iters.into(),
                0u32.into(),
                (n as u32).into(),
            ],
        )
        .unwrap();
        let got = out.to_vec().unwrap();
        common::assert_close(d.label(), &got, &reference, 1e-5);
    }
}
