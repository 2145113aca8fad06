//! `prepare-model`: the command line.

use std::path::PathBuf;

use clap::Parser;
use sd_cli::args::InputArgs;
use sd_data::ModelInput;
use sd_data::layout::model::Precision;
use sd_runtime::SessionConfig;

use crate::prepare::{FingerprintCheck, prepare};
use crate::quantize::CalibrationConfig;

/// Cut the VGG16 conv base (and the part that stays frozen when fine-tuning block 5) out of a
/// VGG16 ONNX export, and verify its weights.
///
/// Writes into --out: conv_base.onnx (input `input` float32 NHWC [N,H,W,3], preprocessed;
/// output `features` NHWC [N,H/32,W/32,512]), frozen_base.onnx (output `block4_pool` NHWC
/// [N,H/16,W/16,512]), block5/*.npy (block 5 kernels [Cout,Cin,3,3] and biases) and model.json.
/// The layers are found by structure (13 3x3 convolutions in blocks of 2,2,3,3,3 with max
/// pools), so Keras/tf2onnx, ONNX model zoo and torchvision exports all work.
///
/// With --quantize int8 --calibrate DIR it also writes conv_base.int8.onnx and
/// frozen_base.int8.onnx: the same models statically quantised (int8 weights per output
/// channel, uint8 activations with ranges observed on DIR's images), which ONNX Runtime runs
/// with int8 kernels; the stages pick them with --precision int8.
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
    /// Also write the conv base and frozen part at this precision: int8 (needs --calibrate), or
    /// fp32 (nothing more: the float models are always written).
    #[arg(long, requires_if("int8", "calibrate"))]
    pub quantize: Option<Precision>,
    /// Class-folder images the int8 activation ranges are calibrated on (e.g. the training set).
    #[arg(long, value_name = "DIR", requires = "quantize")]
    pub calibrate: Option<PathBuf>,
    /// How many of --calibrate's images (spread evenly over them).
    #[arg(long, default_value_t = sd_data::layout::model::DEFAULT_CALIBRATION_IMAGES, value_parser = sd_cli::args::count)]
    pub calibrate_images: usize,
    /// How calibration images become model input: use the stages' settings (default: 150x150,
    /// bilinear, caffe).
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let check = match (&args.fingerprint, args.skip_fingerprint) {
        (_, true) => FingerprintCheck::Skip,
        (Some(p), false) => FingerprintCheck::File(p.clone()),
        (None, false) => FingerprintCheck::KerasImagenet,
    };
    let calibration = match (args.quantize, &args.calibrate) {
        (Some(Precision::Int8), Some(folder)) => Some(CalibrationConfig {
            folder: folder.clone(),
            images: args.calibrate_images,
            input: args.input.or(ModelInput::RECIPE),
            session: args.session.clone(),
        }),
        _ => None,
    };
    let info = prepare(&args.source, &args.out, &check, calibration.as_ref())?;
    sd_cli::summary(
        &args.log,
        format_args!(
            "prepare-model: {} -> {} (13 conv layers, weights verified against {}{})",
            args.source.display(),
            args.out.display(),
            info.weights_verified_against,
            match &info.int8 {
                Some(q) =>
                    format!("; int8 models calibrated on {} images of {}", q.calibration.images, q.calibration.folder),
                None => String::new(),
            }
        ),
    );
    Ok(())
}
