//! The graphs against the f64 reference, gradients against finite differences, optimiser steps
//! against hand computation, and the exported classifier against the Rust forward pass.

use ndarray::{Array1, Array2, Array4, ArrayD, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sd_runtime::{Device, SessionConfig};
use sd_train::head::{Head, Pool};
use sd_train::metrics::Tally;
use sd_train::{Loss, Optimizer, OptimizerState};

use crate::block5::{Block5, Block5Weights, Conv};
use crate::conv_layout::ConvLayout;
use crate::graphs::Block5Shape;
use crate::reference::{self, RefWeights};
use crate::train::Trainer;

fn cpu() -> SessionConfig {
    SessionConfig { device: Device::Cpu, threads: Some(1) }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// He-scaled random kernels and small random biases.
fn random_weights(channels: [usize; 4], rng: &mut ChaCha8Rng) -> Block5Weights {
    let conv = |cin: usize, cout: usize, rng: &mut ChaCha8Rng| {
        let s = (2.0 / (cin * 9) as f32).sqrt() * 1.7;
        Conv {
            kernel: Array4::from_shape_simple_fn((3, 3, cout, cin), || rng.random_range(-s..s)),
            bias: Array1::from_shape_simple_fn(cout, || rng.random_range(-0.1..0.1)),
        }
    };
    Block5Weights {
        convs: [
            conv(channels[0], channels[1], rng),
            conv(channels[1], channels[2], rng),
            conv(channels[2], channels[3], rng),
        ],
    }
}

/// Non-negative inputs, like a pooled ReLU map.
fn random_input(n: usize, shape: &Block5Shape, rng: &mut ChaCha8Rng) -> Array4<f32> {
    Array4::from_shape_simple_fn((n, shape.height, shape.width, shape.channels[0]), || rng.random_range(0.0..1.0))
}

/// Element `i` (in C order) of tensor `t` (kernel, bias per layer, in the optimiser's order).
fn param(w: &mut RefWeights, t: usize, i: usize) -> &mut f64 {
    let layer = t / 2;
    if t.is_multiple_of(2) {
        &mut w.kernels[layer].as_slice_mut().unwrap()[i]
    } else {
        &mut w.biases[layer].as_slice_mut().unwrap()[i]
    }
}

fn tensors(g: &Block5Weights) -> Vec<Vec<f32>> {
    g.convs.iter().flat_map(|c| [c.kernel.iter().copied().collect(), c.bias.to_vec()]).collect()
}

/// Central differences of `loss` (f64) with respect to every block 5 weight.
fn numeric_gradients(w: &RefWeights, mut loss: impl FnMut(&RefWeights) -> f64) -> Vec<Vec<f64>> {
    const H: f64 = 1e-6;
    let mut w = w.clone();
    let sizes: Vec<usize> =
        (0..6usize).map(|t| if t.is_multiple_of(2) { w.kernels[t / 2].len() } else { w.biases[t / 2].len() }).collect();
    sizes
        .iter()
        .enumerate()
        .map(|(t, &len)| {
            (0..len)
                .map(|i| {
                    let orig = *param(&mut w, t, i);
                    *param(&mut w, t, i) = orig + H;
                    let plus = loss(&w);
                    *param(&mut w, t, i) = orig - H;
                    let minus = loss(&w);
                    *param(&mut w, t, i) = orig;
                    (plus - minus) / (2.0 * H)
                })
                .collect()
        })
        .collect()
}

/// `|analytic - numeric| <= tol · max|numeric|` for every element of every tensor.
fn assert_close(analytic: &[Vec<f32>], numeric: &[Vec<f64>], tol: f64, what: &str) {
    let names = ["conv1 kernel", "conv1 bias", "conv2 kernel", "conv2 bias", "conv3 kernel", "conv3 bias"];
    for (t, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert_eq!(a.len(), n.len());
        let scale = n.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        assert!(n.iter().any(|v| v.abs() > 1e-3 * scale), "{what}: {} has a gradient", names[t]);
        for (i, (&a, &n)) in a.iter().zip(n).enumerate() {
            assert!(
                (a as f64 - n).abs() <= tol * scale,
                "{what}, {} [{i}]: analytic {a} vs numeric {n} (scale {scale})",
                names[t]
            );
        }
    }
}

fn f64_of(a: &Array4<f32>) -> Array4<f64> {
    a.mapv(f64::from)
}

/// Odd sizes exercise the rows and columns the pool floors away; even ones the plain case.
const SHAPES: [Block5Shape; 2] = [
    Block5Shape { channels: [3, 4, 5, 6], height: 5, width: 7 },
    Block5Shape { channels: [2, 3, 3, 4], height: 4, width: 4 },
];

#[test]
fn forward_graph_matches_the_reference() {
    let mut r = rng(1);
    for shape in SHAPES {
        let w = random_weights(shape.channels, &mut r);
        let x = random_input(3, &shape, &mut r);
        let mut b5 = Block5::new(shape, &cpu()).unwrap();
        let out = b5.forward(x.view(), &w).unwrap();
        let want = reference::block5(&f64_of(&x), &RefWeights::of(&w));
        let [ph, pw, c] = shape.output();
        assert_eq!(out.shape(), [3, ph, pw, c]);
        for (a, b) in out.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // The training variant gives the same output.
        let (train_out, _) = b5.forward_train(x.clone(), &w).unwrap();
        assert_eq!(train_out, out);
    }
}

#[test]
fn backward_graph_matches_finite_differences() {
    let mut r = rng(2);
    for shape in SHAPES {
        let w = random_weights(shape.channels, &mut r);
        let x = random_input(2, &shape, &mut r);
        // Probe loss Σ c ⊙ block5(x), so dL/d(block5_pool) = c.
        let [ph, pw, c] = shape.output();
        let probe = Array4::from_shape_simple_fn((2, ph, pw, c), || r.random_range(-1.0..1.0));
        let mut b5 = Block5::new(shape, &cpu()).unwrap();
        let (_, trace) = b5.forward_train(x.clone(), &w).unwrap();
        let grads = b5.backward(&trace, &w, probe.view()).unwrap();
        let (x64, probe64) = (f64_of(&x), f64_of(&probe));
        let numeric = numeric_gradients(&RefWeights::of(&w), |w| (reference::block5(&x64, w) * &probe64).sum());
        assert_close(&tensors(&grads), &numeric, 2e-4, &format!("{shape:?}"));
    }
}

#[test]
fn nchwc_graphs_give_what_the_onnx_graphs_give() {
    let layout = ConvLayout::detect(&cpu());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // MLAS has NCHWc kernels on every AVX2 CPU: finding none means the probe broke.
        assert!(matches!(layout, ConvLayout::Nchwc { .. }), "{layout:?}");
    }
    if layout == ConvLayout::Onnx {
        eprintln!("SKIPPED: ONNX Runtime offers no NCHWc convolutions on this CPU");
        return;
    }
    let mut r = rng(5);
    let shape = Block5Shape { channels: [16, 32, 16, 16], height: 5, width: 7 };
    let w = random_weights(shape.channels, &mut r);
    let x = random_input(3, &shape, &mut r);
    let [ph, pw, c] = shape.output();
    let probe = Array4::from_shape_simple_fn((3, ph, pw, c), || r.random_range(-1.0..1.0));
    let run = |layout| {
        let mut b5 = Block5::with_layout(shape, &cpu(), layout).unwrap();
        let (out, trace) = b5.forward_train(x.clone(), &w).unwrap();
        assert_eq!(b5.forward(x.view(), &w).unwrap(), out);
        (out, tensors(&b5.backward(&trace, &w, probe.view()).unwrap()))
    };
    let (out, grads) = run(layout);
    let (want_out, want_grads) = run(ConvLayout::Onnx);
    for (a, b) in out.iter().zip(&want_out) {
        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    for (g, want) in grads.iter().zip(&want_grads) {
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-4 * scale, "{a} vs {b} (scale {scale})");
        }
    }
}

fn small_head(inputs: usize, outputs: usize, dropout: f64, rng: &mut ChaCha8Rng) -> Head<f32> {
    let mut head = Head::<f32>::new(inputs, &[5], outputs, dropout, rng);
    for l in &mut head.layers {
        l.bias.mapv_inplace(|_| rng.random_range(-0.3..0.3));
    }
    head
}

#[test]
fn block5_and_head_chain_gradients_match_finite_differences() {
    // Two classes (sigmoid) and three (softmax), the head reading flattened or averaged maps.
    let cases = [(2, [0u32, 1, 1, 0], Pool::Flatten), (3, [0, 2, 1, 2], Pool::Flatten), (3, [0, 2, 1, 2], Pool::Avg)];
    for (classes, labels, pool) in cases {
        let mut r = rng(3);
        let shape = SHAPES[0];
        let w = random_weights(shape.channels, &mut r);
        let x = random_input(4, &shape, &mut r);
        let loss_fn = Loss::for_classes(classes);
        let map = shape.output();
        let head = small_head(pool.width(&map), loss_fn.outputs(), 0.5, &mut r).with_pool(pool);
        let mut trainer =
            Trainer::new(Block5::new(shape, &cpu()).unwrap(), w.clone(), head.clone(), Optimizer::RMSPROP, 0);
        let g = trainer.gradients(x.clone(), &labels, false).unwrap();

        let (x64, head64) = (f64_of(&x), head.cast::<f64>());
        let t64 = loss_fn.targets::<f64>(&labels, 0.0);
        let loss = |w: &RefWeights, head: &Head<f64>| {
            let f = reference::block5(&x64, w);
            let flat = f.view().into_shape_with_order((4, f.len() / 4)).unwrap().to_owned();
            let input = head.pool.forward(flat.view(), &map);
            loss_fn.forward(head.logits(input.view()).as_slice().unwrap(), &t64, None).0
        };
        let w64 = RefWeights::of(&w);
        let numeric = numeric_gradients(&w64, |w| loss(w, &head64));
        let case = format!("{classes} classes, {pool:?}");
        assert_close(&tensors(&g.block5), &numeric, 2e-4, &format!("block 5 through the head, {case}"));
        // The head's first layer (whose input gradient feeds block 5) too.
        let mut k = head64.layers[0].kernel.clone();
        let num_k = Array2::from_shape_fn(k.dim(), |(i, j)| {
            let orig = k[[i, j]];
            let mut at = |v: f64| {
                k[[i, j]] = v;
                let mut h = head64.clone();
                h.layers[0].kernel = k.clone();
                loss(&w64, &h)
            };
            let d = (at(orig + 1e-6) - at(orig - 1e-6)) / 2e-6;
            k[[i, j]] = orig;
            d
        });
        let scale = num_k.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        for (a, n) in g.head[0].kernel.iter().zip(&num_k) {
            assert!((*a as f64 - n).abs() <= 2e-4 * scale, "head kernel, {case}: {a} vs {n}");
        }
        assert!((g.loss - loss(&w64, &head64)).abs() < 1e-5, "{case}");
    }
}

#[test]
fn one_sgd_step_moves_every_weight_by_minus_lr_times_its_gradient() {
    let mut r = rng(4);
    let shape = SHAPES[1];
    let w = random_weights(shape.channels, &mut r);
    let x = random_input(3, &shape, &mut r);
    let labels = [1u32, 0, 1];
    // No dropout, so the step's gradients are the ones computed separately.
    let head = small_head(shape.output().iter().product(), 1, 0.0, &mut r);
    let sgd = Optimizer::Sgd { momentum: 0.9, nesterov: false };
    let mut trainer = Trainer::new(Block5::new(shape, &cpu()).unwrap(), w.clone(), head.clone(), sgd, 0);
    let g = trainer.gradients(x.clone(), &labels, false).unwrap();
    let lr = 0.05;
    let mut tally = Tally::new(Loss::Binary);
    trainer.step(x, &labels, lr, &mut tally).unwrap();
    assert_eq!(tally.samples(), 3);
    // First step with momentum: m = -lr·g, w += m.
    for (after, (before, grad)) in tensors(&trainer.weights).iter().zip(tensors(&w).iter().zip(tensors(&g.block5))) {
        for ((&a, &b), &gr) in after.iter().zip(before).zip(&grad) {
            assert_eq!(a, b + (0.0 - lr as f32 * gr), "block 5 weight");
        }
    }
    for (after, (before, grad)) in trainer.head.layers.iter().zip(head.layers.iter().zip(&g.head)) {
        let want = &before.kernel + &(&grad.kernel * -(lr as f32));
        assert_eq!(after.kernel, want, "head kernel");
    }
    assert!(tensors(&g.block5).iter().all(|t| t.iter().any(|&v| v != 0.0)), "every tensor moved");
}

#[test]
fn block5_optimizer_follows_keras_sgd_momentum() {
    let w = Block5Weights {
        convs: std::array::from_fn(|i| Conv {
            kernel: Array4::from_elem((3, 3, 1, 1), i as f32),
            bias: Array1::from_elem(1, 1.0),
        }),
    };
    let mut g = w.zeros_like();
    g.convs[1].kernel.fill(2.0);
    g.convs[2].bias.fill(-1.0);
    let (lr, mu) = (0.1f32, 0.9f32);
    let sgd = Optimizer::Sgd { momentum: mu as f64, nesterov: false };
    let mut opt = OptimizerState::new(sgd, Default::default(), w.sizes());
    let mut after = w.clone();
    opt.step(after.params(&g), lr as f64);
    opt.step(after.params(&g), lr as f64);
    // m1 = -lr·g; m2 = μ·m1 - lr·g; w2 = w + m1 + m2.
    let moved = |w: f32, g: f32| {
        let m1 = 0.0 - lr * g;
        let m2 = mu * m1 - lr * g;
        w + m1 + m2
    };
    assert_eq!(after.convs[0], w.convs[0]);
    assert!(after.convs[1].kernel.iter().all(|&v| v == moved(1.0, 2.0)));
    assert_eq!(after.convs[2].bias[0], moved(1.0, -1.0));
    assert_eq!(after.convs[2].kernel, w.convs[2].kernel);
}

/// A tiny VGG16-shaped model prepared like the real one.
fn tiny_model(dir: &std::path::Path) -> crate::inputs::PreparedModel {
    let src = dir.join("tiny.onnx");
    sd_onnx::save(&sd_model::testing::tiny_vgg(&[2, 3, 4, 5, 6], sd_model::structure::Layout::Nhwc, 3), &src).unwrap();
    sd_model::prepare(&src, &dir.join("model"), &sd_model::FingerprintCheck::Skip, None).unwrap();
    crate::inputs::PreparedModel::load(&dir.join("model"), Default::default()).unwrap()
}

#[test]
fn on_a_prepared_model_block5_gives_the_conv_base_features_and_the_classifier_the_rust_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let size = sd_data::image::ImageSize { width: 64, height: 48 };
    let shape = model.block5_shape(size);
    assert_eq!((shape.channels, shape.height, shape.width), ([5, 6, 6, 6], 3, 4));
    let mut r = rng(5);
    let images = Array4::from_shape_simple_fn((3, 48, 64, 3), || r.random_range(-1.0f32..1.0));

    let mut frozen = sd_runtime::Model::load(&model.frozen_base, &cpu()).unwrap();
    let b4: Array4<f32> = frozen.run(images.view().into_dyn()).unwrap().into_dimensionality().unwrap();
    let mut b5 = Block5::new(shape, &cpu()).unwrap();
    let ours = b5.forward(b4.view(), &model.weights).unwrap();
    let mut conv_base = sd_runtime::Model::load(model.dir.conv_base(), &cpu()).unwrap();
    let theirs = conv_base.run(images.view().into_dyn()).unwrap();
    assert_eq!(ours.shape(), theirs.shape());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }

    // Trained-looking weights: perturb block 5 and use a random head.
    let mut weights = model.weights.clone();
    weights.convs[2].kernel.mapv_inplace(|v| v * 1.3 + 0.01);
    let head = small_head(shape.output().iter().product(), 1, 0.5, &mut r);
    let meta = sd_data::layout::classifier::ClassifierMeta { size: Some(size), ..Default::default() };
    let float = crate::export::ClassifierInput::Float;
    let classifier =
        crate::export::classifier(&model.frozen_base, &weights, &shape, &head, &meta, float, None).unwrap();
    let path = dir.path().join("classifier.onnx");
    sd_onnx::save(&classifier, &path).unwrap();
    let mut c = sd_runtime::Model::load(&path, &cpu()).unwrap();
    assert_eq!(c.input_shape, [-1, 48, 64, 3]);
    assert_eq!(c.output_shape, [-1, 1]);
    let p: ArrayD<f32> = c.run(images.view().into_dyn()).unwrap();
    let mut trainer = Trainer::new(b5, weights, head.clone(), Optimizer::RMSPROP, 0);
    let z = trainer.logits(&b4).unwrap();
    let want: Vec<f32> = z.iter().map(|&z| sd_train::loss::sigmoid(z)).collect();
    assert_eq!(p.shape(), [3, 1]);
    for (a, b) in p.index_axis(Axis(1), 0).iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert!(want.iter().any(|&v| (v - want[0]).abs() > 1e-4), "the probabilities differ between images: {want:?}");

    // The uint8 classifier preprocesses inside: raw RGB bytes give what the float one gives on
    // the same bytes preprocessed on the CPU, for both preprocessings.
    let pixels = ndarray::Array4::from_shape_simple_fn((3, 48, 64, 3), || r.random::<u8>());
    for preprocess in [sd_data::Preprocess::Caffe, sd_data::Preprocess::Rescale] {
        let meta = sd_data::layout::classifier::ClassifierMeta { preprocess: Some(preprocess), ..meta.clone() };
        let uint8 = crate::export::ClassifierInput::Uint8;
        let m =
            crate::export::classifier(&model.frozen_base, &trainer.weights, &shape, &head, &meta, uint8, None).unwrap();
        sd_onnx::save(&m, &path).unwrap();
        let mut c = sd_runtime::Model::load(&path, &cpu()).unwrap();
        assert_eq!((c.input_element, c.input_shape.as_slice()), (sd_runtime::Element::U8, &[-1, 48, 64, 3][..]));
        let got = c.run_u8(pixels.view().into_dyn()).unwrap();
        let mut x = Array4::<f32>::zeros(pixels.dim());
        preprocess.write_hwc_bytes(pixels.as_slice().unwrap(), x.as_slice_mut().unwrap());
        let m =
            crate::export::classifier(&model.frozen_base, &trainer.weights, &shape, &head, &meta, float, None).unwrap();
        sd_onnx::save(&m, &path).unwrap();
        let want = sd_runtime::Model::load(&path, &cpu()).unwrap().run(x.view().into_dyn()).unwrap();
        assert_eq!(got, want, "{preprocess}");
    }

    // A head over three classes that averages the maps (`train-head --pool avg`): the exported
    // graph pools as the trainer does.
    let pooled = small_head(Pool::Avg.width(&shape.output()), 3, 0.5, &mut r).with_pool(Pool::Avg);
    let m =
        crate::export::classifier(&model.frozen_base, &trainer.weights, &shape, &pooled, &meta, float, None).unwrap();
    sd_onnx::save(&m, &path).unwrap();
    let p: ArrayD<f32> = sd_runtime::Model::load(&path, &cpu()).unwrap().run(images.view().into_dyn()).unwrap();
    let b5 = Block5::new(shape, &cpu()).unwrap();
    let z = Trainer::new(b5, trainer.weights.clone(), pooled, Optimizer::RMSPROP, 0).logits(&b4).unwrap();
    let want = Loss::for_classes(3).probabilities(&z);
    assert_eq!(p.shape(), [3, 3]);
    for (a, b) in p.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    // With an int8 frozen part, block 5 is quantised too, calibrated on block 4's maps: each of
    // its convolutions reads dequantised int8 weights and inputs, and the probabilities stay
    // close to the float block's.
    let calibration = crate::export::Int8Calibration { maps: b4.clone(), session: cpu() };
    let (weights, head) = (&trainer.weights, &head);
    let m =
        crate::export::classifier(&model.frozen_base, weights, &shape, head, &meta, float, Some(&calibration)).unwrap();
    let graph = m.graph.as_ref().unwrap();
    let in_block5 =
        |op: &str| graph.node.iter().filter(|n| n.op_type() == op && n.name().starts_with("finetune/block5/")).count();
    assert_eq!(in_block5("Conv"), 3);
    assert!(in_block5("DequantizeLinear") >= 6, "{} DequantizeLinear in block 5", in_block5("DequantizeLinear"));
    sd_onnx::save(&m, &path).unwrap();
    let q: ArrayD<f32> = sd_runtime::Model::load(&path, &cpu()).unwrap().run(images.view().into_dyn()).unwrap();
    let m = crate::export::classifier(&model.frozen_base, weights, &shape, head, &meta, float, None).unwrap();
    sd_onnx::save(&m, &path).unwrap();
    let f: ArrayD<f32> = sd_runtime::Model::load(&path, &cpu()).unwrap().run(images.view().into_dyn()).unwrap();
    for (a, b) in q.iter().zip(&f) {
        assert!((a - b).abs() < 0.02, "int8 block 5 {a} vs float {b}");
    }
    assert_ne!(q, f, "the int8 block 5 computes in int8");
}
