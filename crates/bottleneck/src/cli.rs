//! `bottleneck`: the command line.

use std::path::PathBuf;

use clap::Parser;
use sd_cli::args::{InputArgs, PrecisionArgs};
use sd_data::layout::features::FEATURES;
use sd_data::layout::model::CONV_BASE;
use sd_runtime::SessionConfig;

use crate::{Config, Shard, extract, merge};

/// Compute VGG16 bottleneck features for every image of a class-folder data set.
///
/// Writes into --out (replaced as a whole when complete): features.npy (float32 [N,h,w,512],
/// NHWC as Keras gives them; [N,4,4,512] at 150x150), labels.npy (int64 [N]), files.txt (image
/// paths relative to --data, same order), classes.json ({"cats": 0, "dogs": 1}) and
/// bottleneck.json (the parameters). Every image is used: the last batch is just smaller.
///
/// Fan out with --shard i/n (one slice per job, cut at batch boundaries) and join the slices
/// with --merge; the result is byte-identical to a single run.
#[derive(Debug, Parser)]
#[command(name = "bottleneck", version)]
pub struct Args {
    /// Class-folder data set: DATA/<class>/<image> (e.g. data/sample/train).
    #[arg(long, value_name = "DIR", required_unless_present = "merge")]
    pub data: Option<PathBuf>,
    /// The conv base ONNX file that prepare-model writes (e.g. artifacts/model/conv_base.onnx;
    /// NHWC input).
    #[arg(long, value_name = "FILE", required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// int8 runs the quantised conv_base.int8.onnx beside --model.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image input [default: what the model folder's model.json records (EfficientNet-Lite:
    /// 224 or 260, crop, tf), else 150x150, bilinear, squash, caffe].
    #[command(flatten)]
    pub input: InputArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 16, value_parser = sd_cli::args::count)]
    pub batch_size: usize,
    #[command(flatten)]
    pub session: SessionConfig,
    /// Compute only slice i of n (0-based), e.g. --shard 0/4.
    #[arg(long, conflicts_with = "merge")]
    pub shard: Option<Shard>,
    /// Join shard folders (written with --shard) into --out instead of computing.
    #[arg(long, num_args = 1.., value_name = "SHARD_DIR", conflicts_with_all = ["data", "model"])]
    pub merge: Vec<PathBuf>,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

/// What `--model` takes.
const CONV_BASE_WANTED: &str =
    "the conv base ONNX file that prepare-model writes (e.g. artifacts/model/conv_base.onnx)";

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.merge.is_empty() {
        for dir in &args.merge {
            sd_cli::paths::folder("--merge", dir, &[FEATURES], "folders written by bottleneck --shard i/n")?;
        }
        let n = merge(&args.merge, &args.out)?;
        sd_cli::summary(
            &args.log,
            format_args!(
                "bottleneck: merged {}, {} -> {}",
                sd_cli::count(args.merge.len(), "shard"),
                sd_cli::count(n, "image"),
                args.out.display()
            ),
        );
        return Ok(());
    }
    let (data, model) = (args.data.as_ref().expect("required by clap"), args.model.as_ref().expect("required by clap"));
    sd_cli::paths::class_folders("--data", data)?;
    sd_cli::paths::file("--model", model, &[CONV_BASE], CONV_BASE_WANTED)?;
    let config = Config {
        data: data.clone(),
        model: args.precision.precision.pick(model)?,
        out: args.out.clone(),
        input: args.input.or(sd_data::layout::model::image_input_of(model)?),
        batch_size: args.batch_size,
        session: args.session.clone(),
        shard: args.shard,
        show_progress: args.log.interactive(),
    };
    let r = extract(&config)?;
    let secs = r.elapsed.as_secs_f64();
    let (rate, inference_rate) = (r.images as f64 / secs, r.images as f64 / r.inference.as_secs_f64().max(1e-9));
    tracing::info!(
        images = r.images,
        seconds = secs,
        images_per_second = rate,
        inference_seconds = r.inference.as_secs_f64(),
        inference_images_per_second = inference_rate,
        device = %r.device,
        "bottleneck done"
    );
    sd_cli::summary(
        &args.log,
        format_args!(
            "bottleneck: {} -> {} {:?} in {secs:.1} s ({} images/s; inference alone {} images/s on {})",
            sd_cli::count(r.images, "image"),
            config.out.join(FEATURES).display(),
            std::iter::once(r.images).chain(r.feature_shape.iter().copied()).collect::<Vec<_>>(),
            sd_cli::rate(rate),
            sd_cli::rate(inference_rate),
            r.device
        ),
    );
    Ok(())
}
