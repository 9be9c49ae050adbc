//! SVG timeline export: the same picture as the Chrome trace, readable in any
//! browser or image viewer without a trace viewer.
//!
//! Layout: a title with the wall time and the transfer versus compute share; one
//! lane per device (first-seen order), headed by the device label and its stage
//! totals; inside a lane one row per (queue, stage) that has records, queue by
//! queue: rows of work on no queue (init, allocation, teardown, host staging) are
//! named by the stage (`h2d`), rows of a queue carry its id (`q3 kernel`). So a
//! copy on one queue overlapping a kernel on another is visible as two bars one
//! above the other. Records that still overlap within one row (host threads
//! copying at once on no queue) go to an extra row (`h2d #2`, `q3 h2d #2`). Bars are
//! colored by stage and carry a `<title>` tooltip with label, queue, duration, bytes,
//! GB/s, items and clock. Below the lanes: a time axis in milliseconds from the
//! first record, with gridlines, and a legend. An empty profile gives a valid SVG
//! that says "empty profile". When the profiler dropped records past its cap, a
//! line under the title says how many: bars are drawn for kept records only.
//!
//! This module only formats and writes files; it never touches a device.

use std::fmt::Write as _;
use std::path::Path;

use super::trace::assign_tracks;
use super::{Clock, Profile, Stage, StageRecord};
use crate::error::Result;

/// Width of the picture, px.
const WIDTH: f64 = 1200.0;
/// Left column with device and stage names, px.
const LABEL_W: f64 = 120.0;
/// Right margin, px.
const RIGHT: f64 = 24.0;
/// Height of one stage row, px.
const ROW_H: f64 = 18.0;
/// Vertical gap between rows, px.
const ROW_GAP: f64 = 4.0;
/// Height of a lane's header line (device label and totals), px.
const HEAD_H: f64 = 22.0;
/// Space between lanes, px.
const LANE_GAP: f64 = 10.0;
/// Top of the first lane, px.
const TOP: f64 = 62.0;

/// Fill color of a stage's bars and legend swatch.
pub fn stage_color(stage: Stage) -> &'static str {
    match stage {
        Stage::Init => "#8c8c8c",
        Stage::Alloc => "#bcbd22",
        Stage::HostToDevice => "#1f77b4",
        Stage::DeviceToDevice => "#17becf",
        Stage::Kernel => "#2ca02c",
        Stage::DeviceToHost => "#ff7f0e",
        Stage::Teardown => "#9467bd",
        Stage::Net => "#d62728",
    }
}

/// Long name of a stage for the legend.
fn stage_long_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Init => "init",
        Stage::Alloc => "alloc",
        Stage::HostToDevice => "host → device",
        Stage::DeviceToDevice => "device → device",
        Stage::Kernel => "kernel",
        Stage::DeviceToHost => "device → host",
        Stage::Teardown => "teardown",
        Stage::Net => "network (MPI)",
    }
}

/// Escape text for SVG/XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A "nice" tick step (1, 2 or 5 × 10^k ms) giving at most about `target` ticks.
fn tick_step_ms(span_ms: f64, target: f64) -> f64 {
    if span_ms.is_nan() || span_ms <= 0.0 {
        return 1.0;
    }
    let raw = span_ms / target;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Decimals needed to print multiples of `step` exactly enough.
fn tick_decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 9.0) as usize
    }
}

fn tooltip(r: &StageRecord, t0: u64) -> String {
    let mut s = format!(
        "{} {} on {}{}: {:.3} ms (from {:.3} ms)",
        r.stage.name(),
        r.label,
        r.device,
        if r.queue == 0 {
            String::new()
        } else {
            format!(" queue {}", r.queue)
        },
        ms(r.duration_ns()),
        ms(r.start_ns.saturating_sub(t0))
    );
    if r.bytes > 0 {
        let _ = write!(s, ", {:.1} MiB", r.bytes as f64 / (1024.0 * 1024.0));
        if r.duration_ns() > 0 {
            let _ = write!(s, ", {:.2} GB/s", r.bytes as f64 / r.duration_ns() as f64);
        }
    }
    if r.items > 0 {
        let _ = write!(s, ", {} items", r.items);
    }
    let _ = write!(
        s,
        ", {} clock",
        match r.clock {
            Clock::Host => "host",
            Clock::Device => "device",
        }
    );
    s
}

fn header(out: &mut String, height: f64) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
}

impl Profile {
    /// The profile as a standalone SVG timeline (see [`crate::profile::svg`]).
    pub fn to_svg_timeline(&self) -> String {
        let mut out = String::with_capacity(4096 + 256 * self.records.len());
        if self.is_empty() {
            header(&mut out, 80.0);
            let _ = writeln!(
                out,
                r##"<text x="{}" y="46" font-size="16" text-anchor="middle" fill="#444">empty profile: nothing was recorded</text>"##,
                WIDTH / 2.0
            );
            out.push_str("</svg>\n");
            return out;
        }
        let report = self.report();
        let note = self.dropped_note();
        // A third title line says how many records were dropped.
        let top = if note.is_some() { TOP + 20.0 } else { TOP };
        let t0 = self.records.iter().map(|r| r.start_ns).min().unwrap_or(0);
        let t1 = self
            .records
            .iter()
            .map(|r| r.end_ns.max(r.start_ns))
            .max()
            .unwrap_or(t0);
        let span_ns = (t1 - t0).max(1);
        let plot_w = WIDTH - LABEL_W - RIGHT;
        let x_of = |ns: u64| LABEL_W + plot_w * (ns.saturating_sub(t0)) as f64 / span_ns as f64;

        // Lanes: per device, its records and tracks.
        let devices = self.devices();
        let mut lanes = Vec::with_capacity(devices.len());
        let mut y = top;
        for d in &devices {
            let recs: Vec<&StageRecord> = self.device_records(d).collect();
            let (of_record, tracks) = assign_tracks(&recs, true);
            let h = HEAD_H + tracks.len() as f64 * (ROW_H + ROW_GAP) + ROW_GAP;
            lanes.push((d, recs, of_record, tracks, y, h));
            y += h + LANE_GAP;
        }
        let axis_y = y + 2.0;
        let legend_y = axis_y + 44.0;
        let height = legend_y + 28.0;

        header(&mut out, height);
        // Title: wall time and transfer vs compute share.
        let transfer = report.total.transfer_ns();
        let kernel = report.total.ns(Stage::Kernel);
        let moved = (transfer + kernel).max(1) as f64;
        let _ = writeln!(
            out,
            r##"<text x="12" y="24" font-size="17" font-weight="bold" fill="#222">{}</text>"##,
            escape(&format!(
                "offload timeline: {} device{}, {:.3} ms wall",
                devices.len(),
                if devices.len() == 1 { "" } else { "s" },
                ms(t1 - t0)
            ))
        );
        let _ = writeln!(
            out,
            r##"<text x="12" y="46" font-size="13" fill="#333">{}</text>"##,
            escape(&format!(
                "transfer {:.1}% vs compute {:.1}% of copy+kernel time ({:.3} ms moving data, {:.3} ms in kernels){}",
                100.0 * transfer as f64 / moved,
                100.0 * kernel as f64 / moved,
                ms(transfer),
                ms(kernel),
                if report.transfer_dominated() {
                    ": transfers dominate"
                } else {
                    ""
                }
            ))
        );

        if let Some(note) = &note {
            let _ = writeln!(
                out,
                r##"<text x="12" y="66" font-size="13" fill="#a33">{}</text>"##,
                escape(note)
            );
        }

        // Ticks of the time axis: a nice step in ms, about ten of them.
        let step = tick_step_ms(ms(span_ns), 10.0);
        let decimals = tick_decimals(step);
        let mut ticks = Vec::new();
        let mut k = 0u64;
        loop {
            let t_ms = k as f64 * step;
            if t_ms > ms(span_ns) * (1.0 + 1e-9) {
                break;
            }
            ticks.push(t_ms);
            k += 1;
        }

        // Lane backgrounds, then gridlines over them, then the bars on top.
        for (i, (_, _, _, _, ly, lh)) in lanes.iter().enumerate() {
            let bg = if i % 2 == 0 { "#f6f8fb" } else { "#fbfaf5" };
            let _ = writeln!(
                out,
                r##"<rect x="4" y="{ly}" width="{}" height="{lh}" fill="{bg}" stroke="#c9ced6" rx="3"/>"##,
                WIDTH - 8.0
            );
        }
        out.push_str("<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n");
        for t in &ticks {
            let x = LABEL_W + plot_w * t / ms(span_ns);
            let _ = writeln!(out, r#"<line x1="{x:.2}" y1="{top}" x2="{x:.2}" y2="{axis_y}"/>"#);
        }
        out.push_str("</g>\n");
        for (d, recs, of_record, tracks, ly, _) in &lanes {
            let _ = writeln!(out, r#"<g class="lane" data-device="{}">"#, escape(d));
            let s = report.devices.iter().find(|s| &s.device == *d);
            let mut summary = String::new();
            if let Some(s) = s {
                let _ = write!(
                    summary,
                    "kernel {:.3} ms · h2d {:.3} ms · d2h {:.3} ms · idle {:.3} ms",
                    ms(s.ns(Stage::Kernel)),
                    ms(s.ns(Stage::HostToDevice)),
                    ms(s.ns(Stage::DeviceToHost)),
                    ms(s.idle_ns)
                );
                let r = s.transfer_compute_ratio();
                if r.is_finite() {
                    let _ = write!(summary, " · transfer:compute {r:.2}");
                }
            }
            let _ = writeln!(
                out,
                r##"<text x="12" y="{:.1}" font-size="13" font-weight="bold" fill="#222">{}</text>"##,
                ly + 15.0,
                escape(d)
            );
            let _ = writeln!(
                out,
                r##"<text x="{LABEL_W}" y="{:.1}" font-size="12" fill="#444">{}</text>"##,
                ly + 15.0,
                escape(&summary)
            );
            for (t, track) in tracks.iter().enumerate() {
                let ry = ly + HEAD_H + t as f64 * (ROW_H + ROW_GAP);
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
                    LABEL_W - 8.0,
                    ry + ROW_H - 5.0,
                    escape(&track.row_name())
                );
                let _ = writeln!(
                    out,
                    r##"<line x1="{LABEL_W}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#dde2ea" stroke-width="1"/>"##,
                    ry + ROW_H,
                    WIDTH - RIGHT,
                    ry + ROW_H
                );
            }
            for (r, track) in recs.iter().zip(of_record) {
                let row = tracks.binary_search(track).unwrap_or(0);
                let ry = ly + HEAD_H + row as f64 * (ROW_H + ROW_GAP);
                let x = x_of(r.start_ns);
                // At least one pixel so that short records stay visible.
                let w = (x_of(r.end_ns.max(r.start_ns)) - x).max(1.0);
                let _ = writeln!(
                    out,
                    r##"<rect x="{x:.2}" y="{ry:.1}" width="{w:.2}" height="{ROW_H}" fill="{}" stroke="#ffffff" stroke-width="0.5"><title>{}</title></rect>"##,
                    stage_color(r.stage),
                    escape(&tooltip(r, t0))
                );
                // Label inside the bar when it fits (about 6.5 px per character at 10 px).
                let text = if r.label.is_empty() {
                    r.stage.name()
                } else {
                    r.label.as_str()
                };
                if w > text.chars().count() as f64 * 6.5 + 8.0 {
                    let _ = writeln!(
                        out,
                        r##"<text x="{:.2}" y="{:.1}" font-size="10" fill="white">{}</text>"##,
                        x + 4.0,
                        ry + ROW_H - 5.0,
                        escape(text)
                    );
                }
            }
            out.push_str("</g>\n");
        }

        // Axis.
        let _ = writeln!(
            out,
            r##"<line x1="{LABEL_W}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="#333" stroke-width="1"/>"##,
            WIDTH - RIGHT
        );
        out.push_str("<g class=\"axis\" font-size=\"11\" fill=\"#333\" text-anchor=\"middle\">\n");
        for t in &ticks {
            let x = LABEL_W + plot_w * t / ms(span_ns);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.2}" y1="{axis_y}" x2="{x:.2}" y2="{:.1}" stroke="#333"/><text x="{x:.2}" y="{:.1}">{t:.decimals$}</text>"##,
                axis_y + 5.0,
                axis_y + 18.0
            );
        }
        out.push_str("</g>\n");
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="#333">time since first record (ms)</text>"##,
            WIDTH - RIGHT,
            axis_y + 34.0
        );

        // Legend.
        out.push_str("<g class=\"legend\" font-size=\"12\" fill=\"#222\">\n");
        let mut lx = LABEL_W;
        for stage in Stage::ALL {
            let _ = writeln!(
                out,
                r##"<rect x="{lx:.1}" y="{:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                legend_y,
                stage_color(stage),
                lx + 20.0,
                legend_y + 12.0,
                escape(stage_long_name(stage))
            );
            lx += 40.0 + stage_long_name(stage).chars().count() as f64 * 7.0;
        }
        let _ = writeln!(
            out,
            r##"<text x="12" y="{:.1}" font-size="12" fill="#222">stages:</text>"##,
            legend_y + 12.0
        );
        out.push_str("</g>\n</svg>\n");
        out
    }

    /// Write [`Profile::to_svg_timeline`] to `path`. A path that cannot be written
    /// gives [`crate::Error::Io`] naming it; the profile is unchanged and still usable.
    pub fn write_svg_timeline(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        Profile::write_file("SVG timeline", path, self.to_svg_timeline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y"), "x\u{fffd}y");
    }

    #[test]
    fn tick_steps_are_nice() {
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(near(tick_step_ms(100.0, 10.0), 10.0));
        assert!(near(tick_step_ms(73.0, 10.0), 10.0));
        assert!(near(tick_step_ms(0.9, 10.0), 0.1));
        assert!(near(tick_step_ms(130.0, 10.0), 20.0));
        assert!(near(tick_step_ms(0.0, 10.0), 1.0));
        assert_eq!(tick_decimals(0.1), 1);
        assert_eq!(tick_decimals(0.05), 2);
        assert_eq!(tick_decimals(20.0), 0);
    }

    #[test]
    fn single_zero_length_record_still_draws() {
        let p = Profile {
            records: vec![StageRecord {
                device: "cpu:0".into(),
                queue: 0,
                stage: Stage::Kernel,
                label: "k".into(),
                bytes: 0,
                items: 1,
                start_ns: 5,
                end_ns: 5,
                clock: Clock::Host,
            }],
            ..Default::default()
        };
        let svg = p.to_svg_timeline();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        // One bar, at least a pixel wide, and a labelled axis.
        let bars: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
            .collect();
        assert_eq!(bars.len(), 1);
        assert!(bars[0].attribute("width").unwrap().parse::<f64>().unwrap() >= 1.0);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_profile_says_so() {
        let s = Profile::default().to_svg_timeline();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("empty profile"));
        assert!(s.trim_end().ends_with("</svg>"));
    }
}
