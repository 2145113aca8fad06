//! Finding VGG16 in an ONNX graph by its structure, not by tensor names: 13 3x3 convolutions
//! (stride 1, "same" padding), each followed by a ReLU, in five blocks of 2, 2, 3, 3, 3, each
//! block closed by a 2x2 max pool. That holds for Keras/tf2onnx exports (NHWC input followed by
//! a Transpose), the ONNX model zoo's and torchvision's (NCHW input), whatever the names.

use std::collections::HashMap;

use sd_onnx::{GraphProto, NodeProto};

/// Convolutions per block in VGG16.
pub const BLOCKS: [usize; 5] = [2, 2, 3, 3, 3];

#[derive(Debug, thiserror::Error)]
pub enum StructureError {
    #[error("the model has no graph input")]
    NoInput,
    #[error(
        "not a VGG16 conv base: found {convs} 3x3 convolutions and {pools} 2x2 max pools ({pattern}); \
         expected 13 convolutions in blocks of 2, 2, 3, 3, 3, each block closed by a max pool"
    )]
    Shape { convs: usize, pools: usize, pattern: String },
    #[error("not a VGG16 conv base: {0}")]
    Wiring(String),
}

/// Layout of the source model's image input.
pub use sd_data::layout::model::Layout;

/// One 3x3 convolution, with Keras' name for it (`block{b}_conv{i}`).
#[derive(Debug, Clone)]
pub struct ConvLayer {
    pub name: String,
    pub node_name: String,
    pub weight: String,
    pub bias: Option<String>,
    /// Output of the ReLU after the convolution.
    pub relu_output: String,
}

/// What the structure search found.
#[derive(Debug, Clone)]
pub struct Vgg16 {
    /// The graph input the image enters through.
    pub input: String,
    pub input_layout: Layout,
    /// The tensor the first convolution reads (NCHW).
    pub first_conv_input: String,
    pub convs: Vec<ConvLayer>,
    /// Outputs of the five max pools (NCHW), block 1 to 5.
    pub pools: Vec<String>,
}

fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

fn is_conv3x3(graph: &GraphProto, n: &NodeProto) -> bool {
    if op(n) != "Conv" {
        return false;
    }
    let kernel = sd_onnx::get_ints(n, "kernel_shape")
        .map(<[i64]>::to_vec)
        .or_else(|| sd_onnx::constant(graph, n.input.get(1)?).map(|w| w.dims.iter().skip(2).copied().collect()));
    let strides_one = sd_onnx::get_ints(n, "strides").is_none_or(|s| s.iter().all(|&v| v == 1));
    let same_pad = sd_onnx::get_ints(n, "pads").map(|p| p.iter().all(|&v| v == 1)).unwrap_or_else(|| {
        n.attribute
            .iter()
            .any(|a| a.name.as_deref() == Some("auto_pad") && a.s.as_deref().is_some_and(|s| s.starts_with(b"SAME")))
    });
    kernel.as_deref() == Some(&[3, 3]) && strides_one && same_pad && sd_onnx::get_int(n, "group").unwrap_or(1) == 1
}

fn is_pool2x2(n: &NodeProto) -> bool {
    op(n) == "MaxPool"
        && sd_onnx::get_ints(n, "kernel_shape") == Some(&[2, 2])
        && sd_onnx::get_ints(n, "strides") == Some(&[2, 2])
}

/// Finds VGG16's 13 convolutions and 5 pools and checks that they form one chain.
pub fn find(graph: &GraphProto) -> Result<Vgg16, StructureError> {
    let layers: Vec<&NodeProto> = graph.node.iter().filter(|n| is_conv3x3(graph, n) || is_pool2x2(n)).collect();
    let pattern: String = layers.iter().map(|n| if op(n) == "Conv" { 'C' } else { 'P' }).collect();
    let convs = layers.iter().filter(|n| op(n) == "Conv").count();
    let pools = layers.len() - convs;
    let expected: String = BLOCKS.iter().map(|&k| "C".repeat(k) + "P").collect();
    // Some exports keep the classifier's pooling (e.g. torchvision's adaptive pool, not a 2x2
    // MaxPool); anything after the fifth block is ignored.
    if !pattern.starts_with(&expected) {
        return Err(StructureError::Shape { convs, pools, pattern: describe(&pattern) });
    }

    let consumers = consumer_index(graph);
    let producer = sd_onnx::producers(graph);
    let mut result_convs = Vec::new();
    let mut pool_outputs = Vec::new();
    let mut previous: Option<String> = None; // tensor the next layer must read
    let (mut block, mut index) = (1, 1);
    for n in &layers[..expected.len()] {
        let input = n.input.first().cloned().unwrap_or_default();
        if let Some(prev) = &previous
            && &input != prev
        {
            return Err(StructureError::Wiring(format!(
                "node '{}' reads '{input}', expected the previous layer's output '{prev}'",
                n.name.as_deref().unwrap_or("?")
            )));
        }
        let output = n.output.first().cloned().unwrap_or_default();
        if op(n) == "Conv" {
            let relu =
                consumers.get(output.as_str()).and_then(|c| c.iter().find(|c| op(c) == "Relu")).ok_or_else(|| {
                    StructureError::Wiring(format!(
                        "convolution '{}' is not followed by a ReLU",
                        n.name.as_deref().unwrap_or("?")
                    ))
                })?;
            result_convs.push(ConvLayer {
                name: format!("block{block}_conv{index}"),
                node_name: n.name.clone().unwrap_or_default(),
                weight: n.input.get(1).cloned().unwrap_or_default(),
                bias: n.input.get(2).filter(|b| !b.is_empty()).cloned(),
                relu_output: relu.output[0].clone(),
            });
            previous = Some(relu.output[0].clone());
            index += 1;
        } else {
            pool_outputs.push(output.clone());
            previous = Some(output);
            block += 1;
            index = 1;
        }
    }

    // Trace the first convolution's input back to a graph input: directly (NCHW), or through
    // a Transpose from NHWC (Keras exports).
    let first_conv_input = layers[0].input[0].clone();
    let graph_inputs: Vec<&str> = graph
        .input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .filter(|n| !graph.initializer.iter().any(|t| t.name.as_deref() == Some(*n)))
        .collect();
    let (input, input_layout) = if graph_inputs.contains(&first_conv_input.as_str()) {
        (first_conv_input.clone(), Layout::Nchw)
    } else {
        match producer.get(first_conv_input.as_str()) {
            Some(t)
                if op(t) == "Transpose"
                    && sd_onnx::get_ints(t, "perm") == Some(&[0, 3, 1, 2])
                    && graph_inputs.contains(&t.input[0].as_str()) =>
            {
                (t.input[0].clone(), Layout::Nhwc)
            }
            Some(t) => {
                return Err(StructureError::Wiring(format!(
                    "the first convolution reads '{first_conv_input}', made by a {} node; expected the image input \
                     (NCHW) or a Transpose from an NHWC input",
                    op(t)
                )));
            }
            None if graph_inputs.is_empty() => return Err(StructureError::NoInput),
            None => {
                return Err(StructureError::Wiring(format!(
                    "the first convolution reads unknown tensor '{first_conv_input}'"
                )));
            }
        }
    };
    Ok(Vgg16 { input, input_layout, first_conv_input, convs: result_convs, pools: pool_outputs })
}

fn consumer_index(graph: &GraphProto) -> HashMap<&str, Vec<&NodeProto>> {
    let mut map: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            map.entry(i.as_str()).or_default().push(n);
        }
    }
    map
}

/// "CCPCCP" -> "conv,conv,pool,conv,conv,pool" (shortened) for error messages.
fn describe(pattern: &str) -> String {
    if pattern.is_empty() {
        return "none at all".into();
    }
    let blocks: Vec<String> = pattern.split_inclusive('P').map(|b| format!("{}", b.matches('C').count())).collect();
    format!("convolutions per pooled block: {}", blocks.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_vgg;

    #[test]
    fn finds_the_layers_of_a_keras_style_export() {
        let m = tiny_vgg(&[2, 3, 4, 5, 6], crate::structure::Layout::Nhwc, 1);
        let v = find(m.graph.as_ref().unwrap()).unwrap();
        assert_eq!(v.input, "input_image");
        assert_eq!(v.input_layout, Layout::Nhwc);
        assert_eq!(v.convs.len(), 13);
        assert_eq!(v.convs[12].name, "block5_conv3");
        assert_eq!(v.convs[2].name, "block2_conv1");
        assert_eq!(v.pools.len(), 5);
    }

    #[test]
    fn finds_an_nchw_export() {
        let m = tiny_vgg(&[2, 3, 4, 5, 6], Layout::Nchw, 1);
        let v = find(m.graph.as_ref().unwrap()).unwrap();
        assert_eq!(v.input_layout, Layout::Nchw);
        assert_eq!(v.first_conv_input, v.input);
    }

    #[test]
    fn a_network_with_a_missing_block_is_rejected_with_what_was_found() {
        let mut m = tiny_vgg(&[2, 3, 4, 5, 6], Layout::Nhwc, 1);
        let g = m.graph.as_mut().unwrap();
        // Drop block 5's pool by turning it into an average pool.
        let last_pool = g.node.iter_mut().rev().find(|n| n.op_type.as_deref() == Some("MaxPool")).unwrap();
        last_pool.op_type = Some("AveragePool".into());
        let err = find(g).unwrap_err().to_string();
        assert!(err.contains("13 3x3 convolutions and 4 2x2 max pools"), "{err}");
        assert!(err.contains("2, 2, 3, 3, 3"), "{err}");
    }
}
