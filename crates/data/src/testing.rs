//! Fixtures for the tests of crates that load images (no stage uses this).

use std::path::Path;
use std::sync::Arc;

use image::{Rgb, RgbImage};

use crate::Sample;

/// `n` 8x8 PNGs in `dir`, `0.png`..: sample `i` has red `i` (so a test can tell which one it got)
/// over a gradient, and label `i % 2`.
pub fn png_samples(dir: &Path, n: usize) -> Arc<[Sample]> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{i}.png"));
            RgbImage::from_fn(8, 8, |c, r| Rgb([i as u8, (c * 30) as u8, (r * 30) as u8])).save(&path).unwrap();
            Sample { path, label: (i % 2) as u32 }
        })
        .collect()
}
