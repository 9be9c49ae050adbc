//! Profiling made visible: the Chrome trace and the SVG timeline of a real run,
//! parsed back and checked; the empty profile; unwritable paths; the report's
//! Amdahl line and transfer verdict; a hand-built multi-device profile for lanes,
//! overlapping tracks and idle time; two queues of one device on their own lanes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Rng, assert_close};
use offload::profile::report::amdahl;
use offload::profile::{Clock, Profile, Stage, StageRecord};
use offload::{Arg, Error, LaunchConfig, Runtime, kernels};
use serde_json::Value;

const LAUNCHES: usize = 3;

/// A real vector add on every available device (the CPU always; OpenCL and CUDA
/// where present, or required by `OFFLOAD_REQUIRE`): `LAUNCHES` rounds of upload
/// a and b, launch, download c, each checked against float64. Returns the runtime
/// (its profiler holds the records), the labels of the devices that ran, and n.
fn vector_add_run() -> (Runtime, Vec<String>, usize) {
    let rt = common::runtime();
    let k = kernels::vector_add().unwrap();
    // 16 MiB per vector: out of cache, so copies cost what they cost.
    let n = 1 << 22;
    let mut rng = Rng::fresh("profile vector_add");
    let mut ran = Vec::new();
    for dev in common::devices(&rt) {
        if !dev.supports(&k) {
            println!("SKIP {}: vector_add has no implementation for it", dev.label());
            continue;
        }
        let mut da = dev.alloc::<f32>(n).unwrap();
        let mut db = dev.alloc::<f32>(n).unwrap();
        let mut dc = dev.alloc::<f32>(n).unwrap();
        let cfg = LaunchConfig::for_items(n, dev.info());
        for round in 0..LAUNCHES {
            let a = rng.vec_f32(n, -10.0, 10.0);
            let b = rng.vec_f32(n, -10.0, 10.0);
            let reference: Vec<f64> = a.iter().zip(&b).map(|(a, b)| *a as f64 + *b as f64).collect();
            // Poison the device output so an unwritten element shows up as NaN.
            dc.write(&vec![f32::NAN; n]).unwrap();
            da.write(&a).unwrap();
            db.write(&b).unwrap();
            dev.launch(
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
            let mut c = vec![f32::NAN; n];
            dc.read(&mut c).unwrap();
            assert_close(
                &format!("vector add on {} round {round}", dev.label()),
                &c,
                &reference,
                1e-6,
            );
        }
        ran.push(dev.label().to_string());
    }
    assert!(
        ran.iter().any(|d| d == "cpu:0"),
        "the CPU device always runs vector_add"
    );
    (rt, ran, n)
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("trace is not valid JSON: {e}\n{json}"))
}

/// Structural checks that hold for every exported trace; returns, per pid, the
/// device label.
fn check_trace_structure(profile: &Profile, v: &Value) -> BTreeMap<u64, String> {
    assert_eq!(v["displayTimeUnit"], "ms");
    let events = v["traceEvents"].as_array().expect("traceEvents is an array");
    let mut process_names: BTreeMap<u64, String> = BTreeMap::new();
    let mut thread_names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut slices = Vec::new();
    for e in events {
        let pid = e["pid"].as_u64().expect("pid");
        let tid = e["tid"].as_u64().expect("tid");
        match e["ph"].as_str().expect("ph") {
            "M" => match e["name"].as_str().unwrap() {
                "process_name" => {
                    let name = e["args"]["name"].as_str().expect("process name").to_string();
                    assert!(process_names.insert(pid, name).is_none(), "pid {pid} named twice");
                }
                "thread_name" => {
                    let name = e["args"]["name"].as_str().expect("thread name").to_string();
                    assert!(
                        thread_names.insert((pid, tid), name).is_none(),
                        "tid {pid}/{tid} named twice"
                    );
                }
                "process_sort_index" | "thread_sort_index" => {
                    assert!(e["args"]["sort_index"].is_u64());
                }
                other => panic!("unexpected metadata event {other}"),
            },
            "X" => slices.push(e),
            other => panic!("unexpected phase {other}"),
        }
    }
    // One process per device, named by its label.
    let devices = profile.devices();
    assert_eq!(process_names.len(), devices.len());
    assert_eq!(
        process_names.values().cloned().collect::<BTreeSet<_>>(),
        devices.iter().cloned().collect::<BTreeSet<_>>()
    );
    // One complete event per record.
    assert_eq!(slices.len(), profile.records.len());
    let mut per_track: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in &slices {
        let (pid, tid) = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        let device = process_names
            .get(&pid)
            .unwrap_or_else(|| panic!("slice with unnamed pid {pid}"));
        let track = thread_names
            .get(&(pid, tid))
            .unwrap_or_else(|| panic!("slice on unnamed track {pid}/{tid}"));
        let ts = e["ts"].as_f64().expect("ts is a number");
        let dur = e["dur"].as_f64().expect("dur is a number");
        assert!(
            ts >= 0.0 && dur >= 0.0 && ts.is_finite() && dur.is_finite(),
            "ts {ts} dur {dur}"
        );
        let cat = e["cat"].as_str().unwrap();
        let args = &e["args"];
        // The track is named after the slice's device and queue (`cpu:0` for no
        // queue, `cpu:0 queue 3`), with `#2`, ... for an overlap track.
        let queue = args["queue"].as_u64().expect("queue");
        let lane = if queue == 0 {
            device.clone()
        } else {
            format!("{device} queue {queue}")
        };
        assert!(
            *track == lane || track.starts_with(&format!("{lane} #")),
            "slice {cat} of queue {queue} on track {track}"
        );
        assert!(args["bytes"].is_u64() && args["items"].is_u64(), "args {args}");
        assert!(matches!(args["clock"].as_str(), Some("host" | "device")));
        let label = args["label"].as_str().unwrap();
        // The slice matches a record of that device exactly (ns → µs, fractional).
        let matching = profile.records.iter().any(|r| {
            &r.device == device
                && r.queue == queue
                && r.stage.name() == cat
                && r.label == label
                && r.bytes == args["bytes"].as_u64().unwrap()
                && r.items == args["items"].as_u64().unwrap()
                && (r.start_ns as f64 / 1000.0 - ts).abs() < 1e-3
                && (r.duration_ns() as f64 / 1000.0 - dur).abs() < 1e-3
        });
        assert!(matching, "slice {e} matches no record");
        per_track.entry((pid, tid)).or_default().push((ts, ts + dur));
    }
    // Slices on one track never overlap (viewers need proper nesting).
    for (track, mut v) in per_track {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in v.windows(2) {
            assert!(w[1].0 >= w[0].1 - 1e-6, "overlapping slices on track {track:?}: {w:?}");
        }
    }
    process_names
}

#[test]
fn chrome_trace_of_a_real_vector_add() {
    let (rt, ran, n) = vector_add_run();
    let profile = rt.profile();
    let v = parse(&profile.to_chrome_trace());
    let pids = check_trace_structure(&profile, &v);
    let events = v["traceEvents"].as_array().unwrap();
    for device in &ran {
        // Each device that ran is its own process.
        let pid = pids
            .iter()
            .find(|(_, d)| *d == device)
            .map(|(p, _)| *p)
            .expect("a pid per device");
        let x = |cat: &'static str| {
            events
                .iter()
                .filter(move |e| e["ph"] == "X" && e["cat"] == cat && e["pid"] == pid)
        };
        // Three host → device copies per round: the NaN poison, a and b.
        assert_eq!(x("h2d").count(), 3 * LAUNCHES, "{device}");
        assert!(x("h2d").all(|e| e["args"]["bytes"] == 4 * n as u64));
        assert_eq!(x("d2h").count(), LAUNCHES, "{device}");
        assert!(x("d2h").all(|e| e["args"]["bytes"] == 4 * n as u64));
        assert_eq!(x("kernel").count(), LAUNCHES, "{device}");
        assert!(x("kernel").all(|e| e["args"]["items"].as_u64().unwrap() >= n as u64));
        assert!(x("kernel").all(|e| e["args"]["label"] == "vector_add"));
    }
    // Written to a file, the same document comes back.
    let dir = std::env::temp_dir().join(format!("offload-profile-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.json");
    profile.write_chrome_trace(&path).unwrap();
    assert_eq!(parse(&std::fs::read_to_string(&path).unwrap()), v);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn report_of_vector_add_says_transfers_dominate() {
    let (rt, ran, n) = vector_add_run();
    let report = rt.profile().report();
    let text = report.to_string();
    println!("{text}");
    for device in &ran {
        let row = report
            .devices
            .iter()
            .find(|d| &d.device == device)
            .expect("a row per device");
        assert_eq!(row.h2d_bytes, (3 * LAUNCHES * 4 * n) as u64);
        assert_eq!(row.d2h_bytes, (LAUNCHES * 4 * n) as u64);
        assert_eq!(row.launches, LAUNCHES as u64);
        assert!(row.ns(Stage::Kernel) > 0 && row.transfer_ns() > 0);
        assert!(text.contains(device.as_str()));
    }
    // Vector add moves 3 arrays to compute one add per element: transfer-bound.
    assert!(report.transfer_dominated(), "{text}");
    assert!(text.contains("transfers dominate"), "{text}");
    // The Amdahl line is printed with this run's p for k = 2, 10, infinity.
    let p = report.kernel_fraction;
    assert!(p > 0.0 && p < 1.0, "p = {p}");
    for (k, what) in [
        (2.0, "2x faster gives at most"),
        (10.0, "10x gives"),
        (f64::INFINITY, "infinitely fast gives"),
    ] {
        let line = format!("{what} {:.2}x", amdahl(p, k));
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn amdahl_values() {
    let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(near(amdahl(0.25, 2.0), 1.0 / (0.75 + 0.125)));
    assert!(near(amdahl(0.25, 10.0), 1.0 / (0.75 + 0.025)));
    assert!(near(amdahl(0.25, f64::INFINITY), 4.0 / 3.0));
    assert!(near(amdahl(0.0, f64::INFINITY), 1.0));
    assert!(amdahl(1.0, f64::INFINITY).is_infinite());
}

#[test]
fn empty_profile_exports_valid_empty_trace_and_svg() {
    let p = Profile::default();
    let v = parse(&p.to_chrome_trace());
    assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(0));
    check_trace_structure(&p, &v);
    let svg = p.to_svg_timeline();
    let doc = roxmltree::Document::parse(&svg).expect("empty SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(svg.contains("empty profile"));
    assert!(p.report().to_string().contains("empty profile"));
}

#[test]
fn unwritable_paths_give_io_errors_and_leave_everything_usable() {
    let (rt, _, _) = vector_add_run();
    let profile = rt.profile();
    // A path below a regular file cannot be created, even by root.
    let dir = std::env::temp_dir().join(format!("offload-profile-unwritable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("trace.json");
    match profile.write_chrome_trace(&bad) {
        Err(Error::Io { what, path, .. }) => {
            assert_eq!(what, "Chrome trace");
            assert_eq!(path, bad.display().to_string());
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    let e = profile.write_chrome_trace(&bad).unwrap_err();
    assert!(
        e.to_string().contains(&bad.display().to_string()),
        "message names the path: {e}"
    );
    let bad_svg = file.join("timeline.svg");
    match profile.write_svg_timeline(&bad_svg) {
        Err(Error::Io { what, path, .. }) => {
            assert_eq!(what, "SVG timeline");
            assert_eq!(path, bad_svg.display().to_string());
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    // The profile is unchanged and still exports; the runtime still records.
    assert_eq!(profile, rt.profile());
    let good = dir.join("trace.json");
    profile.write_chrome_trace(&good).unwrap();
    check_trace_structure(&profile, &parse(&std::fs::read_to_string(&good).unwrap()));
    profile.write_svg_timeline(dir.join("t.svg")).unwrap();
    let dev = rt.device("cpu").unwrap();
    let before = rt.profile().records.len();
    let buf = dev.upload(&[1.5f32, 2.5]).unwrap();
    assert_eq!(buf.to_vec().unwrap(), vec![1.5, 2.5]);
    // Allocation, upload, download.
    assert_eq!(rt.profile().records.len(), before + 3);
    std::fs::remove_dir_all(&dir).ok();
}

/// Lanes, legend and bars of an SVG, checked with a real XML parser.
fn check_svg(profile: &Profile) -> String {
    let svg = profile.to_svg_timeline();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("SVG is not well-formed: {e}\n{svg}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert!(root.attribute("width").is_some() && root.attribute("height").is_some());
    let lanes: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("lane"))
        .collect();
    let lane_devices: Vec<&str> = lanes.iter().filter_map(|n| n.attribute("data-device")).collect();
    assert_eq!(
        lane_devices,
        profile.devices().iter().map(String::as_str).collect::<Vec<_>>()
    );
    // One bar (a rect with a tooltip) per record, inside its device's lane.
    for (lane, device) in lanes.iter().zip(&lane_devices) {
        let bars = lane
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
            .count();
        assert_eq!(bars, profile.device_records(device).count(), "bars in lane {device}");
    }
    let legend = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("legend"))
        .expect("legend");
    let legend_text: String = legend
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("|");
    for s in ["init", "host → device", "kernel", "device → host", "teardown"] {
        assert!(legend_text.contains(s), "legend lacks {s}: {legend_text}");
    }
    let axis = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("axis"))
        .expect("axis");
    assert!(
        axis.descendants().filter(|n| n.has_tag_name("text")).count() >= 2,
        "axis has tick labels"
    );
    let all_text: String = doc.descendants().filter_map(|n| n.text()).collect::<Vec<_>>().join("|");
    assert!(
        all_text.contains("ms wall") && all_text.contains("transfer"),
        "title: {all_text}"
    );
    svg
}

#[test]
fn svg_timeline_of_a_real_vector_add() {
    let (rt, _, _) = vector_add_run();
    let svg = check_svg(&rt.profile());
    assert!(svg.contains("transfers dominate"));
}

fn rec(device: &str, stage: Stage, label: &str, start_ms: f64, end_ms: f64, bytes: u64, items: u64) -> StageRecord {
    StageRecord {
        device: device.into(),
        queue: 0,
        stage,
        label: label.into(),
        bytes,
        items,
        start_ns: (start_ms * 1e6) as u64,
        end_ns: (end_ms * 1e6) as u64,
        clock: if device.starts_with("cpu") {
            Clock::Host
        } else {
            Clock::Device
        },
    }
}

/// A split run on three devices, built by hand: cuda:0 uploads on two streams at
/// once (overlapping h2d), opencl:0 waits 10 ms between chunks, cpu:0 computes.
/// Labels carry markup characters that must be escaped.
fn synthetic() -> Profile {
    Profile {
        records: vec![
            rec("cuda:0", Stage::Init, "vector_add <build>", 0.0, 2.0, 0, 0),
            rec("opencl:0", Stage::Init, "vector_add", 0.0, 3.0, 0, 0),
            rec("cpu:0", Stage::Init, "vector_add", 0.0, 0.1, 0, 0),
            rec("cuda:0", Stage::HostToDevice, "chunk 0 & a", 5.0, 9.0, 64 << 20, 0),
            rec("cuda:0", Stage::HostToDevice, "chunk 1 \"b\"", 7.0, 11.0, 64 << 20, 0),
            rec("cuda:0", Stage::Kernel, "chunk 0", 9.0, 10.0, 0, 1 << 24),
            rec("cuda:0", Stage::Kernel, "chunk 1", 11.0, 12.0, 0, 1 << 24),
            rec("cuda:0", Stage::DeviceToHost, "chunk 0", 12.0, 16.0, 64 << 20, 0),
            rec("opencl:0", Stage::HostToDevice, "chunk 2", 5.0, 8.0, 32 << 20, 0),
            rec("opencl:0", Stage::Kernel, "chunk 2", 8.0, 12.0, 0, 1 << 23),
            rec("opencl:0", Stage::Kernel, "chunk 3", 22.0, 26.0, 0, 1 << 23),
            rec("cpu:0", Stage::Kernel, "chunk 4", 14.0, 25.0, 0, 1 << 22),
            rec("cuda:0", Stage::Teardown, "close", 30.0, 30.5, 0, 0),
        ],
        ..Default::default()
    }
}

#[test]
fn synthetic_multi_device_profile_lanes_tracks_and_idle() {
    let p = synthetic();
    // Trace: three processes; every record is on no queue, so cuda:0 has one
    // track, and a second one for the overlapping uploads.
    let v = parse(&p.to_chrome_trace());
    let pids = check_trace_structure(&p, &v);
    assert_eq!(pids.len(), 3);
    let cuda_pid = pids.iter().find(|(_, d)| *d == "cuda:0").map(|(p, _)| *p).unwrap();
    let cuda_tracks: BTreeSet<String> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == cuda_pid)
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = ["cuda:0", "cuda:0 #2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(cuda_tracks, expected);
    // Every slice's label survives JSON escaping.
    assert!(
        v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["args"]["label"] == "chunk 1 \"b\"")
    );

    // SVG: one lane per device, a second h2d row, escaped labels.
    let svg = check_svg(&p);
    assert!(svg.contains("h2d #2"));
    assert!(svg.contains("vector_add &lt;build&gt;") && svg.contains("chunk 0 &amp; a"));
    assert!(!svg.contains("<build>"));

    // Report: idle time inside each device's span.
    let r = p.report();
    let by = |d: &str| r.devices.iter().find(|s| s.device == d).unwrap().clone();
    let ms = |ns: u64| ns as f64 / 1e6;
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    // cuda:0: span 0..30.5, busy 0..2, 5..16, 30..30.5 → idle 3 + 14 = 17 ms.
    assert!(near(ms(by("cuda:0").idle_ns), 17.0), "{:?}", by("cuda:0"));
    // opencl:0: span 0..26, busy 0..3, 5..12, 22..26 → idle 2 + 10 = 12 ms.
    assert!(near(ms(by("opencl:0").idle_ns), 12.0));
    // cpu:0: span 0..25, busy 0..0.1, 14..25 → idle 13.9 ms.
    assert!(near(ms(by("cpu:0").idle_ns), 13.9));
    assert!(near(ms(r.total.idle_ns), 17.0 + 12.0 + 13.9));
    // Overlapping uploads count their full time per stage (8 ms), not the union.
    assert!(near(ms(by("cuda:0").ns(Stage::HostToDevice)), 8.0));
    // Kernels cover 8..12 and 14..26 of the 5..26 pipeline wall: p = 16/21.
    assert!(near(r.kernel_fraction, 16.0 / 21.0));
    let text = r.to_string();
    for d in ["cuda:0", "opencl:0", "cpu:0", "total"] {
        assert!(text.contains(d), "report row {d}:\n{text}");
    }
    assert!(
        text.contains("device") && text.contains("host"),
        "clock column:\n{text}"
    );
}

#[test]
fn profiler_places_device_clock_records_and_tolerates_backward_spans() {
    use std::time::{Duration, Instant};
    let p = offload::profile::Profiler::new();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_micros(100);
    // Device duration inside the host span: ends when the host saw it end.
    p.record("gpu:0", Stage::Kernel, "k", 0, 7, t0, t1, Some(40_000));
    // Longer than the host span (clock skew): clamped to the host span.
    p.record("gpu:0", Stage::Kernel, "k", 0, 7, t0, t1, Some(500_000));
    // Host clock.
    p.record("cpu:0", Stage::HostToDevice, "w", 64, 0, t0, t1, None);
    // Backwards span: empty, never an underflow.
    p.record("cpu:0", Stage::DeviceToHost, "r", 64, 0, t1, t0, None);
    p.set_enabled(false);
    p.record("cpu:0", Stage::Kernel, "ignored", 0, 0, t0, t1, None);
    p.set_enabled(true);
    let prof = p.take();
    assert_eq!(prof.records.len(), 4);
    let r = &prof.records;
    assert_eq!((r[0].duration_ns(), r[0].clock), (40_000, Clock::Device));
    assert_eq!(r[0].end_ns, r[2].end_ns);
    assert_eq!((r[1].duration_ns(), r[1].clock), (100_000, Clock::Device));
    assert_eq!((r[2].duration_ns(), r[2].clock), (100_000, Clock::Host));
    assert_eq!(r[3].duration_ns(), 0);
    assert!(p.take().is_empty());
    check_trace_structure(&prof, &parse(&prof.to_chrome_trace()));
    check_svg(&prof);
}

/// Allocation is a stage of its own: recorded with its bytes, in the report's
/// alloc column, as an `alloc` slice on the device's track for work on no queue
/// and in an `alloc` row of the timeline; not idle time.
#[test]
fn allocation_is_recorded_as_its_own_stage() {
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    rt.profiler().take();
    let buf = dev.alloc::<f32>(1 << 20).unwrap();
    assert_eq!(buf.len(), 1 << 20);
    let p = rt.profile();
    let allocs: Vec<&StageRecord> = p.records.iter().filter(|r| r.stage == Stage::Alloc).collect();
    assert_eq!(allocs.len(), 1, "{:?}", p.records);
    assert_eq!((allocs[0].bytes, allocs[0].device.as_str()), (4 << 20, "cpu:0"));
    assert_eq!(Stage::Alloc.name(), "alloc");
    let r = p.report();
    assert_eq!(r.devices[0].alloc_bytes, 4 << 20);
    assert_eq!(r.devices[0].ns(Stage::Alloc), allocs[0].duration_ns());
    let text = r.to_string();
    assert!(text.contains("alloc ms"), "{text}");
    let trace: Value = serde_json::from_str(&p.to_chrome_trace()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(names.contains(&"cpu:0"), "{names:?}");
    let alloc = events
        .iter()
        .find(|e| e["ph"] == "X" && e["cat"] == "alloc")
        .expect("an alloc slice");
    assert_eq!(
        (alloc["args"]["queue"].as_u64(), alloc["args"]["bytes"].as_u64()),
        (Some(0), Some(4 << 20))
    );
    assert!(p.to_svg_timeline().contains(">alloc</text>"));
}

/// The Amdahl line says what the wall covers: a run whose wall is mostly host
/// time outside any stage says so, and gives the kernels' share of both.
#[test]
fn amdahl_line_says_what_the_wall_covers() {
    const MS: f64 = 1.0;
    let rec = |stage: Stage, s: f64, e: f64| StageRecord {
        device: "cpu:0".into(),
        queue: 0,
        stage,
        label: stage.name().into(),
        bytes: 0,
        items: 0,
        start_ns: (s * 1e6) as u64,
        end_ns: (e * 1e6) as u64,
        clock: Clock::Host,
    };
    // 1 ms alloc, 1 ms upload, 2 ms kernel, then 95 ms of host checking, then a 1 ms download.
    let p = Profile {
        records: vec![
            rec(Stage::Init, 0.0, 50.0 * MS),
            rec(Stage::Alloc, 100.0, 101.0),
            rec(Stage::HostToDevice, 101.0, 102.0),
            rec(Stage::Kernel, 102.0, 104.0),
            rec(Stage::DeviceToHost, 199.0, 200.0),
        ],
        ..Default::default()
    };
    let r = p.report();
    assert_eq!(r.wall_ns, 100_000_000);
    assert_eq!(r.staged_ns, 5_000_000);
    assert_eq!(r.outside_ns, 95_000_000);
    assert_eq!(r.kernel_cover_ns, 2_000_000);
    assert!((r.kernel_fraction - 0.02).abs() < 1e-12);
    assert!((r.staged_kernel_fraction - 0.4).abs() < 1e-12);
    let text = r.to_string();
    println!("{text}");
    assert!(
        text.contains("wall 100.000 ms = first alloc/transfer/kernel start to last end")
            && text.contains("95.000 ms host time outside any stage"),
        "{text}"
    );
    assert!(
        text.contains("kernels cover 2.000 ms = 2.0% of the wall (40.0% of the staged time)"),
        "{text}"
    );
}

/// `rec` on a queue.
fn on(queue: u64, r: StageRecord) -> StageRecord {
    StageRecord { queue, ..r }
}

/// One device, two queues working at once, built by hand: queue 5 uploads,
/// computes and downloads from 4 to 16 ms, queue 9 from 6 to 19 ms (one of its
/// uploads overlaps another of its own, as skewed device timestamps can);
/// init and allocation are on no queue. A second device has one queue.
fn two_queues() -> Profile {
    Profile {
        records: vec![
            rec("gpu:0", Stage::Init, "build", 0.0, 2.0, 0, 0),
            rec("gpu:0", Stage::Alloc, "alloc", 2.0, 3.0, 1 << 20, 0),
            on(5, rec("gpu:0", Stage::HostToDevice, "a", 4.0, 8.0, 1 << 20, 0)),
            on(9, rec("gpu:0", Stage::HostToDevice, "b", 6.0, 10.0, 1 << 20, 0)),
            on(9, rec("gpu:0", Stage::HostToDevice, "b2", 7.0, 9.0, 1 << 20, 0)),
            on(5, rec("gpu:0", Stage::Kernel, "k", 8.0, 14.0, 0, 100)),
            on(9, rec("gpu:0", Stage::Kernel, "k", 10.0, 18.0, 0, 100)),
            on(5, rec("gpu:0", Stage::DeviceToHost, "c", 14.0, 16.0, 1 << 20, 0)),
            on(9, rec("gpu:0", Stage::DeviceToHost, "c", 18.0, 19.0, 1 << 20, 0)),
            on(2, rec("cpu:0", Stage::Kernel, "k", 1.0, 5.0, 0, 100)),
        ],
        ..Default::default()
    }
}

#[test]
fn two_queues_of_one_device_get_their_own_lanes_and_overlap_line() {
    let p = two_queues();
    assert_eq!(p.queues("gpu:0"), vec![0, 5, 9]);

    // Trace: gpu:0 has a track for no queue and one per queue (queue 9 a second
    // one for its own overlapping uploads); the two queues' kernels overlap on
    // parallel tracks.
    let v = parse(&p.to_chrome_trace());
    let pids = check_trace_structure(&p, &v);
    let gpu = pids.iter().find(|(_, d)| *d == "gpu:0").map(|(p, _)| *p).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let tracks: BTreeMap<u64, String> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == gpu)
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tracks.values().map(String::as_str).collect::<Vec<_>>(),
        ["gpu:0", "gpu:0 queue 5", "gpu:0 queue 9", "gpu:0 queue 9 #2"]
    );
    let kernels: Vec<(&str, f64, f64)> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["pid"] == gpu && e["cat"] == "kernel")
        .map(|e| {
            let ts = e["ts"].as_f64().unwrap();
            (
                tracks[&e["tid"].as_u64().unwrap()].as_str(),
                ts,
                ts + e["dur"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kernels.len(), 2);
    assert_eq!(
        kernels.iter().map(|k| k.0).collect::<BTreeSet<_>>(),
        BTreeSet::from(["gpu:0 queue 5", "gpu:0 queue 9"])
    );
    assert!(
        kernels[0].1 < kernels[1].2 && kernels[1].1 < kernels[0].2,
        "{kernels:?}"
    );
    let cpu = pids.iter().find(|(_, d)| *d == "cpu:0").map(|(p, _)| *p).unwrap();
    let cpu_tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == cpu)
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(cpu_tracks, ["cpu:0 queue 2"]);

    // SVG: rows per (queue, stage), labelled with the queue, in queue order.
    let svg = check_svg(&p);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let lane = doc
        .descendants()
        .find(|n| n.attribute("data-device") == Some("gpu:0"))
        .unwrap();
    let rows: Vec<(&str, f64)> = lane
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("text-anchor") == Some("end"))
        .map(|n| (n.text().unwrap(), n.attribute("y").unwrap().parse().unwrap()))
        .collect();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [
            "init",
            "alloc",
            "q5 h2d",
            "q5 kernel",
            "q5 d2h",
            "q9 h2d",
            "q9 h2d #2",
            "q9 kernel",
            "q9 d2h"
        ]
    );
    // The two kernels' bars overlap in time, one row above the other.
    let bars: Vec<(f64, f64, f64)> = lane
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| {
            n.children()
                .any(|c| c.has_tag_name("title") && c.text().is_some_and(|t| t.starts_with("kernel k on gpu:0 queue")))
        })
        .map(|n| {
            let f = |a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
            (f("x"), f("x") + f("width"), f("y"))
        })
        .collect();
    assert_eq!(bars.len(), 2);
    assert!(bars[0].0 < bars[1].1 && bars[1].0 < bars[0].1, "{bars:?}");
    assert!((bars[0].2 - bars[1].2).abs() > 1.0, "{bars:?}");
    let cpu_lane = doc
        .descendants()
        .find(|n| n.attribute("data-device") == Some("cpu:0"))
        .unwrap();
    assert!(
        cpu_lane
            .descendants()
            .any(|n| n.has_tag_name("text") && n.text() == Some("q2 kernel"))
    );

    // Report: totals as without queues; queues 5 and 9 are busy 4..19 ms
    // together and 6..16 ms at once; cpu:0 has one queue, so no overlap.
    let r = p.report();
    let gpu_row = &r.devices[0];
    assert_eq!(gpu_row.ns(Stage::Kernel), 14_000_000);
    assert_eq!(gpu_row.ns(Stage::HostToDevice), 10_000_000);
    assert_eq!((gpu_row.h2d_bytes, gpu_row.launches), (3 << 20, 2));
    assert_eq!(
        (gpu_row.queues, gpu_row.queue_busy_ns, gpu_row.queue_overlap_ns),
        (2, 15_000_000, 10_000_000)
    );
    let text = r.to_string();
    println!("{text}");
    assert!(
        text.contains("gpu:0 overlap: 10.000 ms of 15.000 ms busy on 2+ queues (2 queues)\n"),
        "{text}"
    );
    assert!(
        text.contains("cpu:0 overlap: 0.000 ms of 4.000 ms busy on 2+ queues (1 queue)\n"),
        "{text}"
    );
    assert_eq!(
        (r.total.queues, r.total.queue_busy_ns, r.total.queue_overlap_ns),
        (3, 19_000_000, 10_000_000)
    );
    // Records on no queue alone: the line says so.
    let text = synthetic().report().to_string();
    assert!(
        text.contains("cuda:0 overlap: 0.000 ms of 0.000 ms busy on 2+ queues (no records on a queue)"),
        "{text}"
    );
}

/// `Profiler::record_on` keeps the queue; `record` is queue 0; past the cap the
/// report's totals stay exact and the overlap line says it counts kept records only.
#[test]
fn profiler_records_queues_and_overlap_line_notes_dropped_records() {
    use std::time::{Duration, Instant};
    let p = offload::profile::Profiler::new();
    p.set_record_cap(3);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    p.record("cpu:0", Stage::Alloc, "a", 64, 0, at(0), at(1), None);
    p.record_on(3, "cpu:0", Stage::Kernel, "k", 0, 10, at(1), at(5), None);
    p.record_on(4, "cpu:0", Stage::Kernel, "k", 0, 10, at(2), at(6), None);
    // Past the cap: aggregated, still in the kernel total.
    p.record_on(4, "cpu:0", Stage::Kernel, "k", 0, 10, at(6), at(9), None);
    let prof = p.take();
    assert_eq!(prof.records.iter().map(|r| r.queue).collect::<Vec<_>>(), [0, 3, 4]);
    assert_eq!(prof.dropped_records(), 1);
    let r = prof.report();
    let d = &r.devices[0];
    assert_eq!((d.ns(Stage::Kernel), d.items, d.launches), (11_000_000, 30, 3));
    assert_eq!((d.queue_busy_ns, d.queue_overlap_ns), (5_000_000, 3_000_000));
    let text = r.to_string();
    assert!(
        text.contains("cpu:0 overlap: 3.000 ms of 5.000 ms busy on 2+ queues (2 queues); from the kept records only, 1 of this device's records were dropped"),
        "{text}"
    );
    check_trace_structure(&prof, &parse(&prof.to_chrome_trace()));
    check_svg(&prof);
}
