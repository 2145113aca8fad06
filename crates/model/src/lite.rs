//! `prepare-model --backbone efficientnet-lite0|efficientnet-lite2`: reads the PyTorch state
//! dict (`sd-torch`), checks it against the built-in fingerprint, and writes the same model
//! folder as VGG16's (`sd_data::layout::model`): `conv_base.onnx` (features `[N, h, w, 1280]`),
//! `frozen_base.onnx` (through the second-to-last MBConv block; the tail after it, the last
//! block and the head conv, is what fine-tuning would train: `model.json`'s `trainable_tail`),
//! `imagenet_head.onnx` (features to the 1000 ImageNet probabilities, for zero-shot checks) and
//! `model.json` with the backbone and how images become its input.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sd_data::ModelInput;
use sd_data::layout::model::{
    Backbone, CONV_BASE, FEATURES, FROZEN_BASE, INPUT, LayerInfo, Layout, ModelDir, ModelInfo,
};

use crate::efficientnet::{EfficientNet, TAIL_INPUT};
use crate::fingerprint::Fingerprint;
use crate::prepare::FingerprintCheck;
use crate::quantize::CalibrationConfig;

/// The ImageNet head over the features, in the model folder.
pub const IMAGENET_HEAD: &str = "imagenet_head.onnx";

/// The built-in fingerprint of `backbone`'s ImageNet weights (computed independently of this
/// crate by `fingerprints/efficientnet_lite.py`).
pub fn builtin_fingerprint(backbone: Backbone) -> Option<&'static str> {
    match backbone {
        Backbone::EfficientnetLite0 => Some(include_str!("../fingerprints/efficientnet-lite0.json")),
        Backbone::EfficientnetLite2 => Some(include_str!("../fingerprints/efficientnet-lite2.json")),
        Backbone::Vgg16 => None,
    }
}

/// Where `scripts/setup.sh` puts an EfficientNet-Lite's weights, relative to its `.cache`.
pub fn setup_source(backbone: Backbone) -> String {
    format!("models/{backbone}.pth")
}

/// Writes the model folder of an EfficientNet-Lite `backbone` from the state dict `source`;
/// `input` is how images become its input (recorded; also what int8 calibration uses).
pub fn prepare(
    source: &Path,
    out: &Path,
    backbone: Backbone,
    check: &FingerprintCheck,
    input: ModelInput,
    int8: Option<&CalibrationConfig>,
) -> Result<ModelInfo> {
    if !source.is_file() {
        bail!(
            "source weights {} do not exist; run scripts/setup.sh (it fetches the EfficientNet-Lite weights) or pass --source FILE.pth",
            source.display()
        );
    }
    let expected = backbone.image_input().preprocess;
    if input.preprocess != expected {
        tracing::warn!(
            "{backbone}'s weights expect --preprocess {expected}, not {}: its features will be off",
            input.preprocess
        );
    }
    let dict = sd_torch::read(source).context("reading the EfficientNet-Lite weights")?;
    let net = EfficientNet::from_state_dict(&dict, backbone)
        .with_context(|| format!("{} is not usable as {backbone}", source.display()))?;
    let verified = verify(&net, backbone, check, source)?;

    let staging = sd_data::artifact::StagingDir::create(out)?;
    let dir = staging.path();
    let conv_base = net.conv_base();
    sd_onnx::save(&conv_base, dir.join(CONV_BASE))?;
    let frozen = net.frozen_part();
    sd_onnx::save(&frozen, dir.join(FROZEN_BASE))?;
    sd_onnx::save(&net.imagenet_head(), dir.join(IMAGENET_HEAD))?;
    let int8 = match int8 {
        Some(config) => Some(crate::quantize::write_int8(dir, &conv_base, &frozen, config)?),
        None => None,
    };

    let source_bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let convs = net.convs();
    let tail = &net.blocks[net.frozen_blocks()..];
    let info = ModelInfo {
        source: source.display().to_string(),
        source_blake3: blake3::hash(&source_bytes).to_hex().to_string(),
        source_input: "(PyTorch state dict)".into(),
        source_input_layout: Layout::Nchw,
        input: INPUT.into(),
        input_layout: Layout::Nhwc,
        conv_base: CONV_BASE.into(),
        conv_base_output: FEATURES.into(),
        frozen_base: FROZEN_BASE.into(),
        frozen_base_output: TAIL_INPUT.into(),
        channels: convs.iter().map(|c| c.kernel.shape()[0]).collect(),
        weights_verified_against: verified,
        preprocess: Some(input.preprocess),
        layers: convs
            .iter()
            .map(|c| LayerInfo { name: c.name.clone(), node: c.name.clone(), kernel_shape: c.kernel.shape().to_vec() })
            .collect(),
        block5: Vec::new(),
        int8,
        backbone,
        image_input: Some(input),
        trainable_tail: tail
            .iter()
            .flat_map(|b| b.expand.iter().chain([&b.depthwise, &b.project]))
            .chain([&net.head])
            .map(|c| c.name.clone())
            .collect(),
    };
    ModelDir::new(dir).write_info(&info)?;
    staging.commit()?;
    Ok(info)
}

fn verify(net: &EfficientNet, backbone: Backbone, check: &FingerprintCheck, source: &Path) -> Result<String> {
    let (text, label) = match check {
        FingerprintCheck::Skip => {
            tracing::warn!("weights not verified (--skip-fingerprint)");
            return Ok("skipped".into());
        }
        FingerprintCheck::KerasImagenet => {
            (builtin_fingerprint(backbone).expect("a Lite backbone").to_string(), format!("{backbone}-imagenet"))
        }
        FingerprintCheck::File(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading fingerprint {}", p.display()))?,
            p.display().to_string(),
        ),
    };
    let fingerprint = Fingerprint::parse(&text).with_context(|| format!("{label} is not a fingerprint JSON"))?;
    let report = fingerprint.compare(&net.fingerprints());
    if !report.is_empty() {
        bail!(
            "the weights of {} differ from the {label} fingerprint in {} of {} layers:\n  {}\n\
             If these are the weights you mean to use, pass --skip-fingerprint",
            source.display(),
            report.len(),
            fingerprint.layers.len(),
            report.join("\n  ")
        );
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use sd_data::loader::Loader;
    use sd_data::{Dataset, ModelInput};
    use sd_runtime::{Device, Model, SessionConfig};

    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The set-up's Lite0 weights; `None` (a skip) outside CI when scripts/setup.sh has not run.
    fn lite0_weights() -> Option<PathBuf> {
        let p = workspace().join(".cache").join(setup_source(Backbone::EfficientnetLite0));
        if !p.is_file() {
            assert!(std::env::var_os("CI").is_none(), "{} missing in CI: run scripts/setup.sh", p.display());
            eprintln!("skipping: {} missing (run scripts/setup.sh)", p.display());
            return None;
        }
        Some(p)
    }

    /// Prepared Lite0 matches its fingerprint (computed independently in Python); zero-shot,
    /// the ImageNet classes sort the committed sample's validation cats and dogs: P(cat
    /// classes 281-285) against P(dog classes 151-268), which proves the weights, the padding
    /// and the preprocessing together.
    #[test]
    fn lite0_matches_its_fingerprint_and_tells_cats_from_dogs_zero_shot() {
        let Some(source) = lite0_weights() else { return };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        let input = Backbone::EfficientnetLite0.image_input();
        let info =
            prepare(&source, &out, Backbone::EfficientnetLite0, &FingerprintCheck::KerasImagenet, input, None).unwrap();
        assert_eq!(info.weights_verified_against, "efficientnet-lite0-imagenet");
        assert_eq!(info.layers.len(), 49, "stem, 16 blocks (block 0 without expansion), head");
        assert_eq!(info.trainable_tail, ["blocks.15.expand", "blocks.15.depthwise", "blocks.15.project", "head"]);
        assert_eq!(ModelDir::new(&out).info().unwrap().image_input(), input);

        let session = SessionConfig { device: Device::Cpu, threads: None };
        let mut base = Model::load(out.join(CONV_BASE), &session).unwrap();
        let mut head = Model::load(out.join(IMAGENET_HEAD), &session).unwrap();
        let data = Dataset::scan(workspace().join("data/sample/validation")).unwrap();
        let samples: Arc<[_]> = data.samples.clone().into();
        let (mut right, mut total) = (0, 0);
        for batch in Loader::in_order(samples, ModelInput::loader(&input, 25)) {
            let batch = batch.unwrap();
            let features = base.run(input.tensor(&batch).into_dyn().view()).unwrap();
            assert_eq!(features.shape()[1..], [7, 7, 1280]);
            let p = head.run(features.view()).unwrap();
            for (row, &label) in p.outer_iter().zip(&batch.labels) {
                let cat: f32 = (281..=285).map(|c| row[c]).sum();
                let dog: f32 = (151..=268).map(|c| row[c]).sum();
                right += usize::from(u32::from(dog > cat) == label);
                total += 1;
            }
        }
        let accuracy = right as f64 / total as f64;
        eprintln!("zero-shot accuracy on data/sample/validation: {accuracy} ({right} of {total})");
        assert_eq!(total, 100);
        assert!(accuracy >= 0.85, "zero-shot accuracy {accuracy}");
    }

    #[test]
    fn weights_of_another_variant_are_a_clear_error() {
        let Some(source) = lite0_weights() else { return };
        let dir = tempfile::tempdir().unwrap();
        let input = Backbone::EfficientnetLite2.image_input();
        let err =
            prepare(&source, &dir.path().join("m"), Backbone::EfficientnetLite2, &FingerprintCheck::Skip, input, None)
                .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("16 MBConv blocks") && err.contains("efficientnet-lite2 has 21"), "{err}");
        assert!(!dir.path().join("m").exists());
    }
}
