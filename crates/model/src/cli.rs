//! `prepare-model`: the command line.

use std::path::PathBuf;

use clap::Parser;

use crate::prepare::{FingerprintCheck, prepare};

/// Cut the VGG16 conv base (and the part that stays frozen when fine-tuning block 5) out of a
/// VGG16 ONNX export, and verify its weights.
///
/// Writes into --out: conv_base.onnx (input `input` float32 NHWC [N,H,W,3], preprocessed;
/// output `features` NHWC [N,H/32,W/32,512]), frozen_base.onnx (output `block4_pool` NHWC
/// [N,H/16,W/16,512]), block5/*.npy (block 5 kernels [Cout,Cin,3,3] and biases) and model.json.
/// The layers are found by structure (13 3x3 convolutions in blocks of 2,2,3,3,3 with max
/// pools), so Keras/tf2onnx, ONNX model zoo and torchvision exports all work.
#[derive(Debug, Parser)]
#[command(name = "prepare-model", version)]
pub struct Args {
    /// The VGG16 ONNX file (scripts/setup.sh fetches the Keras ImageNet one).
    #[arg(long, default_value = ".cache/models/vgg16-keras-imagenet.onnx")]
    pub source: PathBuf,
    /// Output folder (replaced as a whole when everything is written).
    #[arg(long, default_value = "artifacts/model")]
    pub out: PathBuf,
    /// Verify the conv weights against this fingerprint JSON instead of the built-in Keras
    /// ImageNet one.
    #[arg(long, conflicts_with = "skip_fingerprint")]
    pub fingerprint: Option<PathBuf>,
    /// Accept weights that are not the Keras ImageNet ones (e.g. torchvision's VGG16, which
    /// expects other preprocessing).
    #[arg(long)]
    pub skip_fingerprint: bool,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let check = match (&args.fingerprint, args.skip_fingerprint) {
        (_, true) => FingerprintCheck::Skip,
        (Some(p), false) => FingerprintCheck::File(p.clone()),
        (None, false) => FingerprintCheck::KerasImagenet,
    };
    let info = prepare(&args.source, &args.out, &check)?;
    sd_cli::summary(
        &args.log,
        format_args!(
            "prepare-model: {} -> {} (13 conv layers, weights verified against {})",
            args.source.display(),
            args.out.display(),
            info.weights_verified_against
        ),
    );
    Ok(())
}
