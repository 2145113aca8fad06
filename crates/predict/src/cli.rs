//! `predict`: the command line.

use std::path::PathBuf;

use clap::Parser;
use sd_cli::args::InputArgs;
use sd_runtime::SessionConfig;

use crate::{Config, predict, summary};

/// Run a classifier ONNX (from finetune) over a class-folder data set and report accuracy,
/// per-class accuracy, the confusion matrix and the loss.
///
/// With --out, writes predictions.csv (file, label, probability of the class labelled 1,
/// predicted) and metrics.json into that folder (replaced as a whole when complete). Size,
/// resize filter, preprocessing and class names default to what the classifier recorded at
/// training time.
#[derive(Debug, Parser)]
#[command(name = "predict", version)]
pub struct Args {
    /// The classifier: input NHWC [N,H,W,3] preprocessed, output probability [N,1].
    #[arg(long)]
    pub model: PathBuf,
    /// Class-folder data set: DATA/<class>/<image>.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder for predictions.csv and metrics.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Image input (default: what the classifier recorded at training time).
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(long, default_value_t = 16, value_parser = sd_cli::args::count)]
    pub batch_size: usize,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config {
        model: args.model.clone(),
        data: args.data.clone(),
        out: args.out.clone(),
        input: args.input,
        batch_size: args.batch_size,
        session: args.session.clone(),
        show_progress: args.log.interactive(),
    };
    let metrics = predict(&config)?;
    sd_cli::summary(&args.log, summary(&metrics));
    Ok(())
}
