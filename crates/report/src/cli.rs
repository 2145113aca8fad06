//! `report`: the command line.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use sd_cli::args::TransformArgs;
use sd_cli::args::{ResizeArgs, count};
use sd_data::image::ImageSize;
use sd_transform::Augmenter;

use crate::{Inputs, Options};

/// Write one self-contained HTML page about a pipeline run: OUT/index.html, with its
/// thumbnails, the learning curves and the confusion matrix as SVG and the per-epoch histories
/// as CSV. Open it in a browser straight from disk; it needs no network and no script.
#[derive(Debug, Parser)]
#[command(name = "report", version)]
pub struct Args {
    /// The folder holding the data set the pipeline ran on: DIR/train/<class>/ and
    /// DIR/validation/<class>/ (e.g. data/sample). Was --data, which now always names one
    /// class-folder set.
    #[arg(long = "data-root", alias = "data", value_name = "DIR")]
    pub data: PathBuf,
    /// train-head's folder (metrics.json, history.csv).
    #[arg(long, value_name = "DIR", default_value = "artifacts/head")]
    pub head: PathBuf,
    /// finetune's folder (metrics.json, history.csv).
    #[arg(long, value_name = "DIR", default_value = "artifacts/finetune")]
    pub finetune: PathBuf,
    /// predict --data's folder (metrics.json, predictions.csv) on the validation images.
    #[arg(long, value_name = "DIR", default_value = "artifacts/predict")]
    pub predict: PathBuf,
    /// The pipeline file: its lock gives each stage's time and params and the previous run's
    /// metrics (without it, the page leaves those out).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// audit's folder (duplicates.csv, suspects.csv, summary.json): the page shows what it found
    /// (without it, the page leaves the data audit out).
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// The report folder (replaced as a whole when complete).
    #[arg(long, value_name = "DIR", default_value = "artifacts/report")]
    pub out: PathBuf,
    /// Training thumbnails per class.
    #[arg(long, default_value_t = 8, value_parser = count)]
    pub thumbnails: usize,
    /// Wrong predictions shown at most (the most confident first).
    #[arg(long, default_value_t = 24, value_parser = count)]
    pub mistakes: usize,
    /// Augmented copies shown of the first training image.
    #[arg(long, default_value_t = 6, value_parser = count)]
    pub previews: usize,
    /// The augmentation's seed (augment rounds' --seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The augmentation (augment rounds' flags).
    #[command(flatten)]
    pub transform: TransformArgs,
    /// The size the images are augmented at [default: 150].
    #[command(flatten)]
    pub resize: ResizeArgs,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

/// Checks what the path flags name before any work, with advice naming the right path.
fn check_paths(args: &Args) -> Result<()> {
    use sd_cli::paths;
    let root = "the folder holding train/ and validation/ class-folder sets (e.g. data/sample)";
    paths::folder("--data-root", &args.data, &[], root)?;
    if !paths::is_split_root(&args.data) {
        let parent = args.data.parent().filter(|p| paths::is_split_root(p));
        return Err(sd_cli::usage(match parent {
            Some(p) => format!(
                "--data-root {} is one class-folder set; pass the folder above it: --data-root {}",
                args.data.display(),
                p.display()
            ),
            None => {
                format!("--data-root {} holds no train/ and validation/; --data-root takes {root}", args.data.display())
            }
        }));
    }
    for (flag, dir, stage) in [
        ("--head", &args.head, "train-head"),
        ("--finetune", &args.finetune, "finetune"),
        ("--predict", &args.predict, "predict --data"),
    ] {
        paths::folder(flag, dir, &["metrics.json"], &format!("the folder {stage} writes (its --out)"))?;
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    check_paths(args)?;
    let augmenter = Augmenter::new(args.transform.config(), args.seed).context("invalid augmentation settings")?;
    let inputs = Inputs {
        data: args.data.clone(),
        head: args.head.clone(),
        finetune: args.finetune.clone(),
        predict: args.predict.clone(),
        pipeline: args.pipeline.clone(),
        audit: args.audit.clone(),
    };
    let options = Options {
        thumbnails: args.thumbnails,
        mistakes: args.mistakes,
        previews: args.previews,
        augmenter,
        size: args.resize.size.unwrap_or(ImageSize::square(150)),
        resize_filter: args.resize.resize_filter.unwrap_or_default(),
    };
    let start = std::time::Instant::now();
    let s = crate::write(&inputs, &options, &args.out)?;
    sd_cli::summary(
        &args.log,
        format!(
            "report: accuracy {:.4}, {} shown, {} in {:.1} s -> {}",
            s.accuracy,
            sd_cli::count(s.mistakes, "mistake"),
            sd_cli::count(s.files, "file"),
            start.elapsed().as_secs_f64(),
            args.out.join(crate::INDEX).display()
        ),
    );
    Ok(())
}
