//! Tiny VGG16-shaped models for tests: the real structure (13 3x3 convolutions + ReLU, five
//! 2x2 max pools, blocks of 2, 2, 3, 3, 3, then a small classifier) with a few channels, so
//! that every stage can be tested end to end in milliseconds without the 58 MB weights.

use ndarray::{ArrayD, IxDyn};
use sd_onnx::{Dim, ModelProto, attr_int, attr_ints, dtype, node, tensor_from_array, value_info};

use crate::structure::{BLOCKS, Layout};

/// Deterministic weights in [-scale, scale] (a 64-bit LCG: no RNG dependency, same everywhere).
fn weights(shape: &[usize], seed: &mut u64, scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    })
}

/// A VGG16-shaped model with `widths[b]` channels in block `b`, input `input_image`
/// (NHWC with a Transpose, like Keras exports, or NCHW) and a Flatten+Gemm+Softmax head on top.
/// Spatial size is dynamic in the convolutions; the head assumes 32x32 inputs (1x1 after pool 5).
pub fn tiny_vgg(widths: &[usize; 5], layout: Layout, seed: u64) -> ModelProto {
    let mut seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut current = "input_image".to_string();
    if layout == Layout::Nhwc {
        nodes.push(node("Transpose", "to_nchw", &["input_image"], &["x_nchw"], vec![attr_ints("perm", &[0, 3, 1, 2])]));
        current = "x_nchw".into();
    }
    let mut cin = 3;
    for (b, (&convs, &cout)) in BLOCKS.iter().zip(widths).enumerate() {
        for i in 0..convs {
            let p = format!("b{}c{}", b + 1, i + 1);
            let scale = (6.0 / (cin * 9) as f32).sqrt();
            inits.push(tensor_from_array(&format!("{p}_w"), &weights(&[cout, cin, 3, 3], &mut seed, scale)));
            inits.push(tensor_from_array(&format!("{p}_b"), &weights(&[cout], &mut seed, 0.1)));
            nodes.push(node(
                "Conv",
                &format!("{p}_conv"),
                &[&current, &format!("{p}_w"), &format!("{p}_b")],
                &[&format!("{p}_out")],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_ints("strides", &[1, 1]),
                ],
            ));
            nodes.push(node("Relu", &format!("{p}_relu"), &[&format!("{p}_out")], &[&format!("{p}_act")], vec![]));
            current = format!("{p}_act");
            cin = cout;
        }
        let pooled = format!("pool{}", b + 1);
        nodes.push(node(
            "MaxPool",
            &format!("{pooled}_node"),
            &[&current],
            &[&pooled],
            vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
        ));
        current = pooled;
    }
    inits.push(tensor_from_array("fc_w", &weights(&[cin, 2], &mut seed, 0.5)));
    nodes.push(node("Flatten", "flatten", &[&current], &["flat"], vec![attr_int("axis", 1)]));
    nodes.push(node("Gemm", "fc", &["flat", "fc_w"], &["logits"], vec![]));
    nodes.push(node("Softmax", "softmax", &["logits"], &["probabilities"], vec![attr_int("axis", 1)]));
    let input_dims = match layout {
        Layout::Nhwc => [Dim::named("N"), Dim::Fixed(32), Dim::Fixed(32), Dim::Fixed(3)],
        Layout::Nchw => [Dim::named("N"), Dim::Fixed(3), Dim::Fixed(32), Dim::Fixed(32)],
    };
    let graph = sd_onnx::GraphProto {
        name: Some("tiny_vgg".into()),
        node: nodes,
        initializer: inits,
        input: vec![value_info("input_image", dtype::FLOAT, &input_dims)],
        output: vec![value_info("probabilities", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(2)])],
        ..Default::default()
    };
    sd_onnx::model(graph, 13, "sd-model tests")
}
