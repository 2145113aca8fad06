//! Planted dirt, for the tests and the benchmarks (benches/audit): a near-duplicate copy of a
//! photo, and a copy of a data tree with some labels flipped. Neither touches the source photos.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sd_data::image::{ResizeFilter, load_rgb, resize};

/// Writes `src` cut to its centre `crop` of each side (1: all of it), resized by `scale` (both
/// sides) and encoded as JPEG at `quality` to `dst`.
pub fn near_copy(src: &Path, dst: &Path, crop: f64, scale: f64, quality: u8) -> Result<()> {
    let mut img = load_rgb(src)?;
    let (w, h) = img.dimensions();
    let (cw, ch) = (((w as f64 * crop).round() as u32).clamp(1, w), ((h as f64 * crop).round() as u32).clamp(1, h));
    let img = image::imageops::crop(&mut img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let (w, h) = img.dimensions();
    let (w, h) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let img = resize(img, w, h, ResizeFilter::Bilinear)?;
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::File::create(dst).with_context(|| format!("cannot write {}", dst.display()))?;
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), quality))
        .with_context(|| format!("cannot write {}", dst.display()))
}

/// A photo whose label was flipped: where it is now, and its true and given class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// Relative to the new data folder, e.g. `rose/123.jpg`.
    pub file: String,
    pub truth: String,
    pub given: String,
}

/// Links every photo of the class-folder data set `src` into `dst` (a new folder), except that
/// `share` of them, drawn with `seed`, go into a random other class's folder. Returns the
/// flipped photos.
pub fn flip_labels(src: &Path, dst: &Path, share: f64, seed: u64) -> Result<Vec<Flip>> {
    let ds = sd_data::Dataset::scan(src)?;
    if ds.classes.len() < 2 {
        bail!("{} has one class: there is no other class to flip a label to", src.display());
    }
    if dst.exists() {
        bail!("{} exists; flip labels into a new folder", dst.display());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    order.shuffle(&mut rng);
    let flip_count = (ds.len() as f64 * share).round() as usize;
    let mut given: Vec<u32> = ds.samples.iter().map(|s| s.label).collect();
    for &i in &order[..flip_count] {
        let other = rng.random_range(0..ds.classes.len() as u32 - 1);
        given[i] = if other >= given[i] { other + 1 } else { other };
    }
    let mut flips = Vec::new();
    for (i, sample) in ds.samples.iter().enumerate() {
        let name = sample.path.file_name().context("a photo without a file name")?;
        let class = ds.classes.name(given[i]);
        let to = dst.join(class).join(name);
        if to.exists() {
            bail!("{} would be written twice: two classes hold a photo of that name", to.display());
        }
        link(&std::path::absolute(&sample.path)?, &to)?;
        if given[i] != sample.label {
            flips.push(Flip {
                file: format!("{class}/{}", name.to_string_lossy()),
                truth: ds.classes.name(sample.label).into(),
                given: class.into(),
            });
        }
    }
    Ok(flips)
}

/// A symbolic link at `to` (a copy where there are none).
pub fn link(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(from, to)
        .with_context(|| format!("cannot link {} to {}", to.display(), from.display()))?;
    #[cfg(not(unix))]
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Links every file under `src` into the same place under `dst`.
pub fn link_tree(src: &Path, dst: &Path) -> Result<Vec<PathBuf>> {
    let mut linked = Vec::new();
    for (path, _) in sd_data::tree::files(src).with_context(|| format!("cannot list {}", src.display()))? {
        let to = dst.join(path.strip_prefix(src).expect("under src"));
        link(&std::path::absolute(&path)?, &to)?;
        linked.push(to);
    }
    linked.sort();
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_move_links_to_another_class_and_near_copies_shrink() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        for class in ["a", "b", "c"] {
            for i in 0..10 {
                let p = src.join(class).join(format!("{class}{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::from_pixel(20, 10, image::Rgb([i * 20, 0, 0])).save(p).unwrap();
            }
        }
        let flips = flip_labels(&src, &t.path().join("dst"), 0.2, 1).unwrap();
        assert_eq!(flips.len(), 6);
        for f in &flips {
            assert_ne!(f.truth, f.given);
            assert!(f.file.starts_with(&format!("{}/{}", f.given, f.truth)), "{f:?}");
        }
        let ds = sd_data::Dataset::scan(t.path().join("dst")).unwrap();
        assert_eq!(ds.len(), 30);
        assert_eq!(flips, flip_labels(&src, &t.path().join("dst2"), 0.2, 1).unwrap());
        assert!(flip_labels(&src, &t.path().join("dst"), 0.2, 1).is_err(), "an existing folder is refused");

        near_copy(&src.join("a/a1.png"), &t.path().join("copy/a1.jpg"), 1.0, 0.9, 70).unwrap();
        let img = image::open(t.path().join("copy/a1.jpg")).unwrap();
        assert_eq!((img.width(), img.height()), (18, 9));
        near_copy(&src.join("a/a1.png"), &t.path().join("copy/a1c.jpg"), 0.5, 1.0, 90).unwrap();
        let img = image::open(t.path().join("copy/a1c.jpg")).unwrap();
        assert_eq!((img.width(), img.height()), (10, 5));
    }
}
