//! Plants known dirt into a copy of a data set, for benches/audit (the photos themselves are
//! never touched; the copies are symbolic links):
//!
//! ```sh
//! # 5% of the training labels flipped to a random other class; validation linked as it is
//! cargo run --release -p sd-audit --example plant -- flips --data ../shared/data/flowers --out /tmp/flips --share 0.05 --seed 0
//! # 30 training photos copied into validation (same class), resized to 90% and re-encoded at JPEG quality 70
//! cargo run --release -p sd-audit --example plant -- copies --data ../shared/data/flowers --out /tmp/copies --count 30
//! ```
//!
//! Each writes a CSV of what it planted into OUT/planted.csv (outside the class folders).
//!
//! `sheet` draws the pairs of an audit's duplicates.csv side by side, one PNG per pair, to look
//! at them:
//!
//! ```sh
//! cargo run --release -p sd-audit --example plant -- sheet --audit artifacts/audit --out /tmp/pairs --count 20
//! ```

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sd_audit::testing::{flip_labels, link_tree, near_copy};
use sd_data::csv::field;

#[derive(Debug, Parser)]
enum Plant {
    /// DATA/train with `share` of its labels flipped, DATA/validation as it is.
    Flips {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0.05)]
        share: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// DATA as it is, plus `count` training photos copied into validation (same class), resized
    /// by `scale` and re-encoded as JPEG at `quality`.
    Copies {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 30)]
        count: usize,
        #[arg(long, default_value_t = 0.9)]
        scale: f64,
        #[arg(long, default_value_t = 70)]
        quality: u8,
        /// Centre crop kept of each side before resizing (1: none).
        #[arg(long, default_value_t = 1.0)]
        crop: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The first `count` pairs of AUDIT/duplicates.csv side by side, OUT/pair-N.png.
    Sheet {
        #[arg(long)]
        audit: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

fn main() -> Result<()> {
    let mut lines = Vec::new();
    let out = match Plant::parse() {
        Plant::Flips { data, out, share, seed } => {
            lines.push("file,truth,given".to_string());
            for f in flip_labels(&data.join("train"), &out.join("train"), share, seed)? {
                lines.push(format!("{},{},{}", field(&format!("train/{}", f.file)), field(&f.truth), field(&f.given)));
            }
            link_tree(&data.join("validation"), &out.join("validation"))?;
            out
        }
        Plant::Sheet { audit, out, count } => return sheet(&audit, &out, count),
        Plant::Copies { data, out, count, scale, quality, crop, seed } => {
            link_tree(&data.join("train"), &out.join("train"))?;
            link_tree(&data.join("validation"), &out.join("validation"))?;
            let train = sd_data::Dataset::scan(data.join("train"))?;
            let mut picks: Vec<usize> = (0..train.len()).collect();
            picks.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            lines.push("original,copy".to_string());
            for &i in &picks[..count.min(train.len())] {
                let s = &train.samples[i];
                let rel = s.path.strip_prefix(&train.root).expect("under the root");
                let stem = rel.file_stem().context("a file name")?.to_string_lossy();
                let copy = PathBuf::from("validation")
                    .join(rel.parent().expect("in a class folder"))
                    .join(format!("planted-{stem}.jpg"));
                near_copy(&s.path, &out.join(&copy), crop, scale, quality)?;
                lines.push(format!(
                    "{},{}",
                    field(&format!("train/{}", rel.display())),
                    field(&copy.display().to_string())
                ));
            }
            out
        }
    };
    let mut f = std::fs::File::create(out.join("planted.csv"))?;
    writeln!(f, "{}", lines.join("\n"))?;
    println!("planted {} -> {}", lines.len() - 1, out.join("planted.csv").display());
    Ok(())
}

/// Each pair's two photos at the same height, side by side, with their similarity in the name.
fn sheet(audit: &std::path::Path, out: &std::path::Path, count: usize) -> Result<()> {
    let found = sd_audit::Audit::read(audit)?;
    std::fs::create_dir_all(out)?;
    let height = 200;
    for (i, p) in found.duplicates.iter().take(count).enumerate() {
        let load = |f: &str| -> Result<image::RgbImage> {
            let img = sd_data::image::load_rgb(f)?;
            let w = (img.width() as f64 * height as f64 / img.height() as f64).round().max(1.0) as u32;
            Ok(sd_data::image::resize(img, w, height, sd_data::image::ResizeFilter::Bilinear)?)
        };
        let (a, b) = (load(&p.file_a)?, load(&p.file_b)?);
        let mut both = image::RgbImage::from_pixel(a.width() + b.width() + 8, height, image::Rgb([255, 255, 255]));
        image::imageops::replace(&mut both, &a, 0, 0);
        image::imageops::replace(&mut both, &b, (a.width() + 8) as i64, 0);
        let name = out.join(format!("pair-{i:02}-{:.4}.png", p.similarity));
        both.save(&name).with_context(|| format!("cannot write {}", name.display()))?;
        println!("{} {} {} {:.4} {}", name.display(), p.file_a, p.file_b, p.similarity, p.kind());
    }
    Ok(())
}
