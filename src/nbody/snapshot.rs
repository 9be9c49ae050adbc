//! A picture of the bodies: x–y projection, density-shaded, written as PNG.

use std::io::BufWriter;

use crate::error::{Error, Result};

/// Write an 8-bit greyscale PNG of `size × size` pixels showing the x–y projection
/// of `pos` (float4 per body), shaded by the logarithm of the bodies per pixel.
/// The view spans ±`extent` around the origin (bodies outside are not drawn).
pub fn write_png(path: &std::path::Path, pos: &[f32], size: u32, extent: f32) -> Result<()> {
    if size == 0 || size > 16384 || !(extent > 0.0 && extent.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "snapshot: size {size} must be in 1..=16384 and extent {extent} positive and finite"
        )));
    }
    let s = size as usize;
    let mut count = vec![0u32; s * s];
    for p in pos.chunks_exact(4) {
        let u = (p[0] / extent * 0.5 + 0.5) * size as f32;
        let v = (0.5 - p[1] / extent * 0.5) * size as f32;
        if u >= 0.0 && v >= 0.0 && u < size as f32 && v < size as f32 {
            count[v as usize * s + u as usize] += 1;
        }
    }
    let max = count.iter().copied().max().unwrap_or(0).max(1) as f32;
    let img: Vec<u8> = count
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                (40.0 + 215.0 * (c as f32).ln_1p() / max.ln_1p()) as u8
            }
        })
        .collect();
    let io = |source: std::io::Error| Error::Io {
        what: "N-body snapshot",
        path: path.display().to_string(),
        source,
    };
    let enc = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => io(e),
        other => io(std::io::Error::other(other.to_string())),
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), size, size);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(enc)?;
    writer.write_image_data(&img).map_err(enc)?;
    writer.finish().map_err(enc)
}
