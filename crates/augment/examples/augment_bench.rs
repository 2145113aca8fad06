//! Single-thread augmentation throughput at a fixed size, plus a parity dump for
//! benches/augment/bench.py (which times Keras/scipy on the same pixels and compares outputs).
//!
//!   cargo run --release -p sd-augment --example augment_bench -- DATA_DIR [N] [SIZE] [DUMP_DIR]
//!
//! Prints one JSON line: images/s on one thread with the tutorial preset, per fill mode, per
//! second of wall time and of CPU time.

use std::time::{Duration, Instant};

use image::RgbImage;
use sd_data::Dataset;
use sd_data::image::{ResizeFilter, load_resized};
use sd_transform::{Augmenter, FillMode, Preset, TransformParams};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args.first().map(String::as_str).unwrap_or("data/sample/train");
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let size: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(150);
    let dump = args.get(3);

    // Decoding is not part of the measurement (Keras' random_transform takes an array too).
    let ds = Dataset::scan(data)?;
    let step = (ds.len() / n).max(1);
    let images: Vec<RgbImage> = ds
        .samples
        .iter()
        .step_by(step)
        .take(n)
        .map(|s| load_resized(&s.path, size, size, ResizeFilter::Bilinear))
        .collect::<Result<_, _>>()?;

    let mut results = serde_json::Map::new();
    results.insert("images".into(), images.len().into());
    results.insert("size".into(), size.into());
    for mode in [FillMode::Nearest, FillMode::Reflect, FillMode::Wrap, FillMode::Constant] {
        let mut cfg = Preset::Tutorial.config();
        cfg.fill_mode = mode;
        let aug = Augmenter::new(cfg, 0)?;
        let (wall, cpu) = throughput(&aug, &images);
        results.insert(format!("rust_images_per_s_{mode}"), wall.into());
        results.insert(format!("rust_images_per_cpu_s_{mode}"), cpu.into());
    }

    if let Some(dir) = dump {
        // Inputs, the draws' matrices and our outputs, for a parity check against scipy.
        let dir = std::path::Path::new(dir);
        let aug = Augmenter::new(Preset::Tutorial.config(), 0)?;
        let m = images.len();
        let s = size as usize;
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut matrices = Vec::new();
        for (i, img) in images.iter().take(m).enumerate() {
            let p: TransformParams = aug.params(0, i as u64, s, s);
            inputs.extend_from_slice(img.as_raw());
            outputs.extend_from_slice(aug.augment(img, 0, i as u64).as_raw());
            matrices.extend(p.matrix(s, s).0.iter().flatten().copied());
        }
        let a = |v: Vec<u8>| ndarray::Array4::from_shape_vec((m, s, s, 3), v);
        sd_data::npy::write(dir.join("inputs.npy"), &a(inputs)?)?;
        sd_data::npy::write(dir.join("outputs.npy"), &a(outputs)?)?;
        sd_data::npy::write(dir.join("matrices.npy"), &ndarray::Array3::from_shape_vec((m, 2, 3), matrices)?)?;
    }
    println!("{}", serde_json::Value::Object(results));
    Ok(())
}

/// Images per second over passes through `images`, for at least a second: per second of wall
/// time and per second of this process' CPU time (robust when other jobs share the core).
fn throughput(aug: &Augmenter, images: &[RgbImage]) -> (f64, f64) {
    let mut done = 0usize;
    let mut checksum = 0u64;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(2) {
        for (i, img) in images.iter().enumerate() {
            let out = aug.augment(img, round, i as u64);
            checksum = checksum.wrapping_add(out.as_raw()[out.as_raw().len() / 2] as u64);
        }
        done += images.len();
        round += 1;
    }
    std::hint::black_box(checksum);
    let cpu = cpu_seconds().map(|c| c - cpu_start.unwrap_or(0.0));
    (done as f64 / start.elapsed().as_secs_f64(), cpu.map_or(f64::NAN, |c| done as f64 / c))
}

/// User + system CPU seconds of this process (Linux /proc; clock ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) / 100.0)
}
