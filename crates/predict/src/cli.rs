//! `predict`: the command line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;
use sd_cli::args::InputArgs;
use sd_cli::paths;
use sd_data::layout::classifier;
use sd_data::layout::model::{CONV_BASE, CONV_BASE_INT8};
use sd_runtime::SessionConfig;

use crate::classifier::{Classifier, Tta};
use crate::classify::{Format, Options, classify};
use crate::{evaluate, inputs, summary};

/// Run a classifier ONNX (from finetune) over images.
///
/// With --data DIR (class folders DIR/<class>/<image>): evaluate it, printing accuracy, per-class
/// precision/recall/F1 and the confusion matrix; with --out DIR, write predictions.csv and
/// metrics.json into that folder (replaced as a whole when complete).
///
/// With images instead (files, folders searched recursively, or --list FILE, `-` for standard
/// input): one row per image, in the order given, with the predicted class, its probability and
/// the top-k classes, as CSV or JSON lines to --out FILE or standard output.
///
/// Size, resize filter, preprocessing and class names default to what the classifier recorded
/// at training time.
#[derive(Debug, Parser)]
#[command(name = "predict", version)]
pub struct Args {
    /// The classifier ONNX file: classifier.onnx from finetune (e.g.
    /// artifacts/finetune/classifier.onnx; uint8 or preprocessed float32 images in,
    /// probabilities out).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Images to classify: files, or folders (searched recursively).
    #[arg(value_name = "IMAGE", conflicts_with = "data")]
    pub images: Vec<PathBuf>,
    /// A file listing images to classify, one path per line (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub list: Option<PathBuf>,
    /// A labelled class-folder data set to evaluate on: DATA/<class>/<image>.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A split data set (split's --out: DIR/train/, DIR/validation/ [and DIR/test/]) to
    /// evaluate on its held-out split: test/ when it has one (the honest number), else
    /// validation/ (the score that also chose the model); metrics.json says which (`split`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "images", "list", "skip_invalid"])]
    pub data_root: Option<PathBuf>,
    /// With --data: the output folder for predictions.csv and metrics.json; with images: the
    /// predictions file [default: standard output].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// The format of the predictions of unlabelled images.
    #[arg(long, value_enum, default_value_t = Format::Csv, conflicts_with = "data")]
    pub format: Format,
    /// Classes listed per image, best first (at most the number of classes).
    #[arg(long, default_value_t = 5, value_parser = sd_cli::args::count, conflicts_with = "data")]
    pub top_k: usize,
    /// Log an image that cannot be read and list it with its error (a row with the `error`
    /// column) instead of stopping.
    #[arg(long, conflicts_with = "data")]
    pub skip_invalid: bool,
    /// Test-time augmentation: none, or flip (the mean of each image's and its mirror's
    /// probabilities; twice the work).
    #[arg(long, value_enum, default_value_t = Tta::None)]
    pub tta: Tta,
    /// Image input (default: what the classifier recorded at training time).
    #[command(flatten)]
    pub input: InputArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 16, value_parser = sd_cli::args::count)]
    pub batch_size: usize,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

/// Checks that `--model` is a classifier file, with advice for prepare-model's conv base and
/// for the folders that hold a classifier.
fn check_model(model: &Path) -> Result<()> {
    let wanted =
        "the classifier.onnx that finetune writes into its --out folder (e.g. artifacts/finetune/classifier.onnx)";
    let conv_base = model.is_file()
        && model.file_name().is_some_and(|n| [CONV_BASE, CONV_BASE_INT8].contains(&n.to_str().unwrap_or_default()));
    let model_dir = model.is_dir() && paths::is_model(model) && !model.join(classifier::FILE).is_file();
    if conv_base || model_dir {
        let what = if model_dir { "folder" } else { "conv base" };
        return Err(sd_cli::usage(format!(
            "--model {} is prepare-model's {what}, which gives features, not classes; --model takes {wanted}",
            model.display()
        )));
    }
    paths::file("--model", model, &[classifier::FILE], wanted)
}

pub fn run(args: &Args) -> Result<()> {
    check_model(&args.model)?;
    if let Some(data) = &args.data {
        paths::class_folders("--data", data)?;
    }
    // The labelled set to evaluate on, and which split of a data set it is.
    let labelled = match &args.data_root {
        Some(root) => {
            let what = "the folder holding train/ and validation/ [and test/] class-folder sets (split's --out)";
            paths::folder("--data-root", root, &[], what)?;
            let split = sd_data::layout::split::held_out(root);
            paths::class_folders(&format!("--data-root's {split}/"), &root.join(split))?;
            Some((root.join(split), Some(split)))
        }
        None => args.data.clone().map(|d| (d, None)),
    };
    let mut classifier = Classifier::load(&args.model, &args.input, &args.session, args.tta)?;
    let show_progress = args.log.interactive();
    if let Some((data, split)) = &labelled {
        let metrics = evaluate(&mut classifier, data, *split, args.out.as_ref(), args.batch_size, show_progress)?;
        sd_cli::summary(&args.log, summary(&metrics));
        return Ok(());
    }
    let paths = inputs::collect(&args.images, args.list.as_deref())?;
    let options = Options {
        top_k: args.top_k,
        format: args.format,
        skip_invalid: args.skip_invalid,
        batch_size: args.batch_size,
        show_progress,
    };
    let s = classify(&mut classifier, paths, args.out.as_deref(), &options)?;
    let secs = s.elapsed.as_secs_f64();
    let skipped = if s.skipped > 0 { format!(", {} skipped (unreadable)", s.skipped) } else { String::new() };
    let line = format!(
        "predict: {}{skipped} in {secs:.1} s ({} images/s on {})",
        sd_cli::count(s.images, "image"),
        sd_cli::rate(s.images as f64 / secs.max(1e-9)),
        s.device
    );
    // The rows may be on standard output: the summary goes to the log then.
    match &args.out {
        Some(out) => sd_cli::summary(&args.log, format!("{line} -> {}", out.display())),
        None => tracing::info!("{line}"),
    }
    Ok(())
}
