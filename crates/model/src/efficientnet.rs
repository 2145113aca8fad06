//! EfficientNet-Lite as ONNX, built from its PyTorch state dict (read by `sd-torch`).
//!
//! The architecture is TensorFlow's `efficientnet_lite_builder` as ported by
//! `efficientnet-lite-pytorch` 0.1.0: a 3x3 stride-2 stem to 32 channels; MBConv blocks (a 1x1
//! expansion conv except in block 0, a depthwise 3x3 or 5x5 conv, a 1x1 projection conv; no
//! squeeze-excite; a residual connection when the stride is 1 and the width unchanged); a 1x1
//! head conv to 1280 channels. Every conv is followed by batch norm (eps 1e-3), folded here into
//! the conv's kernel and bias; every one but the projections by ReLU6 (`Clip(0, 6)`).
//! Convolutions pad like TensorFlow's 'SAME' (`auto_pad = SAME_UPPER`: a stride-2 layer pads
//! one more at the bottom and right), which also works for any input size.
//!
//! The stages per variant (stride of a stage's first block, repeats): Lite2 has more repeats
//! (depth 1.2, except the first and last stage) and wider blocks (width 1.1), but the stem and
//! head stay fixed ("fix_head_stem"); block widths and kernel sizes come from the weights.

use anyhow::{Context, Result, bail};
use ndarray::{ArrayD, IxDyn};
use sd_data::layout::model::{Backbone, FEATURES, INPUT};
use sd_onnx::{
    Dim, GraphProto, ModelProto, attr_int, attr_ints, attr_string, dtype, node, tensor_from_array, value_info,
};
use sd_torch::StateDict;

use crate::fingerprint::LayerFingerprint;

/// Batch norm epsilon of the TensorFlow original.
pub const BN_EPS: f64 = 1e-3;
/// Channels of the head conv: the features' width.
pub const HEAD_CHANNELS: usize = 1280;
/// The ImageNet head graph's input and output (see [`EfficientNet::imagenet_head`]).
pub const IMAGENET_PROBABILITIES: &str = "probabilities";
/// The frozen part's output: the input of the last MBConv block, NHWC.
pub const TAIL_INPUT: &str = "tail_input";
const OPSET: i64 = 13;

/// The repeats of each of the seven stages.
fn repeats(backbone: Backbone) -> Option<[usize; 7]> {
    match backbone {
        Backbone::EfficientnetLite0 => Some([1, 2, 2, 3, 3, 4, 1]),
        Backbone::EfficientnetLite2 => Some([1, 3, 3, 4, 4, 5, 1]),
        Backbone::Vgg16 => None,
    }
}

/// The stride of each stage's first block.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// One convolution with its batch norm folded in.
#[derive(Debug, Clone)]
pub struct Conv {
    pub name: String,
    /// `[Cout, Cin / groups, k, k]`.
    pub kernel: ArrayD<f32>,
    pub bias: ArrayD<f32>,
    pub stride: usize,
    pub groups: usize,
    pub relu6: bool,
}

#[derive(Debug, Clone)]
pub struct MbConv {
    pub expand: Option<Conv>,
    pub depthwise: Conv,
    pub project: Conv,
    /// Adds the block's input to its output.
    pub residual: bool,
}

#[derive(Debug, Clone)]
pub struct EfficientNet {
    pub backbone: Backbone,
    pub stem: Conv,
    pub blocks: Vec<MbConv>,
    pub head: Conv,
    /// The ImageNet classifier: `[1000, 1280]` and `[1000]`.
    pub fc: (ArrayD<f32>, ArrayD<f32>),
}

fn array(dict: &StateDict, name: &str) -> Result<ArrayD<f32>> {
    let t = dict.float(name)?;
    Ok(ArrayD::from_shape_vec(IxDyn(&t.shape), t.data.clone()).context("tensor shape and data disagree")?)
}

/// The conv `conv` of the state dict with batch norm `bn` folded in.
fn folded(dict: &StateDict, name: &str, conv: &str, bn: &str, stride: usize, relu6: bool) -> Result<Conv> {
    let w = array(dict, &format!("{conv}.weight"))?;
    if w.ndim() != 4 {
        bail!("{conv}.weight has shape {:?}, not a 2-d convolution's [Cout, Cin, k, k]", w.shape());
    }
    let get = |k: &str| -> Result<Vec<f32>> {
        let v = dict.float(&format!("{bn}.{k}"))?;
        if v.data.len() != w.shape()[0] {
            bail!("{bn}.{k} has {} values for {} channels of {conv}", v.data.len(), w.shape()[0]);
        }
        Ok(v.data.clone())
    };
    let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
    let factor: Vec<f64> = gamma.iter().zip(&var).map(|(&g, &v)| g as f64 / (v as f64 + BN_EPS).sqrt()).collect();
    let mut kernel = w;
    for (o, mut k) in kernel.outer_iter_mut().enumerate() {
        k.mapv_inplace(|x| (x as f64 * factor[o]) as f32);
    }
    let bias: Vec<f32> = (0..factor.len()).map(|o| (beta[o] as f64 - mean[o] as f64 * factor[o]) as f32).collect();
    let cout = kernel.shape()[0];
    Ok(Conv {
        name: name.into(),
        groups: 1,
        bias: ArrayD::from_shape_vec(IxDyn(&[cout]), bias).expect("one per channel"),
        kernel,
        stride,
        relu6,
    })
}

impl EfficientNet {
    /// Reads the layers of `backbone` (an EfficientNet-Lite) from its state dict.
    pub fn from_state_dict(dict: &StateDict, backbone: Backbone) -> Result<EfficientNet> {
        let repeats = repeats(backbone).with_context(|| format!("{backbone} is not an EfficientNet-Lite"))?;
        let found =
            (0..).take_while(|i| dict.floats.contains_key(&format!("_blocks.{i}._depthwise_conv.weight"))).count();
        let want: usize = repeats.iter().sum();
        if found != want {
            bail!(
                "the weights have {found} MBConv blocks, {backbone} has {want}: pass the --backbone these weights are for \
                 (efficientnet-lite0: 16, efficientnet-lite2: 21)"
            );
        }
        let stem = folded(dict, "stem", "_conv_stem", "_bn0", 2, true)?;
        let mut blocks = Vec::with_capacity(want);
        let mut channels = stem.kernel.shape()[0];
        for (stage, &n) in repeats.iter().enumerate() {
            for r in 0..n {
                let i = blocks.len();
                let p = format!("_blocks.{i}");
                let name = |part: &str| format!("blocks.{i}.{part}");
                let stride = if r == 0 { STAGE_STRIDES[stage] } else { 1 };
                let expand = if dict.floats.contains_key(&format!("{p}._expand_conv.weight")) {
                    Some(folded(dict, &name("expand"), &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, true)?)
                } else {
                    None
                };
                let mut depthwise = folded(
                    dict,
                    &name("depthwise"),
                    &format!("{p}._depthwise_conv"),
                    &format!("{p}._bn1"),
                    stride,
                    true,
                )?;
                if depthwise.kernel.shape()[1] != 1 {
                    bail!(
                        "{p}._depthwise_conv.weight has shape {:?}, not a depthwise [C, 1, k, k]",
                        depthwise.kernel.shape()
                    );
                }
                depthwise.groups = depthwise.kernel.shape()[0];
                let project =
                    folded(dict, &name("project"), &format!("{p}._project_conv"), &format!("{p}._bn2"), 1, false)?;
                let inner = expand.as_ref().map_or(channels, |e| e.kernel.shape()[0]);
                if expand.as_ref().is_some_and(|e| e.kernel.shape()[1] != channels)
                    || depthwise.kernel.shape()[0] != inner
                    || depthwise.groups != inner
                    || project.kernel.shape()[1] != inner
                {
                    bail!("block {i}: its convolutions' channels do not chain ({channels} in, {inner} inside)");
                }
                let out = project.kernel.shape()[0];
                blocks.push(MbConv { expand, depthwise, project, residual: stride == 1 && out == channels });
                channels = out;
            }
        }
        let head = folded(dict, "head", "_conv_head", "_bn1", 1, true)?;
        if head.kernel.shape()[1] != channels || head.kernel.shape()[0] != HEAD_CHANNELS {
            bail!("the head conv maps {:?}, expected {channels} -> {HEAD_CHANNELS}", head.kernel.shape());
        }
        let fc = (array(dict, "_fc.weight")?, array(dict, "_fc.bias")?);
        if fc.0.shape() != [1000, HEAD_CHANNELS] || fc.1.shape() != [1000] {
            bail!("_fc has shape {:?}, expected the 1000 ImageNet classes over {HEAD_CHANNELS}", fc.0.shape());
        }
        Ok(EfficientNet { backbone, stem, blocks, head, fc })
    }

    /// Every convolution, in order.
    pub fn convs(&self) -> Vec<&Conv> {
        let mut v = vec![&self.stem];
        for b in &self.blocks {
            v.extend(b.expand.iter());
            v.push(&b.depthwise);
            v.push(&b.project);
        }
        v.push(&self.head);
        v
    }

    /// The fingerprint of every layer (each conv, folded, and the ImageNet `fc`).
    pub fn fingerprints(&self) -> Vec<LayerFingerprint> {
        let mut v: Vec<_> = self.convs().iter().map(|c| LayerFingerprint::of(&c.name, &c.kernel, &c.bias)).collect();
        v.push(LayerFingerprint::of("fc", &self.fc.0, &self.fc.1));
        v
    }

    /// The conv base: [`INPUT`] NHWC float `[N, H, W, 3]` (preprocessed) to [`FEATURES`] NHWC
    /// `[N, h, w, 1280]` (h = ceil(H / 32)).
    pub fn conv_base(&self) -> ModelProto {
        self.graph(self.blocks.len(), true, FEATURES, "efficientnet conv base")
    }

    /// What stays frozen when fine-tuning the tail (the last MBConv block and the head conv):
    /// [`INPUT`] to [`TAIL_INPUT`], NHWC.
    pub fn frozen_part(&self) -> ModelProto {
        self.graph(self.blocks.len() - 1, false, TAIL_INPUT, "efficientnet frozen part")
    }

    /// The blocks before the frozen part's cut.
    pub fn frozen_blocks(&self) -> usize {
        self.blocks.len() - 1
    }

    fn graph(&self, blocks: usize, head: bool, output: &str, name: &str) -> ModelProto {
        let mut g = Graph::default();
        g.nodes.push(node(
            "Transpose",
            "input_to_nchw",
            &[INPUT],
            &["input_nchw"],
            vec![attr_ints("perm", &[0, 3, 1, 2])],
        ));
        let mut x = g.conv(&self.stem, "input_nchw");
        for b in &self.blocks[..blocks] {
            let input = x.clone();
            if let Some(e) = &b.expand {
                x = g.conv(e, &x);
            }
            x = g.conv(&b.depthwise, &x);
            x = g.conv(&b.project, &x);
            if b.residual {
                let sum = format!("{}/residual", b.project.name);
                g.nodes.push(node("Add", &sum, &[&x, &input], &[&sum], vec![]));
                x = sum;
            }
        }
        let channels = if head {
            x = g.conv(&self.head, &x);
            HEAD_CHANNELS
        } else {
            self.blocks[blocks - 1].project.kernel.shape()[0]
        };
        g.nodes.push(node(
            "Transpose",
            &format!("{output}_to_nhwc"),
            &[&x],
            &[output],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        ));
        let n = Dim::named("N");
        let graph = GraphProto {
            name: Some(name.into()),
            node: g.nodes,
            initializer: g.initializers,
            input: vec![value_info(INPUT, dtype::FLOAT, &[n.clone(), Dim::named("H"), Dim::named("W"), Dim::Fixed(3)])],
            output: vec![value_info(
                output,
                dtype::FLOAT,
                &[n, Dim::named("h"), Dim::named("w"), Dim::Fixed(channels as i64)],
            )],
            ..Default::default()
        };
        sd_onnx::model(graph, OPSET, "smalldata prepare-model")
    }

    /// ImageNet's classifier over the conv base's features: [`FEATURES`] `[N, h, w, 1280]` to
    /// [`IMAGENET_PROBABILITIES`] `[N, 1000]` (average pooling, the `fc` layer, softmax). For
    /// zero-shot checks of the weights, padding and preprocessing.
    pub fn imagenet_head(&self) -> ModelProto {
        let nodes = vec![
            node(
                "ReduceMean",
                "pool",
                &[FEATURES],
                &["pooled"],
                vec![attr_ints("axes", &[1, 2]), attr_int("keepdims", 0)],
            ),
            node("Gemm", "fc", &["pooled", "fc.weight", "fc.bias"], &["logits"], vec![attr_int("transB", 1)]),
            node("Softmax", "softmax", &["logits"], &[IMAGENET_PROBABILITIES], vec![attr_int("axis", 1)]),
        ];
        let n = Dim::named("N");
        let graph = GraphProto {
            name: Some("imagenet head".into()),
            node: nodes,
            initializer: vec![tensor_from_array("fc.weight", &self.fc.0), tensor_from_array("fc.bias", &self.fc.1)],
            input: vec![value_info(
                FEATURES,
                dtype::FLOAT,
                &[n.clone(), Dim::named("h"), Dim::named("w"), Dim::Fixed(HEAD_CHANNELS as i64)],
            )],
            output: vec![value_info(IMAGENET_PROBABILITIES, dtype::FLOAT, &[n, Dim::Fixed(1000)])],
            ..Default::default()
        };
        sd_onnx::model(graph, OPSET, "smalldata prepare-model")
    }
}

#[derive(Default)]
struct Graph {
    nodes: Vec<sd_onnx::NodeProto>,
    initializers: Vec<sd_onnx::TensorProto>,
    clip_bounds: bool,
}

impl Graph {
    /// Adds `conv` (and its ReLU6) reading `x`; returns the output's name.
    fn conv(&mut self, conv: &Conv, x: &str) -> String {
        let (w, b) = (format!("{}.weight", conv.name), format!("{}.bias", conv.name));
        self.initializers.push(tensor_from_array(&w, &conv.kernel));
        self.initializers.push(tensor_from_array(&b, &conv.bias));
        let k = conv.kernel.shape()[2] as i64;
        let mut attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[conv.stride as i64, conv.stride as i64]),
            attr_int("group", conv.groups as i64),
        ];
        if k > 1 || conv.stride > 1 {
            attrs.push(attr_string("auto_pad", "SAME_UPPER"));
        }
        self.nodes.push(node("Conv", &conv.name, &[x, &w, &b], &[&conv.name], attrs));
        if !conv.relu6 {
            return conv.name.clone();
        }
        if !self.clip_bounds {
            self.clip_bounds = true;
            self.initializers.push(tensor_from_array("relu6.min", &ArrayD::from_elem(IxDyn(&[]), 0.0)));
            self.initializers.push(tensor_from_array("relu6.max", &ArrayD::from_elem(IxDyn(&[]), 6.0)));
        }
        let y = format!("{}/relu6", conv.name);
        self.nodes.push(node("Clip", &y, &[&conv.name, "relu6.min", "relu6.max"], &[&y], vec![]));
        y
    }
}
