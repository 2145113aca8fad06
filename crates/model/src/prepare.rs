//! Cutting a VGG16 export into what the stages run: the model folder described in
//! `sd_data::layout::model` (`conv_base.onnx` with Keras' NHWC layout, so the head's Flatten
//! order matches Keras; `frozen_base.onnx`, the part that stays frozen when fine-tuning block 5;
//! block 5's weights as `.npy`, the fine-tuning starting point; `model.json`). H and W are
//! dynamic.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;
use sd_data::Preprocess;
use sd_data::layout::model::{
    BLOCK4_POOL, Backbone, CONV_BASE, FEATURES, FROZEN_BASE, INPUT, LayerInfo, Layout, ModelDir, ModelInfo, WeightFiles,
};
use sd_onnx::{Dim, GraphProto, ModelProto, attr_ints, dtype, node, value_info};

use crate::fingerprint::{Fingerprint, KERAS_IMAGENET, LayerFingerprint};
use crate::quantize::CalibrationConfig;
use crate::structure::{self, Vgg16};

/// Which weights the conv layers must have.
#[derive(Debug, Clone)]
pub enum FingerprintCheck {
    /// The backbone's ImageNet weights: for VGG16 the Keras ones (embedded copy of the shared
    /// fingerprint), for EfficientNet-Lite `fingerprints/efficientnet-lite*.json`.
    KerasImagenet,
    File(PathBuf),
    /// Accept any weights (e.g. torchvision's VGG16, which expects other preprocessing).
    Skip,
}

/// Reads `source`, checks it, and writes the prepared models into `out` (replacing it as a
/// whole once everything is written); with `int8`, also the int8 conv base and frozen part,
/// calibrated on its images.
pub fn prepare(
    source: &Path,
    out: &Path,
    check: &FingerprintCheck,
    int8: Option<&CalibrationConfig>,
) -> Result<ModelInfo> {
    if !source.is_file() {
        bail!(
            "source model {} does not exist; run scripts/setup.sh (it fetches the default VGG16) or pass --source FILE.onnx",
            source.display()
        );
    }
    let model = sd_onnx::load(source).context("reading the source model")?;
    let graph = model.graph.as_ref().context("the source model has no graph")?;
    let vgg = structure::find(graph).with_context(|| format!("{} is not usable as VGG16", source.display()))?;
    tracing::info!(input = %vgg.input, layout = ?vgg.input_layout, "found VGG16 structure");

    let mut weights = Vec::new();
    let mut fingerprints = Vec::new();
    for layer in &vgg.convs {
        let kernel = constant_array(graph, &layer.weight)
            .with_context(|| format!("{}: weights of {} ('{}')", source.display(), layer.name, layer.weight))?;
        let bias = match &layer.bias {
            Some(b) => {
                constant_array(graph, b).with_context(|| format!("{}: bias of {}", source.display(), layer.name))?
            }
            None => ArrayD::zeros(vec![kernel.shape()[0]]),
        };
        fingerprints.push(LayerFingerprint::of(&layer.name, &kernel, &bias));
        weights.push((kernel, bias));
    }
    let verified = verify(&fingerprints, check, source)?;

    let staging = sd_data::artifact::StagingDir::create(out)?;
    let dir = staging.path();
    let conv_base = cut(&model, &vgg, &vgg.pools[4], FEATURES).context("cutting the conv base")?;
    sd_onnx::save(&conv_base, dir.join(CONV_BASE))?;
    let frozen = cut(&model, &vgg, &vgg.pools[3], BLOCK4_POOL).context("cutting the frozen part")?;
    sd_onnx::save(&frozen, dir.join(FROZEN_BASE))?;
    let int8 = match int8 {
        Some(config) => Some(crate::quantize::write_int8(dir, &conv_base, &frozen, config)?),
        None => None,
    };

    let mut block5 = Vec::new();
    for (i, (kernel, bias)) in weights.iter().skip(10).enumerate() {
        let files = WeightFiles::block5(i);
        sd_data::npy::write(dir.join(&files.kernel), kernel)?;
        sd_data::npy::write(dir.join(&files.bias), bias)?;
        block5.push(files);
    }

    let source_bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let info = ModelInfo {
        source: source.display().to_string(),
        source_blake3: blake3::hash(&source_bytes).to_hex().to_string(),
        source_input: vgg.input.clone(),
        source_input_layout: vgg.input_layout,
        input: INPUT.into(),
        input_layout: Layout::Nhwc,
        conv_base: CONV_BASE.into(),
        conv_base_output: FEATURES.into(),
        frozen_base: FROZEN_BASE.into(),
        frozen_base_output: BLOCK4_POOL.into(),
        channels: weights.iter().map(|(k, _)| k.shape()[0]).collect(),
        preprocess: matches!(check, FingerprintCheck::KerasImagenet).then_some(Preprocess::Caffe),
        weights_verified_against: verified,
        layers: vgg
            .convs
            .iter()
            .zip(&weights)
            .map(|(l, (k, _))| LayerInfo {
                name: l.name.clone(),
                node: l.node_name.clone(),
                kernel_shape: k.shape().to_vec(),
            })
            .collect(),
        block5,
        int8,
        backbone: Backbone::Vgg16,
        image_input: None,
        trainable_tail: Vec::new(),
    };
    ModelDir::new(dir).write_info(&info)?;
    staging.commit()?;
    Ok(info)
}

fn constant_array(graph: &GraphProto, name: &str) -> Result<ArrayD<f32>> {
    let t = sd_onnx::constant(graph, name)
        .with_context(|| format!("'{name}' is not a constant (initializer) of the graph"))?;
    Ok(sd_onnx::array_from_tensor(t)?)
}

fn verify(layers: &[LayerFingerprint], check: &FingerprintCheck, source: &Path) -> Result<String> {
    let (fingerprint, label) = match check {
        FingerprintCheck::Skip => {
            tracing::warn!(
                "weights not verified (--skip-fingerprint): make sure --preprocess matches what they expect"
            );
            return Ok("skipped".into());
        }
        FingerprintCheck::KerasImagenet => (Fingerprint::parse(KERAS_IMAGENET)?, "keras-imagenet".to_string()),
        FingerprintCheck::File(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading fingerprint {}", p.display()))?;
            let f = Fingerprint::parse(&text).with_context(|| format!("{} is not a fingerprint JSON", p.display()))?;
            (f, p.display().to_string())
        }
    };
    let report = fingerprint.compare(layers);
    if !report.is_empty() {
        bail!(
            "the conv weights of {} differ from the {label} fingerprint in {} of {} layers:\n  {}\n\
             If these are the weights you mean to use, pass --skip-fingerprint (and pick the matching --preprocess)",
            source.display(),
            report.len(),
            fingerprint.layers.len(),
            report.join("\n  ")
        );
    }
    Ok(label)
}

/// The sub-model from the image input to `pool_output`, with an NHWC input named [`INPUT`] and
/// the pooled map transposed to NHWC as `output_name`.
fn cut(model: &ModelProto, vgg: &Vgg16, pool_output: &str, output_name: &str) -> Result<ModelProto> {
    let source = model.graph.as_ref().expect("checked by caller");
    let mut graph = sd_onnx::extract(source, &[pool_output])?;
    match vgg.input_layout {
        Layout::Nhwc => {
            for n in &mut graph.node {
                for i in &mut n.input {
                    if *i == vgg.input {
                        *i = INPUT.into();
                    }
                }
            }
        }
        Layout::Nchw => {
            let to_nchw = node(
                "Transpose",
                "input_to_nchw",
                &[INPUT],
                &[&vgg.first_conv_input],
                vec![attr_ints("perm", &[0, 3, 1, 2])],
            );
            graph.node.insert(0, to_nchw);
        }
    }
    graph.node.push(node(
        "Transpose",
        &format!("{output_name}_to_nhwc"),
        &[pool_output],
        &[output_name],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
    ));
    let n = Dim::named("N");
    graph.input = vec![value_info(INPUT, dtype::FLOAT, &[n.clone(), Dim::named("H"), Dim::named("W"), Dim::Fixed(3)])];
    let channels = last_conv_channels(source, &graph)?;
    graph.output =
        vec![value_info(output_name, dtype::FLOAT, &[n, Dim::named("h"), Dim::named("w"), Dim::Fixed(channels)])];
    graph.name = Some(output_name.into());
    let mut out = model.clone();
    out.graph = Some(graph);
    out.producer_name = Some("smalldata prepare-model".into());
    out.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    // Keep the metadata honest: this is no longer the source's full model.
    out.metadata_props.clear();
    Ok(out)
}

fn last_conv_channels(source: &GraphProto, cut: &GraphProto) -> Result<i64> {
    let conv =
        cut.node.iter().rev().find(|n| n.op_type.as_deref() == Some("Conv")).context("no convolution in the cut")?;
    let w = sd_onnx::constant(source, &conv.input[1]).context("convolution weights are not constant")?;
    Ok(w.dims[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_vgg;
    use sd_data::layout::model::MODEL_JSON;

    fn write_source(dir: &Path, layout: Layout) -> PathBuf {
        let p = dir.join("tiny.onnx");
        sd_onnx::save(&tiny_vgg(&[2, 3, 4, 5, 6], layout, 7), &p).unwrap();
        p
    }

    #[test]
    fn writes_conv_base_frozen_part_block5_and_info() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_source(dir.path(), Layout::Nhwc);
        let out = dir.path().join("model");
        let info = prepare(&src, &out, &FingerprintCheck::Skip, None).unwrap();
        assert_eq!(info.channels, [2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]);
        for f in [CONV_BASE, FROZEN_BASE, MODEL_JSON, "block5/block5_conv3_kernel.npy", "block5/block5_conv1_bias.npy"]
        {
            assert!(out.join(f).is_file(), "{f}");
        }
        let k = sd_data::npy::read::<f32>(out.join("block5/block5_conv2_kernel.npy")).unwrap();
        assert_eq!(k.shape(), [6, 6, 3, 3]);

        assert_eq!(ModelDir::new(&out).info().unwrap(), info, "model.json reads back");
        let base = sd_onnx::load(out.join(CONV_BASE)).unwrap();
        let g = base.graph.unwrap();
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name.as_deref(), Some(INPUT));
        assert_eq!(g.output[0].name.as_deref(), Some(FEATURES));
        assert!(g.node.iter().all(|n| !matches!(n.op_type.as_deref(), Some("Gemm" | "Softmax" | "Flatten"))));
        assert_eq!(g.node.iter().filter(|n| n.op_type.as_deref() == Some("Conv")).count(), 13);
        let frozen = sd_onnx::load(out.join(FROZEN_BASE)).unwrap().graph.unwrap();
        assert_eq!(frozen.node.iter().filter(|n| n.op_type.as_deref() == Some("Conv")).count(), 10);
        assert_eq!(frozen.output[0].name.as_deref(), Some(BLOCK4_POOL));
    }

    #[test]
    fn nchw_sources_get_an_nhwc_input() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_source(dir.path(), Layout::Nchw);
        let out = dir.path().join("model");
        prepare(&src, &out, &FingerprintCheck::Skip, None).unwrap();
        let g = sd_onnx::load(out.join(CONV_BASE)).unwrap().graph.unwrap();
        assert_eq!(g.node[0].op_type.as_deref(), Some("Transpose"));
        assert_eq!(g.node[0].input, [INPUT]);
    }

    #[test]
    fn other_weights_fail_the_imagenet_check_naming_layers_and_leave_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let src = write_source(dir.path(), Layout::Nhwc);
        let out = dir.path().join("model");
        let err = format!("{:#}", prepare(&src, &out, &FingerprintCheck::KerasImagenet, None).unwrap_err());
        assert!(err.contains("13 of 13 layers") && err.contains("block1_conv1: kernel shape"), "{err}");
        assert!(err.contains("--skip-fingerprint"), "{err}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the source remains");
    }
}
