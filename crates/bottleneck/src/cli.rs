//! `bottleneck`: the command line.

use std::path::PathBuf;

use clap::Parser;
use sd_cli::args::{InputArgs, PrecisionArgs};
use sd_data::layout::features::FEATURES;
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
    #[arg(long, required_unless_present = "merge")]
    pub data: Option<PathBuf>,
    /// Conv base from prepare-model (NHWC input).
    #[arg(long, required_unless_present = "merge")]
    pub model: Option<PathBuf>,
    /// int8 runs the quantised conv_base.int8.onnx beside --model.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Output folder.
    #[arg(long)]
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

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.merge.is_empty() {
        let n = merge(&args.merge, &args.out)?;
        sd_cli::summary(
            &args.log,
            format_args!("bottleneck: merged {} shards, {n} images -> {}", args.merge.len(), args.out.display()),
        );
        return Ok(());
    }
    let config = Config {
        data: args.data.clone().expect("required by clap"),
        model: args.precision.precision.pick(args.model.as_ref().expect("required by clap"))?,
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
            "bottleneck: {} images -> {} {:?} in {secs:.1} s ({rate:.1} images/s; inference alone {inference_rate:.1} images/s on {})",
            r.images,
            config.out.join(FEATURES).display(),
            std::iter::once(r.images).chain(r.feature_shape.iter().copied()).collect::<Vec<_>>(),
            r.device
        ),
    );
    Ok(())
}
