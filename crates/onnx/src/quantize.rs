//! Static int8 quantisation of a convolutional graph in the QDQ form ONNX Runtime's CPU provider
//! fuses into native int8 kernels (`QLinearConv`, uint8 `MaxPool`):
//!
//! ```text
//! x ─Q─DQ─┐
//! W(int8)─DQ─┼─ Conv ─(Relu)─ Q ─ DQ ─ MaxPool ─ Q ─ DQ ─ Conv ...
//! b(int32)─DQ─┘
//! ```
//!
//! * weights: int8, symmetric, one scale per output channel (axis 0 of the ONNX Conv weight,
//!   which is always `[M, C/group, kH, kW]`), range [-64, 64] (7 bits, ONNX Runtime's
//!   `reduce_range`): x86 CPUs without VNNI multiply uint8 by int8 with `vpmaddubsw`, whose pair
//!   sums saturate at 16 bits past 255·64·2; full-range weights there gave features at cosine 0.52
//!   from the float ones, and one model file must run right on every CPU;
//! * biases: int32 with scale `x_scale · w_scale[c]` and zero point 0 (what `QLinearConv` adds);
//! * activations: uint8, one scale and zero point per tensor, from a calibrated min-max range
//!   (always widened to hold 0, so that 0 is exact, e.g. for zero padding);
//! * a Relu (or a ReLU6, `Clip` from 0) right after a Conv is dropped: its output range starts at
//!   0, so the zero point is 0 and the QuantizeLinear saturates negatives to 0 (and values above
//!   the calibrated maximum, at most 6, to it), exactly the Relu;
//! * a MaxPool reuses its input's scale and zero point, so ONNX Runtime drops the DQ/Q pair
//!   around it and pools the uint8 values.
//!
//! [`calibration_model`] exposes the tensors whose ranges are needed as extra outputs of the
//! float graph; the caller runs it on a few dozen images and hands the observed ranges to
//! [`quantize`].

use std::collections::{BTreeMap, HashMap, HashSet};

use ndarray::ArrayD;

use crate::{GraphProto, ModelProto, NodeProto, OnnxError, Result, TensorProto, ValueInfoProto, attr_int, dtype, node};

/// `DequantizeLinear`'s `axis` (per-channel scales) needs opset 13.
pub const MIN_OPSET: i64 = 13;

/// An activation's observed value range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

impl Range {
    /// The empty range, for folding observations into.
    pub const EMPTY: Range = Range { min: f32::INFINITY, max: f32::NEG_INFINITY };

    /// Widens the range to hold every value of `values`.
    pub fn observe<'a>(&mut self, values: impl IntoIterator<Item = &'a f32>) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }
}

/// Per-tensor affine uint8 parameters: `real = scale · (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: u8,
}

/// uint8 parameters covering `range` widened to hold 0 (0 is then exactly representable).
pub fn uint8_params(range: Range) -> Affine {
    let (lo, hi) = (range.min.min(0.0), range.max.max(0.0));
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        // All zeros (or nothing observed): any scale represents them.
        return Affine { scale: 1.0, zero_point: 0 };
    }
    Affine { scale, zero_point: (-lo / scale).round().clamp(0.0, 255.0) as u8 }
}

/// The largest int8 weight magnitude (see the module doc: 7 bits, so that no CPU saturates).
pub const WEIGHT_MAX: f32 = 64.0;

/// Symmetric int8 quantisation of `weights` with one scale per index of axis 0:
/// `scale[c] = max |w[c, ..]| / WEIGHT_MAX`, values rounded and clamped to ±[`WEIGHT_MAX`].
pub fn per_channel_int8(weights: &ArrayD<f32>) -> (Vec<i8>, Vec<f32>) {
    let channels = weights.shape().first().copied().unwrap_or(1);
    let per = weights.len() / channels.max(1);
    let flat: Vec<f32> = weights.iter().copied().collect();
    let mut scales = Vec::with_capacity(channels);
    let mut values = Vec::with_capacity(flat.len());
    for chunk in flat.chunks(per.max(1)) {
        let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
        values.extend(chunk.iter().map(|v| (v / scale).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8));
        scales.push(scale);
    }
    (values, scales)
}

/// A bias as int32 at scale `x_scale · w_scales[c]` (zero point 0), as `QLinearConv` adds it.
pub fn bias_int32(bias: &[f32], x_scale: f32, w_scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .zip(w_scales)
        .map(|(b, w)| {
            (f64::from(*b) / (f64::from(x_scale) * f64::from(*w))).round().clamp(i32::MIN as f64, i32::MAX as f64)
                as i32
        })
        .collect()
}

fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

/// Which tensors get which quantisation parameters, worked out from the float graph.
struct Plan {
    /// Per Conv (by node index): the tensor its output is quantised as (the Relu's output
    /// when a Relu alone reads it), and that Relu's index.
    activations: HashMap<usize, (String, Option<usize>)>,
    /// Every tensor that needs a range, each resolved through MaxPools to the tensor whose
    /// range it shares, in graph order.
    ranged: Vec<String>,
}

impl Plan {
    fn of(graph: &GraphProto) -> Plan {
        let outputs: HashSet<&str> = graph.output.iter().filter_map(|o| o.name.as_deref()).collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for input in &n.input {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let mut activations = HashMap::new();
        let mut ranged = Vec::new();
        let push = |t: String, ranged: &mut Vec<String>| {
            if !ranged.contains(&t) {
                ranged.push(t);
            }
        };
        for (i, n) in graph.node.iter().enumerate() {
            if op(n) != "Conv" {
                continue;
            }
            push(range_source(graph, &n.input[0]), &mut ranged);
            let y = n.output[0].as_str();
            let relu = match consumers.get(y).map(Vec::as_slice) {
                Some(&[r]) if clamps_at_zero(graph, &graph.node[r]) && !outputs.contains(y) => Some(r),
                _ => None,
            };
            let activation = relu.map_or_else(|| y.to_string(), |r| graph.node[r].output[0].clone());
            push(activation.clone(), &mut ranged);
            activations.insert(i, (activation, relu));
        }
        Plan { activations, ranged }
    }
}

/// A Relu, or a Clip from 0 (ReLU6: `Clip(x, 0, 6)`): the uint8 quantisation of its output,
/// zero point 0 and at most its calibrated maximum, is the same clamp, so it can be dropped.
fn clamps_at_zero(graph: &GraphProto, n: &NodeProto) -> bool {
    match op(n) {
        "Relu" => true,
        "Clip" => n
            .input
            .get(1)
            .and_then(|m| crate::constant(graph, m))
            .and_then(|t| crate::array_from_tensor(t).ok())
            .is_some_and(|m| m.len() == 1 && m.iter().all(|&v| v == 0.0)),
        _ => false,
    }
}

/// The tensor whose range `tensor` shares: MaxPool outputs keep their input's parameters.
fn range_source(graph: &GraphProto, tensor: &str) -> String {
    let mut t = tensor.to_string();
    while let Some(n) = graph.node.iter().find(|n| n.output.contains(&t)) {
        if op(n) != "MaxPool" {
            break;
        }
        t = n.input[0].clone();
    }
    t
}

/// The tensors [`quantize`] needs ranges of, in graph order.
pub fn calibration_tensors(graph: &GraphProto) -> Vec<String> {
    Plan::of(graph).ranged
}

/// `model` with every tensor of [`calibration_tensors`] added as a graph output (after the
/// original outputs), and their names in output order.
pub fn calibration_model(model: &ModelProto) -> Result<(ModelProto, Vec<String>)> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| OnnxError::MissingTensor("graph".into()))?;
    let names = calibration_tensors(graph);
    let declared: HashSet<String> = graph.output.iter().filter_map(|o| o.name.clone()).collect();
    for name in names.iter().filter(|n| !declared.contains(*n)) {
        graph.output.push(float_of_any_shape(name));
    }
    Ok((model, names))
}

fn float_of_any_shape(name: &str) -> ValueInfoProto {
    use crate::proto::type_proto::{Tensor, Value};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(crate::TypeProto {
            value: Some(Value::TensorType(Tensor { elem_type: Some(dtype::FLOAT), shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scalar(name: &str, data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto { name: Some(name.into()), data_type: Some(data_type), raw_data: Some(raw), ..Default::default() }
}

fn vector(name: &str, data_type: i32, raw: Vec<u8>, len: usize) -> TensorProto {
    TensorProto { dims: vec![len as i64], ..scalar(name, data_type, raw) }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The min-max range of every tensor [`quantize`] needs, observed by running `model` (`what`,
/// for errors) through ONNX Runtime with those tensors as extra outputs ([`calibration_model`]),
/// on `batches` fed to its input `input`.
pub fn observe_ranges<E>(
    model: &ModelProto,
    what: &str,
    input: &str,
    session: &sd_runtime::SessionConfig,
    batches: impl IntoIterator<Item = std::result::Result<ArrayD<f32>, E>>,
) -> std::result::Result<BTreeMap<String, Range>, E>
where
    E: From<OnnxError> + From<sd_runtime::RuntimeError>,
{
    use prost::Message;
    let (observed, names) = calibration_model(model)?;
    let name = format!("the calibration graph of {what}");
    let mut session = sd_runtime::Session::from_bytes(&name, &observed.encode_to_vec(), session)?;
    let outputs: Vec<String> = session.outputs().iter().map(|p| p.name.clone()).collect();
    let mut ranges: BTreeMap<String, Range> = names.iter().map(|n| (n.clone(), Range::EMPTY)).collect();
    for batch in batches {
        for (name, values) in outputs.iter().zip(session.run(&[(input, batch?.view())])?) {
            if let Some(r) = ranges.get_mut(name) {
                r.observe(values.iter());
            }
        }
    }
    Ok(ranges)
}

/// The statically quantised model (see the module doc): every Conv's input, weights, bias and
/// output in QDQ form, with activation parameters from `ranges` (observed on the float graph,
/// keyed by the names [`calibration_tensors`] gives). The graph's inputs and outputs keep their
/// names and float32 type.
pub fn quantize(model: &ModelProto, ranges: &BTreeMap<String, Range>) -> Result<ModelProto> {
    let source = model.graph.as_ref().ok_or_else(|| OnnxError::MissingTensor("graph".into()))?;
    let opset = crate::default_opset(model).unwrap_or(1);
    if opset < MIN_OPSET {
        return Err(OnnxError::Tensor {
            name: "opset".into(),
            reason: format!(
                "the model imports ONNX opset {opset}; int8 quantisation needs {MIN_OPSET} or newer (per-channel DequantizeLinear); re-export it with opset 13+"
            ),
        });
    }
    let plan = Plan::of(source);
    let affine = |t: &str| -> Result<Affine> {
        let s = range_source(source, t);
        ranges.get(&s).map(|r| uint8_params(*r)).ok_or_else(|| OnnxError::Tensor {
            name: s.clone(),
            reason: "no calibrated range for this activation (calibrate on the same float graph)".into(),
        })
    };

    let mut graph = source.clone();
    let mut nodes = Vec::with_capacity(source.node.len() * 3);
    let mut initializers = Vec::new();
    let mut params_written: HashSet<String> = HashSet::new();
    // Tensors already available dequantised: name -> the name of their DQ output.
    let mut dequantized: HashMap<String, String> = HashMap::new();
    let dropped: HashSet<usize> = plan.activations.values().filter_map(|(_, r)| *r).collect();

    // The (shared) scale and zero point initializers of an activation's range source.
    let mut params = |t: &str, initializers: &mut Vec<TensorProto>| -> Result<(Affine, [String; 2])> {
        let a = affine(t)?;
        let s = range_source(source, t);
        let names = [format!("{s}/scale"), format!("{s}/zero_point")];
        if params_written.insert(s) {
            initializers.push(scalar(&names[0], dtype::FLOAT, a.scale.to_le_bytes().to_vec()));
            initializers.push(scalar(&names[1], dtype::UINT8, vec![a.zero_point]));
        }
        Ok((a, names))
    };

    for (i, n) in source.node.iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        if op(n) != "Conv" {
            nodes.push(n.clone());
            continue;
        }
        let name = n.name.clone().unwrap_or_else(|| n.output[0].clone());
        let mut conv = n.clone();

        // Input: Q -> DQ in front, unless it already comes dequantised from the previous Conv.
        let x = &n.input[0];
        let (x_affine, [x_scale, x_zp]) = params(x, &mut initializers)?;
        conv.input[0] = match dequantized.get(x) {
            Some(dq) => dq.clone(),
            None => {
                let (q, dq) = (format!("{x}/quantized"), format!("{x}/dequantized"));
                nodes.push(node("QuantizeLinear", &format!("{x}/quantize"), &[x, &x_scale, &x_zp], &[&q], vec![]));
                nodes.push(node(
                    "DequantizeLinear",
                    &format!("{x}/dequantize"),
                    &[&q, &x_scale, &x_zp],
                    &[&dq],
                    vec![],
                ));
                dequantized.insert(x.clone(), dq.clone());
                dq
            }
        };

        // Weights: int8 per output channel.
        let w_name = &n.input[1];
        let w = crate::constant(source, w_name).ok_or_else(|| OnnxError::Tensor {
            name: w_name.clone(),
            reason: format!("{name}: weights are not a constant"),
        })?;
        let w = crate::array_from_tensor(w)?;
        let (w_q, w_scales) = per_channel_int8(&w);
        let channels = w_scales.len();
        let wn = [
            format!("{w_name}/int8"),
            format!("{w_name}/scale"),
            format!("{w_name}/zero_point"),
            format!("{w_name}/dequantized"),
        ];
        initializers.push(TensorProto {
            dims: w.shape().iter().map(|&d| d as i64).collect(),
            ..scalar(&wn[0], dtype::INT8, w_q.iter().map(|&v| v as u8).collect())
        });
        initializers.push(vector(&wn[1], dtype::FLOAT, f32_bytes(&w_scales), channels));
        initializers.push(vector(&wn[2], dtype::INT8, vec![0; channels], channels));
        nodes.push(node(
            "DequantizeLinear",
            &format!("{w_name}/dequantize"),
            &[&wn[0], &wn[1], &wn[2]],
            &[&wn[3]],
            vec![attr_int("axis", 0)],
        ));
        conv.input[1] = wn[3].clone();

        // Bias: int32 at x_scale * w_scale.
        if let Some(b_name) = n.input.get(2).filter(|b| !b.is_empty()) {
            let b = crate::constant(source, b_name).ok_or_else(|| OnnxError::Tensor {
                name: b_name.clone(),
                reason: format!("{name}: bias is not a constant"),
            })?;
            let b: Vec<f32> = crate::array_from_tensor(b)?.iter().copied().collect();
            let b_q = bias_int32(&b, x_affine.scale, &w_scales);
            let b_scales: Vec<f32> = w_scales.iter().map(|s| s * x_affine.scale).collect();
            let bn = [
                format!("{b_name}/int32"),
                format!("{b_name}/scale"),
                format!("{b_name}/zero_point"),
                format!("{b_name}/dequantized"),
            ];
            initializers.push(vector(
                &bn[0],
                dtype::INT32,
                b_q.iter().flat_map(|v| v.to_le_bytes()).collect(),
                channels,
            ));
            initializers.push(vector(&bn[1], dtype::FLOAT, f32_bytes(&b_scales), channels));
            initializers.push(vector(&bn[2], dtype::INT32, vec![0; channels * 4], channels));
            nodes.push(node(
                "DequantizeLinear",
                &format!("{b_name}/dequantize"),
                &[&bn[0], &bn[1], &bn[2]],
                &[&bn[3]],
                vec![attr_int("axis", 0)],
            ));
            conv.input[2] = bn[3].clone();
        }

        // Output: Conv -> Q -> DQ, the DQ under the activation's own name, so every reader
        // (and a graph output) is unchanged.
        let (activation, _) = &plan.activations[&i];
        let (_, [y_scale, y_zp]) = params(activation, &mut initializers)?;
        let (raw, q) = (format!("{activation}/float"), format!("{activation}/quantized"));
        conv.output[0] = raw.clone();
        nodes.push(conv);
        nodes.push(node("QuantizeLinear", &format!("{activation}/quantize"), &[&raw, &y_scale, &y_zp], &[&q], vec![]));
        nodes.push(node(
            "DequantizeLinear",
            &format!("{activation}/dequantize"),
            &[&q, &y_scale, &y_zp],
            &[activation],
            vec![],
        ));
        dequantized.insert(activation.clone(), activation.clone());
    }

    // MaxPool outputs that a Conv reads got Q -> DQ above with the pool input's parameters.
    graph.node = nodes;
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    graph.initializer.retain(|t| t.name.as_ref().is_some_and(|n| used.contains(n)));
    graph.initializer.extend(initializers);
    graph.value_info.clear();
    let mut out = model.clone();
    out.graph = Some(graph);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dim, attr_ints, tensor_from_array, value_info};
    use ndarray::{ArrayD, IxDyn, array};

    #[test]
    fn uint8_parameters_cover_the_range_and_hold_zero_exactly() {
        let a = uint8_params(Range { min: -1.0, max: 3.0 });
        assert_eq!(a.scale, 4.0 / 255.0);
        assert_eq!(a.zero_point, 64, "1 / (4/255) = 63.75 rounds to 64");
        // A ReLU output: zero point 0, the whole range for positives.
        assert_eq!(uint8_params(Range { min: 0.0, max: 51.0 }), Affine { scale: 0.2, zero_point: 0 });
        // All positive: widened down to 0; all negative: up to 0.
        assert_eq!(uint8_params(Range { min: 2.0, max: 5.1 }), Affine { scale: 0.02, zero_point: 0 });
        assert_eq!(uint8_params(Range { min: -2.55, max: -1.0 }).zero_point, 255);
        // Nothing but zeros, or nothing observed: a harmless scale.
        assert_eq!(uint8_params(Range { min: 0.0, max: 0.0 }), Affine { scale: 1.0, zero_point: 0 });
        assert_eq!(uint8_params(Range::EMPTY), Affine { scale: 1.0, zero_point: 0 });
    }

    #[test]
    fn observing_widens_the_range() {
        let mut r = Range::EMPTY;
        r.observe(&[1.0, -2.0]);
        r.observe(&[0.5, 7.0]);
        assert_eq!(r, Range { min: -2.0, max: 7.0 });
    }

    #[test]
    fn weights_are_symmetric_int8_per_output_channel() {
        // Two output channels of [1, 1, 2] (OIHW): each gets its own scale max|w| / 64.
        let w = array![[[[1.0f32, -2.0]]], [[[0.5, 0.375]]]].into_dyn();
        let (q, scales) = per_channel_int8(&w);
        assert_eq!(scales, [2.0 / 64.0, 0.5 / 64.0]);
        // 1 / (2/64) = 32; 0.375 / (0.5/64) = 48; the largest magnitude is 64, never 127, so that
        // uint8 x int8 pair sums fit 16 bits on CPUs without VNNI (255 * 64 * 2 <= 32767).
        assert_eq!(q, [32, -64, 64, 48]);
        // A channel of zeros keeps scale 1 (no division by zero) and zero values.
        let (q, scales) = per_channel_int8(&ArrayD::zeros(IxDyn(&[1, 1, 1, 3])));
        assert_eq!((q, scales), (vec![0, 0, 0], vec![1.0]));
        // Dequantised weights are within half a step of the originals.
        let w = array![[[[0.3f32, -0.7, 0.01]]], [[[5.0, -4.9, 0.0]]]].into_dyn();
        let (q, scales) = per_channel_int8(&w);
        for (i, v) in w.iter().enumerate() {
            let s = scales[i / 3];
            assert!((f32::from(q[i]) * s - v).abs() <= s / 2.0 + 1e-7, "{i}");
        }
    }

    #[test]
    fn bias_is_int32_at_the_product_of_input_and_weight_scales() {
        assert_eq!(bias_int32(&[1.0, -0.5, 0.0], 0.5, &[0.01, 0.1, 3.0]), [200, -10, 0]);
        // Saturates instead of wrapping.
        assert_eq!(bias_int32(&[1e30], 1e-10, &[1e-10]), [i32::MAX]);
    }

    /// x -> Transpose -> Conv(c1) -> Relu -> Conv(c2) -> Relu -> MaxPool -> Conv(c3) -> y
    fn small_cnn() -> ModelProto {
        let w = |name: &str, o: usize, i: usize| tensor_from_array(name, &ArrayD::from_elem(IxDyn(&[o, i, 3, 3]), 0.1));
        let conv = |name: &str, x: &str, y: &str| {
            node(
                "Conv",
                name,
                &[x, &format!("{name}_w"), &format!("{name}_b")],
                &[y],
                vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])],
            )
        };
        let graph = GraphProto {
            node: vec![
                node("Transpose", "t", &["x"], &["x_nchw"], vec![attr_ints("perm", &[0, 3, 1, 2])]),
                conv("c1", "x_nchw", "c1_out"),
                node("Relu", "r1", &["c1_out"], &["a1"], vec![]),
                conv("c2", "a1", "c2_out"),
                node("Relu", "r2", &["c2_out"], &["a2"], vec![]),
                node(
                    "MaxPool",
                    "p",
                    &["a2"],
                    &["pooled"],
                    vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
                ),
                conv("c3", "pooled", "y"),
            ],
            initializer: vec![
                w("c1_w", 2, 3),
                tensor_from_array("c1_b", &array![0.5f32, -0.5].into_dyn()),
                w("c2_w", 2, 2),
                tensor_from_array("c2_b", &array![0.0f32, 0.1].into_dyn()),
                w("c3_w", 1, 2),
                tensor_from_array("c3_b", &array![0.2f32].into_dyn()),
            ],
            input: vec![value_info("x", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(4), Dim::Fixed(4), Dim::Fixed(3)])],
            output: vec![value_info(
                "y",
                dtype::FLOAT,
                &[Dim::named("N"), Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(2)],
            )],
            ..Default::default()
        };
        crate::model(graph, 13, "test")
    }

    fn ops(m: &ModelProto) -> Vec<String> {
        m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.clone().unwrap()).collect()
    }

    #[test]
    fn calibration_needs_conv_inputs_and_outputs_with_pools_resolved_to_their_input() {
        let m = small_cnn();
        // c3 reads the pool, which shares a2's range; c3's output has no Relu, so it is y.
        assert_eq!(calibration_tensors(m.graph.as_ref().unwrap()), ["x_nchw", "a1", "a2", "y"]);
        let (cal, names) = calibration_model(&m).unwrap();
        let outs: Vec<_> = cal.graph.unwrap().output.iter().map(|o| o.name.clone().unwrap()).collect();
        assert_eq!(outs, ["y", "x_nchw", "a1", "a2"], "y is declared once");
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn a_relu6_clip_from_zero_is_quantised_like_a_relu_and_other_clips_are_not() {
        let scalar = |name: &str, v: f32| tensor_from_array(name, &ArrayD::from_elem(IxDyn(&[]), v));
        let mut m = small_cnn();
        let g = m.graph.as_mut().unwrap();
        // r1 becomes ReLU6 (Clip 0..6): dropped like the Relu; r2 a Clip from -1: kept.
        g.node[2] = node("Clip", "r1", &["c1_out", "zero", "six"], &["a1"], vec![]);
        g.node[4] = node("Clip", "r2", &["c2_out", "minus_one", "six"], &["a2"], vec![]);
        g.initializer.extend([scalar("zero", 0.0), scalar("six", 6.0), scalar("minus_one", -1.0)]);
        // c2 keeps its own output range (the Clip from -1 stays); c3 reads the pool of a2.
        assert_eq!(calibration_tensors(g), ["x_nchw", "a1", "c2_out", "a2", "y"]);
        let mut r = ranges();
        r.insert("c2_out".into(), Range { min: -2.0, max: 40.0 });
        let q = quantize(&m, &r).unwrap();
        let clips = q.graph.unwrap().node.iter().filter(|n| n.op_type.as_deref() == Some("Clip")).count();
        assert_eq!(clips, 1, "only the Clip from -1 stays");
    }

    fn ranges() -> BTreeMap<String, Range> {
        [("x_nchw", -100.0, 150.0), ("a1", 0.0, 20.0), ("a2", 0.0, 40.0), ("y", -3.0, 9.0)]
            .into_iter()
            .map(|(n, min, max)| (n.to_string(), Range { min, max }))
            .collect()
    }

    #[test]
    fn quantized_graph_is_the_qdq_pattern_onnx_runtime_fuses() {
        let q = quantize(&small_cnn(), &ranges()).unwrap();
        #[rustfmt::skip]
        let want = [
            "Transpose",
            "QuantizeLinear", "DequantizeLinear",            // x_nchw
            "DequantizeLinear", "DequantizeLinear", "Conv",  // c1 weights, bias
            "QuantizeLinear", "DequantizeLinear",            // a1 (Relu dropped)
            "DequantizeLinear", "DequantizeLinear", "Conv",  // c2 reads a1's DQ directly
            "QuantizeLinear", "DequantizeLinear",            // a2
            "MaxPool",
            "QuantizeLinear", "DequantizeLinear",            // pooled, with a2's parameters
            "DequantizeLinear", "DequantizeLinear", "Conv",
            "QuantizeLinear", "DequantizeLinear",            // y keeps its name
        ];
        assert_eq!(ops(&q), want);
        let g = q.graph.as_ref().unwrap();
        let by_output = |t: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == t)).unwrap();
        assert_eq!(by_output("y").op_type.as_deref(), Some("DequantizeLinear"));
        // The pool's Q/DQ use the same parameters as a2's, so the pair around it is dropped.
        let pooled_q = g.node.iter().find(|n| n.input.first().is_some_and(|i| i == "pooled")).unwrap();
        assert_eq!(pooled_q.input[1..], ["a2/scale".to_string(), "a2/zero_point".to_string()]);
        // Weights int8 with per-channel scales, biases int32; float originals gone.
        let init = |n: &str| g.initializer.iter().find(|t| t.name.as_deref() == Some(n));
        let w = init("c1_w/int8").unwrap();
        assert_eq!((w.data_type, w.dims.as_slice()), (Some(dtype::INT8), &[2i64, 3, 3, 3][..]));
        assert_eq!(init("c1_w/scale").unwrap().dims, [2]);
        let b = init("c1_b/int32").unwrap();
        assert_eq!(b.data_type, Some(dtype::INT32));
        let x = uint8_params(Range { min: -100.0, max: 150.0 });
        let want_b = bias_int32(&[0.5, -0.5], x.scale, &[0.1 / WEIGHT_MAX; 2]);
        let got_b: Vec<i32> =
            b.raw_data.as_ref().unwrap().chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got_b, want_b);
        assert!(init("c1_w").is_none() && init("c3_b").is_none());
        assert_eq!(g.initializer.iter().filter(|t| t.name.as_deref() == Some("a2/scale")).count(), 1);
        // Weight DQs are per channel on axis 0.
        let dq = g.node.iter().find(|n| n.input[0] == "c2_w/int8").unwrap();
        assert_eq!(crate::get_int(dq, "axis"), Some(0));
    }

    #[test]
    fn a_missing_range_or_an_old_opset_is_an_error_naming_it() {
        let mut r = ranges();
        r.remove("a2");
        let e = quantize(&small_cnn(), &r).unwrap_err().to_string();
        assert!(e.contains("'a2'") && e.contains("no calibrated range"), "{e}");
        let mut old = small_cnn();
        old.opset_import[0].version = Some(11);
        let e = quantize(&old, &ranges()).unwrap_err().to_string();
        assert!(e.contains("opset 11") && e.contains("13"), "{e}");
    }
}
