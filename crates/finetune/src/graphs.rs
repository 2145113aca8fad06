//! Block 5's forward and backward passes as ONNX graphs, built at start-up and run by ONNX
//! Runtime on the chosen device. The weights are graph *inputs*, so one session serves every
//! step while the weights change.
//!
//! Layout: every tensor between the graphs is NHWC: the input `block4_pool` `[N, H, W, C0]` (what
//! `frozen_base.onnx` gives), the activations the backward pass reads, and the output
//! `block5_pool` `[N, H/2, W/2, C3]` (so that the head's Flatten sees Keras' order). The
//! convolutions run in their [`ConvLayout`] (NCHW or NCHWc blocks), entered and left once per
//! convolution chain. Kernel inputs are OIHW `[Cout, Cin, 3, 3]` (arranged for the layout);
//! kernel gradients are HWOI.
//!
//! The backward pass, derived by hand (`z = conv(x)`, `a = relu(z)`, `p = maxpool(a3)`):
//! * max pool: the gradient of each 2x2 window goes to the position(s) equal to the window's max
//!   (an equality mask against the window's max, recomputed with ReduceMax and broadcast back
//!   over the window, multiplied in; rows/columns the pool floors away get zero). Ties are
//!   measure-zero except at 0, and a 0 max means every input was 0 after ReLU, where the ReLU
//!   mask zeroes the gradient anyway.
//! * ReLU: `dz = da · [a > 0]`.
//! * bias: `db = Σ_{n,h,w} dz`.
//! * kernel: `dW[kh, kw, o, i] = Σ_{n,h,w} dz[n, h, w, o] · x_pad[n, h + kh, w + kw, i]`: per
//!   tap one GEMM `dz' · x_t` (`[Cout, N·H·W]` by `[N·H·W, Cin]`), where `x_t` is a shifted slice
//!   of the padded NHWC input (runs of W·Cin floats: near-memcpy speed) and `dz'` one transpose;
//!   the nine `[Cout, Cin]` products are stacked in HWOI order (an OIHW gradient interleaves
//!   them, a strided copy that took 5% of the backward pass). Against one GEMM on an im2col
//!   this copies the input 9 times instead of 18 (no im2col concat).
//!   Measured on CPU (block 5 at 150x150, `benches/finetune/profile.py`), ahead of: the same on
//!   channel-major slices with a transB GEMM (MLAS' fastest orientation, but slices with runs of
//!   W floats cost more than the GEMM gained), per-tap GEMMs that skip the padding (14% fewer
//!   FLOPs, twice the slices), and the im2col.
//! * input: `dx = conv(dz, W*)` with the forward pads, where `W*` is the adjoint kernel (input and
//!   output channels swapped, rotated by 180 degrees; [`adjoint_name`], made by the caller): the
//!   same convolution as `ConvTranspose(dz, W)`, run by the fast convolution kernels. Not
//!   computed for the first convolution: block 4 is frozen.
//!
//! The convolutions follow a [`ConvLayout`]: ONNX `Conv` (every execution provider; the
//! operators used have CPU and CUDA kernels: Transpose, Conv, Relu, MaxPool, Slice, Pad, Reshape,
//! Unsqueeze, Concat, Equal, Greater, Cast, Mul, Gemm, ReduceSum, ReduceMax), or ONNX Runtime's CPU
//! NCHWc operators (ReorderInput/ReorderOutput from and to NHWC, Conv, MaxPool).

use ndarray::ArrayD;
use sd_onnx::{
    AttributeProto, Dim, GraphProto, ModelProto, TensorProto, attr_int, attr_ints, attr_string, dtype, node, value_info,
};

use crate::conv_layout::{ConvLayout, NCHWC_DOMAIN};

/// The opset of the graphs built here.
pub const OPSET: i64 = 13;
/// Input: block 4's pooled output, NHWC.
pub use sd_data::layout::model::BLOCK4_POOL as INPUT;
/// Output: block 5's pooled output, NHWC (the head's input).
pub const OUTPUT: &str = "block5_pool";
/// Backward input: the loss gradient with respect to [`OUTPUT`].
pub const OUTPUT_GRAD: &str = "block5_pool_grad";
/// Keras' names of block 5's layers.
pub use sd_data::layout::model::BLOCK5_LAYERS as LAYERS;

/// Name of layer `i`'s kernel (`bias = false`) or bias, as a graph input or initializer.
pub fn weight_name(i: usize, bias: bool) -> String {
    format!("{}/{}", LAYERS[i], if bias { "bias" } else { "kernel" })
}

/// Name of layer `i`'s adjoint kernel (a backward input): `W*[c, o, kh, kw] = W[o, c, 2 - kh,
/// 2 - kw]`, in the graph's [`ConvLayout`].
pub fn adjoint_name(i: usize) -> String {
    format!("{}/kernel_adjoint", LAYERS[i])
}

/// Name of the gradient of [`weight_name`].
pub fn grad_name(i: usize, bias: bool) -> String {
    format!("{}_grad", weight_name(i, bias))
}

/// Name of layer `i`'s activation (ReLU output, NHWC), an output of the training forward pass.
pub fn activation_name(i: usize) -> String {
    format!("{}/relu", LAYERS[i])
}

/// The sizes block 5 is built for. The batch size stays dynamic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block5Shape {
    /// Channels of the input and of the three convolutions' outputs (`[512; 4]` for VGG16).
    pub channels: [usize; 4],
    /// Spatial size of the input (`block4_pool`): 9 x 9 for 150 x 150 images.
    pub height: usize,
    pub width: usize,
}

impl Block5Shape {
    /// Per-sample shape of the output, NHWC: `[H/2, W/2, C3]` (floor, as Keras' valid pooling).
    pub fn output(&self) -> [usize; 3] {
        [self.height / 2, self.width / 2, self.channels[3]]
    }

    /// Kernel shape of layer `i`, OIHW.
    pub fn kernel(&self, i: usize) -> [usize; 4] {
        [self.channels[i + 1], self.channels[i], 3, 3]
    }
}

/// A graph under construction: nodes with generated names, plus constants.
struct Builder {
    layout: ConvLayout,
    nodes: Vec<sd_onnx::NodeProto>,
    constants: Vec<TensorProto>,
    count: usize,
}

impl Builder {
    fn new(layout: ConvLayout) -> Builder {
        Builder { layout, nodes: Vec::new(), constants: Vec::new(), count: 0 }
    }

    /// Adds a node; returns its (first) output's name, `out` or a generated one.
    fn op(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>, out: Option<&str>) -> String {
        self.count += 1;
        let name = format!("{}_{}", op.to_lowercase(), self.count);
        let output = out.map_or_else(|| format!("{name}:0"), str::to_string);
        self.nodes.push(node(op, &name, inputs, &[&output], attributes));
        output
    }

    fn ints(&mut self, values: &[i64]) -> String {
        self.count += 1;
        let name = format!("const_{}", self.count);
        self.constants.push(sd_onnx::tensor_from_i64(&name, &[values.len() as i64], values));
        name
    }

    fn zero(&mut self) -> String {
        self.count += 1;
        let name = format!("zero_{}", self.count);
        self.constants.push(sd_onnx::tensor_from_array(&name, &ArrayD::zeros(vec![])));
        name
    }

    fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)], None)
    }

    fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.ints(shape);
        self.op("Reshape", &[x, &s], vec![], None)
    }

    /// `x[..., starts..ends, ...]` on `axes`.
    fn slice(&mut self, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let (s, e, a) = (self.ints(starts), self.ints(ends), self.ints(axes));
        self.op("Slice", &[x, &s, &e, &a], vec![], None)
    }

    /// Zero padding, ONNX order (all begins, then all ends).
    fn pad(&mut self, x: &str, pads: &[i64]) -> String {
        let p = self.ints(pads);
        self.op("Pad", &[x, &p], vec![], None)
    }

    /// NHWC `x` in the layout the convolutions run in: NCHW, or NCHWc blocks.
    fn enter(&mut self, x: &str) -> String {
        match self.layout {
            ConvLayout::Onnx => self.transpose(x, &[0, 3, 1, 2]),
            ConvLayout::Nchwc { .. } => self.nchwc("ReorderInput", &[x], vec![attr_int("channels_last", 1)], None),
        }
    }

    /// [`Builder::enter`]'s inverse for a tensor of `channels`: NHWC `out` or a generated name.
    fn leave(&mut self, x: &str, channels: usize, out: Option<&str>) -> String {
        match self.layout {
            ConvLayout::Onnx => self.op("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 3, 1])], out),
            ConvLayout::Nchwc { .. } => {
                let attributes = vec![attr_int("channels", channels as i64), attr_int("channels_last", 1)];
                self.nchwc("ReorderOutput", &[x], attributes, out)
            }
        }
    }

    /// A 3x3 "same" convolution of `x` (in the layout, see [`Builder::enter`]) with kernel `w`,
    /// optional bias and ReLU; output in the layout.
    fn conv(&mut self, x: &str, w: &str, b: Option<&str>, relu: bool) -> String {
        let inputs: Vec<&str> = [x, w].into_iter().chain(b).collect();
        match self.layout {
            ConvLayout::Onnx if relu => {
                let z = self.op("Conv", &inputs, conv_attributes(), None);
                self.op("Relu", &[&z], vec![], None)
            }
            ConvLayout::Onnx => self.op("Conv", &inputs, conv_attributes(), None),
            ConvLayout::Nchwc { .. } => {
                let mut attributes = conv_attributes();
                attributes.push(attr_int("group", 1));
                if relu {
                    attributes.push(attr_string("activation", "Relu"));
                }
                self.nchwc("Conv", &inputs, attributes, None)
            }
        }
    }

    /// 2x2/2 max pool of `x` in the layout.
    fn max_pool(&mut self, x: &str) -> String {
        match self.layout {
            ConvLayout::Onnx => self.op("MaxPool", &[x], pool_attributes(), None),
            ConvLayout::Nchwc { .. } => self.nchwc("MaxPool", &[x], pool_attributes(), None),
        }
    }

    /// A node of ONNX Runtime's NCHWc domain.
    fn nchwc(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>, out: Option<&str>) -> String {
        let output = self.op(op, inputs, attributes, out);
        self.nodes.last_mut().expect("just added").domain = Some(NCHWC_DOMAIN.into());
        output
    }

    /// `mask · x` for a boolean `mask`: a Cast and a Mul, several times faster in ONNX Runtime's
    /// CPU kernels than `Where(mask, x, 0)` with its broadcast scalar.
    fn masked(&mut self, mask: &str, x: &str) -> String {
        let mask = self.op("Cast", &[mask], vec![attr_int("to", dtype::FLOAT as i64)], None);
        self.op("Mul", &[&mask, x], vec![], None)
    }

    /// `dz = da · [a > 0]` (ReLU backward from its output `a`). (`da · sign(a)` is one pass fewer
    /// but ONNX Runtime's `Sign` took 3x as long as `Greater` and `Cast` together.)
    fn relu_backward(&mut self, a: &str, da: &str) -> String {
        let zero = self.zero();
        let positive = self.op("Greater", &[a, &zero], vec![], None);
        self.masked(&positive, da)
    }

    /// Kernel gradient of a 3x3 "same" convolution, HWOI with the taps flattened (`[9, Cout,
    /// Cin]`), from its NHWC input `x` and its NHWC output gradient `dz`: one GEMM per tap, the
    /// nine results stacked (whole blocks: no interleaving).
    fn kernel_grad(&mut self, x: &str, dz: &str, shape: &Block5Shape, i: usize, out: &str) -> String {
        let [cout, cin, _, _] = shape.kernel(i).map(|d| d as i64);
        let (h, w) = (shape.height as i64, shape.width as i64);
        // `[Cout, N·H·W]`, transposed in 4-d: ONNX Runtime fuses a 2-d Transpose into the Gemm as
        // `transA`, which MLAS runs 20% slower.
        let dz = self.transpose(dz, &[3, 0, 1, 2]);
        let dz = self.reshape(&dz, &[cout, -1]);
        let padded = self.pad(x, &[0, 1, 1, 0, 0, 1, 1, 0]);
        let first = self.ints(&[0]);
        let taps: Vec<String> = (0..3)
            .flat_map(|kh| (0..3).map(move |kw| (kh, kw)))
            .map(|(kh, kw)| {
                let x_tap = if (kh, kw) == (1, 1) {
                    x.to_string()
                } else {
                    self.slice(&padded, &[kh, kw], &[kh + h, kw + w], &[1, 2])
                };
                let x_tap = self.reshape(&x_tap, &[-1, cin]);
                let g = self.op("Gemm", &[&dz, &x_tap], vec![], None);
                self.op("Unsqueeze", &[&g, &first], vec![], None)
            })
            .collect();
        let refs: Vec<&str> = taps.iter().map(String::as_str).collect();
        self.op("Concat", &refs, vec![attr_int("axis", 0)], Some(out))
    }

    /// Gradient of a 2x2/2 max pool of NHWC `a` given the pooled output's NHWC gradient `dp`.
    fn maxpool_backward(&mut self, a: &str, dp: &str, shape: &Block5Shape) -> String {
        let (h, w, c) = (shape.height as i64, shape.width as i64, shape.channels[3] as i64);
        let (ph, pw) = (h / 2, w / 2);
        // The part of `a` the pool covers (it floors odd sizes).
        let covered =
            if (2 * ph, 2 * pw) == (h, w) { a.to_string() } else { self.slice(a, &[0, 0], &[2 * ph, 2 * pw], &[1, 2]) };
        let windows = self.reshape(&covered, &[-1, ph, 2, pw, 2, c]);
        let pooled = self.op("ReduceMax", &[&windows], vec![attr_ints("axes", &[2, 4]), attr_int("keepdims", 1)], None);
        let dp = self.reshape(dp, &[-1, ph, 1, pw, 1, c]);
        let is_max = self.op("Equal", &[&windows, &pooled], vec![], None);
        let routed = self.masked(&is_max, &dp);
        let da = self.reshape(&routed, &[-1, 2 * ph, 2 * pw, c]);
        if (2 * ph, 2 * pw) == (h, w) { da } else { self.pad(&da, &[0, 0, 0, 0, 0, h - 2 * ph, w - 2 * pw, 0]) }
    }

    fn graph(
        self,
        name: &str,
        inputs: Vec<sd_onnx::ValueInfoProto>,
        outputs: Vec<sd_onnx::ValueInfoProto>,
    ) -> GraphProto {
        GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.constants,
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}

fn conv_attributes() -> Vec<AttributeProto> {
    vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1]), attr_ints("strides", &[1, 1])]
}

fn pool_attributes() -> Vec<AttributeProto> {
    vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])]
}

fn float(name: &str, dims: &[usize]) -> sd_onnx::ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d as i64)).collect();
    value_info(name, dtype::FLOAT, &dims)
}

/// A float tensor with a dynamic batch dimension first.
fn batched(name: &str, dims: &[usize]) -> sd_onnx::ValueInfoProto {
    let mut all = vec![Dim::named("N")];
    all.extend(dims.iter().map(|&d| Dim::Fixed(d as i64)));
    value_info(name, dtype::FLOAT, &all)
}

fn input_info(shape: &Block5Shape) -> sd_onnx::ValueInfoProto {
    batched(INPUT, &[shape.height, shape.width, shape.channels[0]])
}

fn activation_info(shape: &Block5Shape, i: usize) -> sd_onnx::ValueInfoProto {
    batched(&activation_name(i), &[shape.height, shape.width, shape.channels[i + 1]])
}

fn weight_infos(shape: &Block5Shape) -> Vec<sd_onnx::ValueInfoProto> {
    (0..3)
        .flat_map(|i| {
            [float(&weight_name(i, false), &shape.kernel(i)), float(&weight_name(i, true), &[shape.channels[i + 1]])]
        })
        .collect()
}

/// The forward pass: inputs [`INPUT`] and the six weights (kernels in `layout`); output
/// [`OUTPUT`], plus, with `activations`, the three ReLU outputs (NHWC) that [`backward`] needs.
pub fn forward(shape: &Block5Shape, activations: bool, layout: ConvLayout) -> ModelProto {
    let mut b = Builder::new(layout);
    let mut x = b.enter(INPUT);
    for i in 0..3 {
        let (w, bias) = (weight_name(i, false), weight_name(i, true));
        x = b.conv(&x, &w, Some(&bias), true);
        if activations {
            b.leave(&x, shape.channels[i + 1], Some(&activation_name(i)));
        }
    }
    let pooled = b.max_pool(&x);
    b.leave(&pooled, shape.channels[3], Some(OUTPUT));
    let mut inputs = vec![input_info(shape)];
    inputs.extend(weight_infos(shape));
    let mut outputs = vec![batched(OUTPUT, &shape.output())];
    if activations {
        outputs.extend((0..3).map(|i| activation_info(shape, i)));
    }
    layout.model(b.graph("block5_forward", inputs, outputs))
}

/// The backward pass: inputs [`INPUT`], the three activations from [`forward`], the adjoint
/// kernels of layers 2 and 3 (in `layout`) and [`OUTPUT_GRAD`] (NHWC); outputs the six weight
/// gradients, kernel then bias for each layer (names from [`grad_name`]). A kernel's gradient is
/// `[9, Cout, Cin]`, HWOI with the taps flattened (reshaped on the host for free: a Reshape in
/// the graph copies a graph output).
pub fn backward(shape: &Block5Shape, layout: ConvLayout) -> ModelProto {
    let mut b = Builder::new(layout);
    let mut da = b.maxpool_backward(&activation_name(2), OUTPUT_GRAD, shape);
    for i in (0..3).rev() {
        let dz = b.relu_backward(&activation_name(i), &da);
        let x = if i == 0 { INPUT.to_string() } else { activation_name(i - 1) };
        b.kernel_grad(&x, &dz, shape, i, &grad_name(i, false));
        let axes = b.ints(&[0, 1, 2]);
        b.op("ReduceSum", &[&dz, &axes], vec![attr_int("keepdims", 0)], Some(&grad_name(i, true)));
        if i > 0 {
            let dz = b.enter(&dz);
            let dx = b.conv(&dz, &adjoint_name(i), None, false);
            da = b.leave(&dx, shape.channels[i], None);
        }
    }
    let mut inputs = vec![input_info(shape)];
    inputs.extend((0..3).map(|i| activation_info(shape, i)));
    inputs.extend((1..3).map(|i| {
        let [cout, cin, kh, kw] = shape.kernel(i);
        float(&adjoint_name(i), &[cin, cout, kh, kw])
    }));
    inputs.push(batched(OUTPUT_GRAD, &shape.output()));
    let outputs = (0..3)
        .flat_map(|i| {
            let [cout, cin, kh, kw] = shape.kernel(i);
            [float(&grad_name(i, false), &[kh * kw, cout, cin]), float(&grad_name(i, true), &[cout])]
        })
        .collect();
    layout.model(b.graph("block5_backward", inputs, outputs))
}

/// One 3x3 "same" convolution without bias, input `x` NHWC `[1, side, side, channels]` and
/// kernel `w` in `layout`, output `y` NHWC: what [`ConvLayout::detect`] compares layouts on.
pub fn single_conv(channels: usize, side: usize, layout: ConvLayout) -> ModelProto {
    let mut b = Builder::new(layout);
    let x = b.enter("x");
    let y = b.conv(&x, "w", None, false);
    b.leave(&y, channels, Some("y"));
    let dims = [1, side, side, channels];
    let inputs = vec![float("x", &dims), float("w", &[channels, channels, 3, 3])];
    layout.model(b.graph("single_conv", inputs, vec![float("y", &dims)]))
}

/// Turns graph inputs into initializers (e.g. the trained weights, for the exported classifier).
pub fn bind(graph: &mut GraphProto, tensors: Vec<TensorProto>) {
    graph.input.retain(|i| !tensors.iter().any(|t| t.name == i.name));
    graph.initializer.extend(tensors);
}
