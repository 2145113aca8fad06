//! `classifier.onnx`: the whole fine-tuned model in one graph, runnable by any ONNX Runtime
//! (Python's included). Input: by default `image`, uint8 RGB NHWC `[N, H, W, 3]` at the
//! training size, what Pillow, numpy or OpenCV give after a resize, with the preprocessing
//! (RGB -> BGR and the ImageNet means, or / 255) inside the graph, so that a caller cannot get
//! it wrong; or (`ClassifierInput::Float`) `input`, float32, already preprocessed. Output:
//! `probability` float32 `[N, 1]` (of the class labelled 1) for two classes, or
//! `probabilities` `[N, classes]` (softmax) for more. It is
//! `frozen_base.onnx` unchanged, then block 5 (the forward graph of [`crate::graphs`] with the
//! trained weights as initializers), then the head (`sd-head`'s export). Its metadata records
//! the size, resize filter, preprocessing and classes for `predict`. With an int8 frozen part,
//! block 5 is quantised the same way ([`Int8Calibration`]), so that the whole conv stack runs on
//! int8 kernels.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::{Array4, Axis};
use sd_data::Preprocess;
use sd_data::layout::classifier::ClassifierMeta;
use sd_data::preprocess::CAFFE_MEAN_BGR;
use sd_onnx::{
    Dim, GraphProto, ModelProto, NodeProto, TensorProto, attr_int, dtype, node, tensor_from_array, tensor_from_i64,
    value_info,
};
use sd_train::head::Head;
use sd_train::head::export::output_name;

use crate::block5::Block5Weights;
use crate::conv_layout::ConvLayout;
use crate::graphs::{self, Block5Shape};

pub const CLASSIFIER: &str = sd_data::layout::classifier::FILE;
/// The float input (preprocessed images).
pub const INPUT: &str = "input";
/// The uint8 input (RGB images as decoded and resized).
pub const IMAGE: &str = "image";

/// What the exported classifier takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierInput {
    /// uint8 RGB images; preprocessing inside the graph.
    #[default]
    Uint8,
    /// float32 images, preprocessed by the caller exactly as in training.
    Float,
}

/// The preprocessing as graph nodes: uint8 RGB `IMAGE` -> float32 `output`, as
/// `sd_data::Preprocess` does it on the CPU.
fn preprocessing_nodes(preprocess: Preprocess, output: &str) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let cast =
        node("Cast", "preprocess/cast", &[IMAGE], &["preprocess/float"], vec![attr_int("to", dtype::FLOAT as i64)]);
    match preprocess {
        Preprocess::Caffe => {
            let bgr = tensor_from_i64("preprocess/bgr", &[3], &[2, 1, 0]);
            let mean = tensor_from_array("preprocess/mean", &ndarray::arr1(&CAFFE_MEAN_BGR).into_dyn());
            let nodes = vec![
                cast,
                node(
                    "Gather",
                    "preprocess/to_bgr",
                    &["preprocess/float", "preprocess/bgr"],
                    &["preprocess/bgr_out"],
                    vec![attr_int("axis", 3)],
                ),
                node("Sub", "preprocess/minus_mean", &["preprocess/bgr_out", "preprocess/mean"], &[output], vec![]),
            ];
            (nodes, vec![bgr, mean])
        }
        Preprocess::Rescale => {
            // A division, as on the CPU: multiplying by 1/255 differs in the last bit.
            let scale = tensor_from_array("preprocess/255", &ndarray::arr1(&[255.0f32]).into_dyn());
            let nodes = vec![
                cast,
                node("Div", "preprocess/rescale", &["preprocess/float", "preprocess/255"], &[output], vec![]),
            ];
            (nodes, vec![scale])
        }
        Preprocess::Tf => {
            // (x - 127.5) / 127.5, as on the CPU.
            let half = tensor_from_array("preprocess/127.5", &ndarray::arr1(&[127.5f32]).into_dyn());
            let nodes = vec![
                cast,
                node(
                    "Sub",
                    "preprocess/center",
                    &["preprocess/float", "preprocess/127.5"],
                    &["preprocess/centered"],
                    vec![],
                ),
                node("Div", "preprocess/scale", &["preprocess/centered", "preprocess/127.5"], &[output], vec![]),
            ];
            (nodes, vec![half])
        }
    }
}

/// Renames every tensor and node of `graph` with `prefix`, except the names in `keep` (the
/// tensors it shares with the graphs it is joined to), so that merged graphs cannot collide.
fn prefix_names(graph: &mut GraphProto, prefix: &str, keep: &[&str]) {
    let rename = |name: &mut String| {
        if !name.is_empty() && !keep.contains(&name.as_str()) {
            *name = format!("{prefix}{name}");
        }
    };
    for n in &mut graph.node {
        n.input.iter_mut().for_each(rename);
        n.output.iter_mut().for_each(rename);
        n.name.as_mut().map(rename);
    }
    for t in &mut graph.initializer {
        t.name.as_mut().map(rename);
    }
    for v in graph.input.iter_mut().chain(&mut graph.output) {
        v.name.as_mut().map(rename);
    }
}

/// Replaces the tensor name `from` with `to` in every node input.
fn rewire(graph: &mut GraphProto, from: &str, to: &str) {
    for n in &mut graph.node {
        for i in &mut n.input {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// `block4_pool` maps (NHWC) of a few training images through the int8 frozen part, and the
/// session settings to run block 5 on them: what quantising block 5 calibrates on.
pub struct Int8Calibration {
    pub maps: Array4<f32>,
    pub session: sd_runtime::SessionConfig,
}

/// `block5` (weights bound) statically quantised as `prepare-model --quantize int8` quantises the
/// frozen part (`sd_onnx::quantize`), the activation ranges observed (min-max) on the maps.
fn quantize_block5(block5: &ModelProto, calibration: &Int8Calibration) -> Result<ModelProto> {
    let batches = calibration.maps.axis_chunks_iter(Axis(0), 8).map(|maps| anyhow::Ok(maps.to_owned().into_dyn()));
    let ranges = sd_onnx::quantize::observe_ranges(block5, "block 5", graphs::INPUT, &calibration.session, batches)?;
    Ok(sd_onnx::quantize::quantize(block5, &ranges)?)
}

/// Builds the classifier from the frozen part, block 5's weights (quantised with `int8`) and
/// the head.
pub fn classifier(
    frozen_base: &Path,
    weights: &Block5Weights,
    shape: &Block5Shape,
    head: &Head<f32>,
    meta: &ClassifierMeta,
    input: ClassifierInput,
    int8: Option<&Int8Calibration>,
) -> Result<ModelProto> {
    let mut model = sd_onnx::load(frozen_base)?;
    let graph = model.graph.as_mut().context("frozen_base.onnx has no graph")?;
    let (Some(frozen_in), Some(frozen_out)) = (graph.input.first(), graph.output.first()) else {
        bail!("{} must have one input and one output", frozen_base.display());
    };
    let (frozen_in, frozen_out) =
        (frozen_in.name.clone().unwrap_or_default(), frozen_out.name.clone().unwrap_or_default());

    let mut block5 = graphs::forward(shape, false, ConvLayout::Onnx);
    graphs::bind(block5.graph.as_mut().expect("built with a graph"), weights.initializers());
    if let Some(calibration) = int8 {
        block5 = quantize_block5(&block5, calibration).context("quantising block 5 for the int8 classifier")?;
    }
    let mut block5 = block5.graph.expect("built with a graph");
    prefix_names(&mut block5, "finetune/block5/", &[graphs::INPUT, graphs::OUTPUT]);
    rewire(&mut block5, graphs::INPUT, &frozen_out);

    let mut head_graph = sd_train::head::export::onnx(head, &shape.output()).graph.expect("built with a graph");
    // The head's probabilities are the classifier's output, under the same name.
    let output = output_name(head.outputs());
    prefix_names(&mut head_graph, "finetune/head/", &[sd_train::head::export::ONNX_INPUT, output]);
    rewire(&mut head_graph, sd_train::head::export::ONNX_INPUT, graphs::OUTPUT);

    let existing: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(graph.initializer.iter().filter_map(|t| t.name.clone()))
        .collect();
    if existing.contains(graphs::OUTPUT) || existing.contains(output) {
        bail!("{} already has a tensor named {} or {output}", frozen_base.display(), graphs::OUTPUT);
    }
    graph.node.extend(block5.node);
    graph.node.extend(head_graph.node);
    graph.initializer.extend(block5.initializer);
    graph.initializer.extend(head_graph.initializer);
    let size = meta.size.context("the classifier's metadata needs its image size")?;
    let input_dims = [Dim::named("N"), Dim::Fixed(size.height as i64), Dim::Fixed(size.width as i64), Dim::Fixed(3)];
    if frozen_in != INPUT {
        rewire(graph, &frozen_in, INPUT);
    }
    graph.input = match input {
        ClassifierInput::Float => vec![value_info(INPUT, dtype::FLOAT, &input_dims)],
        ClassifierInput::Uint8 => {
            let preprocess = meta.preprocess.context("the classifier's metadata needs its preprocessing")?;
            let (nodes, constants) = preprocessing_nodes(preprocess, INPUT);
            graph.node.splice(0..0, nodes);
            graph.initializer.extend(constants);
            vec![value_info(IMAGE, dtype::UINT8, &input_dims)]
        }
    };
    let dims = [Dim::named("N"), Dim::Fixed(head.outputs() as i64)];
    graph.output = vec![value_info(output, dtype::FLOAT, &dims)];
    graph.value_info.clear();
    graph.name = Some("classifier".into());
    model.producer_name = Some("smalldata finetune".into());
    model.producer_version = Some(env!("CARGO_PKG_VERSION").into());
    sd_onnx::set_metadata(&mut model, meta.props());
    // The block 5 and head graphs need opset 13 semantics at most for the operators they use
    // (Conv, Relu, MaxPool, Transpose, Flatten, Gemm, Sigmoid are unchanged since opset 11).
    if sd_onnx::default_opset(&model).is_none_or(|v| v < 11) {
        bail!("{} uses an ONNX opset older than 11; re-export it with opset 11 or newer", frozen_base.display());
    }
    Ok(model)
}
