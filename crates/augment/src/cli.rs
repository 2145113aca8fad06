//! `augment`: preview augmented copies of one image, or write K augmented rounds of a
//! class-folder data set (as class folders of images, or uint8 `.npy` shards) for `bottleneck`.

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use image::RgbImage;
use rayon::prelude::*;
use sd_cli::LogArgs;
use sd_cli::args::{ResizeArgs, TransformArgs};
use sd_data::artifact::{StagingDir, write_bytes, write_json, write_lines};
use sd_data::image::{ImageSize, load_resized, load_rgb, resize};
use sd_data::layout::features::{FILES, LABELS, write_classes};
use sd_data::npy::NpyWriter;
use sd_data::{Dataset, Sample};
use serde_json::json;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use sd_transform::Augmenter;

/// Keras ImageDataGenerator-style augmentation: one affine resampling per image, seeded per
/// image (the same bytes whatever the thread count).
///
/// Without --augment or transform flags nothing is transformed; --augment PRESET starts from a
/// preset and each flag given overrides it.
#[derive(Debug, Parser)]
#[command(name = "augment", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes COUNT augmented copies of one image (the blog post's preview).
    Preview(PreviewArgs),
    /// Writes ROUNDS augmented rounds of a class-folder data set.
    Rounds(RoundsArgs),
}

#[derive(Debug, Args)]
#[command(mut_arg("size", |a| a.help("Resize to N (square) or WxH first, e.g. 150 or 224x160 [default: keep the image's size, as the blog's preview]")))]
pub struct PreviewArgs {
    /// The image file to augment.
    pub image: PathBuf,
    /// Augmented copies to write.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Output folder (created); files are PREFIX_<i>.<format>.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// File name prefix of the copies.
    #[arg(long, default_value = "aug")]
    pub prefix: String,
    /// Image format of the copies.
    #[arg(long, value_enum, default_value_t = ImageFormat::Jpeg)]
    pub format: ImageFormat,
    #[command(flatten)]
    pub resize: ResizeArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct RoundsArgs {
    /// Class-folder data set: DATA/<class>/<image>.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output folder, replaced as a whole once complete. Images: OUT/<class>/<stem>_r<k>.<ext>
    /// (a class-folder set for `bottleneck --data OUT`); npy: OUT/round-<k>/{images,labels}.npy.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Augmented copies of every image (round k draws its own transform per image).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Images are resized before augmentation (Keras' target_size).
    #[command(flatten)]
    pub resize: ResizeArgs,
    /// png (lossless), jpeg (re-encoding loses quality) or npy (uint8 [n,H,W,3]).
    #[arg(long, value_enum, default_value_t = RoundsFormat::Png)]
    pub format: RoundsFormat,
    /// Multiply pixels by this after the transform (e.g. 1/255) and write float32 images.npy;
    /// npy only (for model input, prefer bottleneck's --preprocess).
    #[arg(long, value_parser = parse_factor)]
    pub rescale: Option<f32>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Seed of every random draw (each image's draw is keyed by seed, round and sample).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads [default: all cores]; the output does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    #[command(flatten)]
    pub transform: TransformArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoundsFormat {
    Png,
    Jpeg,
    Npy,
}

impl ImageFormat {
    fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
        }
    }
}

/// A number or a fraction such as `1/255`.
fn parse_factor(s: &str) -> Result<f32, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => a.trim().parse::<f64>().ok().zip(b.trim().parse::<f64>().ok()).map(|(a, b)| a / b),
        None => s.trim().parse::<f64>().ok(),
    };
    match v {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v as f32),
        _ => Err(format!("expected a positive number or fraction such as 1/255, got '{s}'")),
    }
}

pub fn run(cli: &Cli) -> Result<()> {
    let common = match &cli.command {
        Command::Preview(a) => &a.common,
        Command::Rounds(a) => &a.common,
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = common.threads {
        pool = pool.num_threads(n as usize);
    }
    match &cli.command {
        Command::Preview(a) => sd_cli::paths::file("the image", &a.image, &[], "an image file to augment")?,
        Command::Rounds(a) => sd_cli::paths::class_folders("--data", &a.data)?,
    }
    pool.build().context("cannot start worker threads")?.install(|| match &cli.command {
        Command::Preview(args) => preview(args, &cli.log),
        Command::Rounds(args) => rounds(args, &cli.log),
    })
}

/// Rounds are made at the recipe's size unless told otherwise.
const ROUNDS_SIZE: ImageSize = ImageSize::square(150);

fn augmenter(common: &CommonArgs) -> Result<Augmenter> {
    Augmenter::new(common.transform.config(), common.seed).context("invalid augmentation settings")
}

fn encode(img: &RgbImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>> {
    let mut buf = Cursor::new(Vec::new());
    match format {
        ImageFormat::Png => img.write_to(&mut buf, image::ImageFormat::Png)?,
        ImageFormat::Jpeg => {
            img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality))?
        }
    }
    Ok(buf.into_inner())
}

fn preview(args: &PreviewArgs, log: &LogArgs) -> Result<()> {
    let aug = augmenter(&args.common)?;
    let mut img = load_rgb(&args.image)?;
    if let Some(s) = args.resize.size {
        img = resize(img, s.width, s.height, args.resize.resize_filter.unwrap_or_default())?;
    }
    let width = args.count.saturating_sub(1).to_string().len();
    (0..args.count).into_par_iter().try_for_each(|i| -> Result<()> {
        // Copy i is round i of sample 0: the same as `rounds` would draw for a one-image set.
        let out = aug.augment(&img, i as u64, 0);
        let path = args.out.join(format!("{}_{i:0width$}.{}", args.prefix, args.format.extension()));
        write_bytes(&path, &encode(&out, args.format, args.common.jpeg_quality)?)?;
        Ok(())
    })?;
    sd_cli::summary(
        log,
        format!(
            "wrote {} of {} to {}",
            sd_cli::count(args.count as usize, "augmented copy"),
            args.image.display(),
            args.out.display()
        ),
    );
    Ok(())
}

const MANIFEST: &str = "augment.json";

fn rounds(args: &RoundsArgs, log: &LogArgs) -> Result<()> {
    let aug = augmenter(&args.common)?;
    if args.rescale.is_some() && args.format != RoundsFormat::Npy {
        bail!("--rescale needs --format npy (it makes float32 arrays; images stay 0..255)");
    }
    let data = Dataset::scan(&args.data)?;
    let out = &args.out;
    check_out_folder(&args.data, out)?;
    // Built under a temporary name and renamed into place: never a half-written data set.
    let staging = StagingDir::create(out)?;
    let tmp = staging.path();

    let names = output_names(&data)?;
    let total = data.len() as u64 * args.rounds as u64;
    let bar = sd_cli::progress_bar(total, "augment", log.interactive());
    let (size, filter) = (args.resize.size.unwrap_or(ROUNDS_SIZE), args.resize.resize_filter.unwrap_or_default());
    let load = |s: &Sample| load_resized(&s.path, size.width, size.height, filter);
    match args.format {
        RoundsFormat::Png | RoundsFormat::Jpeg => {
            let format = if args.format == RoundsFormat::Png { ImageFormat::Png } else { ImageFormat::Jpeg };
            data.samples.par_iter().zip(&names).enumerate().try_for_each(|(i, (s, name))| -> Result<()> {
                let img = load(s)?;
                for k in 0..args.rounds {
                    let path = tmp.join(format!("{name}_r{k}.{}", format.extension()));
                    let bytes = encode(&aug.augment(&img, k as u64, i as u64), format, args.common.jpeg_quality)?;
                    write_bytes(&path, &bytes)?;
                    bar.inc(1);
                }
                Ok(())
            })?;
        }
        RoundsFormat::Npy => write_npy_rounds(&aug, &data, args, tmp, &load, &bar)?,
    }
    bar.finish_and_clear();
    write_json(
        tmp.join(MANIFEST),
        &json!({
            "data": args.data,
            "classes": data.classes,
            "samples": data.len(),
            "rounds": args.rounds,
            "size": size,
            "resize_filter": filter,
            "format": format!("{:?}", args.format).to_lowercase(),
            "rescale": args.rescale,
            "seed": aug.seed(),
            "augmentation": aug.config(),
        }),
    )?;
    staging.commit()?;
    sd_cli::summary(
        log,
        format!(
            "wrote {} ({} x {}) to {}",
            sd_cli::count(total as usize, "image"),
            sd_cli::count(data.len(), "sample"),
            sd_cli::count(args.rounds as usize, "round"),
            out.display()
        ),
    );
    Ok(())
}

/// Output paths without round suffix and extension: `<class>/<sub>/<stem>`, unique.
fn output_names(data: &Dataset) -> Result<Vec<String>> {
    let rel = data.relative_paths();
    let names: Vec<String> =
        rel.iter().map(|r| Path::new(r).with_extension("").to_string_lossy().into_owned()).collect();
    let mut seen = std::collections::HashMap::new();
    for (name, r) in names.iter().zip(&rel) {
        if let Some(first) = seen.insert(name.as_str(), r) {
            bail!(
                "{} and {} would both be written as {name}_r<k>: rename one of them",
                data.root.join(first).display(),
                data.root.join(r).display()
            );
        }
    }
    Ok(names)
}

fn write_npy_rounds(
    aug: &Augmenter,
    data: &Dataset,
    args: &RoundsArgs,
    dir: &Path,
    load: &(dyn Fn(&Sample) -> Result<RgbImage, sd_data::image::ImageError> + Sync),
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let size = args.resize.size.unwrap_or(ROUNDS_SIZE);
    let row = [size.height as usize, size.width as usize, 3];
    let k = args.rounds as usize;
    let round_dir = |r: usize| dir.join(format!("round-{r:0w$}", w = (k - 1).to_string().len().max(3)));
    let mut writers: Vec<Writer> = (0..k)
        .map(|r| -> Result<Writer> {
            let path = round_dir(r).join("images.npy");
            Ok(match args.rescale {
                None => Writer::U8(NpyWriter::create(path, data.len(), &row)?),
                Some(_) => Writer::F32(NpyWriter::create(path, data.len(), &row)?),
            })
        })
        .collect::<Result<_>>()?;
    // Chunks of samples are augmented in parallel, then appended in order to every round.
    let chunk = 16 * rayon::current_num_threads();
    for (c, samples) in data.samples.chunks(chunk).enumerate() {
        let images: Vec<Vec<RgbImage>> = samples
            .par_iter()
            .enumerate()
            .map(|(j, s)| -> Result<Vec<RgbImage>> {
                let img = load(s)?;
                let i = (c * chunk + j) as u64;
                let out = (0..k as u64).map(|r| aug.augment(&img, r, i)).collect();
                bar.inc(k as u64);
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for per_sample in &images {
            for (w, img) in writers.iter_mut().zip(per_sample) {
                w.write(img.as_raw(), args.rescale.unwrap_or(1.0))?;
            }
        }
    }
    let labels = ndarray::Array1::from_iter(data.samples.iter().map(|s| s.label as i64));
    let files = data.relative_paths();
    for (r, w) in writers.into_iter().enumerate() {
        w.finish()?;
        let d = round_dir(r);
        sd_data::npy::write(d.join(LABELS), &labels)?;
        write_lines(d.join(FILES), &files)?;
        write_classes(&d, &data.classes)?;
    }
    Ok(())
}

enum Writer {
    U8(NpyWriter<u8>),
    F32(NpyWriter<f32>),
}

impl Writer {
    fn write(&mut self, pixels: &[u8], scale: f32) -> Result<()> {
        match self {
            Writer::U8(w) => w.write_rows(pixels)?,
            Writer::F32(w) => w.write_rows(&pixels.iter().map(|&p| p as f32 * scale).collect::<Vec<_>>())?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Writer::U8(w) => w.finish()?,
            Writer::F32(w) => w.finish()?,
        }
        Ok(())
    }
}

/// Refuses output folders that would clobber the input or something `augment` did not write.
fn check_out_folder(data: &Path, out: &Path) -> Result<()> {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (d, o) = (canon(data), canon(out));
    ensure!(
        !o.starts_with(&d) && !d.starts_with(&o),
        "--out {} and --data {} overlap: write the rounds to a separate folder",
        out.display(),
        data.display()
    );
    if out.exists() {
        let empty = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?.next().is_none();
        ensure!(
            empty || out.join(MANIFEST).is_file(),
            "{} exists and was not written by `augment rounds` (no {MANIFEST}); remove it or choose another --out",
            out.display()
        );
    }
    Ok(())
}
