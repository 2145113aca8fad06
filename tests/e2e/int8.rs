//! The int8 conv base (`prepare-model --quantize int8`) on the real VGG16: calibration recorded
//! in model.json, the QDQ graph, and its features against the float model's on photos it was
//! not calibrated on (cosine similarity per image), through `bottleneck --precision int8`.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use sd_data::layout::model::{CONV_BASE_INT8, FROZEN_BASE_INT8, ModelDir};
use sd_data::loader::Loader;
use sd_data::{Dataset, ModelInput};
use sd_runtime::{Device, Model, SessionConfig};

/// Per-image cosine similarity of two `[N, ...]` feature arrays.
fn cosines(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>) -> Vec<f32> {
    assert_eq!(a.shape(), b.shape());
    let n = a.shape()[0];
    let (a, b) = (a.as_slice().unwrap(), b.as_slice().unwrap());
    let per = a.len() / n;
    (0..n)
        .map(|i| {
            let (x, y) = (&a[i * per..(i + 1) * per], &b[i * per..(i + 1) * per]);
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
            dot / (norm(x) * norm(y))
        })
        .collect()
}

fn bottleneck(data: &Path, model: &Path, out: &Path, precision: &str) -> ndarray::ArrayD<f32> {
    let args = ["--data", data.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    ok(run("bottleneck", &[&args[..], &["--precision", precision, "--device", "cpu", "-q"]].concat(), &root()));
    sd_data::npy::read::<f32>(out.join("features.npy")).unwrap()
}

/// Tolerance: the int8 features point the same way as the float ones on every image.
const MIN_COSINE: f32 = 0.99;

#[test]
fn int8_models_give_the_float_features_within_cosine_0_99_on_photos_not_calibrated_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let calibrate = root().join("data/sample/train");
    ok(run(
        "prepare-model",
        &[
            "--source",
            source_model().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quantize",
            "int8",
            "--calibrate",
            calibrate.to_str().unwrap(),
            "--calibrate-images",
            "32",
            "--device",
            "cpu",
            "-q",
        ],
        &root(),
    ));

    // model.json records the calibration: 32 images, min-max, a range per quantised tensor (the
    // first convolution's input and the 13 ReLU outputs; pools share their input's).
    let info = ModelDir::new(&out).info().unwrap();
    let int8 = info.int8.expect("model.json has the int8 section");
    assert_eq!((int8.conv_base.as_str(), int8.frozen_base.as_str()), (CONV_BASE_INT8, FROZEN_BASE_INT8));
    let c = &int8.calibration;
    assert_eq!((c.images, c.method.as_str(), c.folder.as_str()), (32, "minmax", calibrate.to_str().unwrap()));
    assert_eq!(c.ranges.len(), 14, "{:?}", c.ranges.keys());
    let relu: Vec<_> = c.ranges.iter().filter(|(k, _)| k.ends_with("Relu:0")).collect();
    assert_eq!(relu.len(), 13);
    assert!(relu.iter().all(|(_, [lo, hi])| *lo == 0.0 && *hi > 0.0), "{relu:?}");

    // The QDQ form: int8 weights behind DequantizeLinear for every convolution, ReLUs folded
    // into the QuantizeLinear after them; a quarter of the float file's size.
    let g = sd_onnx::load(out.join(CONV_BASE_INT8)).unwrap().graph.unwrap();
    let count = |op: &str| g.node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count();
    assert_eq!((count("Conv"), count("Relu")), (13, 0));
    assert!(count("QuantizeLinear") >= 13 && count("DequantizeLinear") >= 13 * 3);
    let int8_weights = g.initializer.iter().filter(|t| t.data_type == Some(sd_onnx::dtype::INT8) && t.dims.len() == 4);
    assert_eq!(int8_weights.count(), 13);
    let size = |f: &str| std::fs::metadata(out.join(f)).unwrap().len() as f64;
    assert!(size(CONV_BASE_INT8) < 0.3 * size("conv_base.onnx"));

    // Conv base through bottleneck: validation photos (not among the calibration images).
    let data = root().join("data/sample/validation");
    let fp32 = bottleneck(&data, &out.join("conv_base.onnx"), &dir.path().join("f32"), "fp32");
    let int8 = bottleneck(&data, &out.join("conv_base.onnx"), &dir.path().join("i8"), "int8");
    let cos = cosines(&fp32, &int8);
    let worst = cos.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(worst >= MIN_COSINE, "worst cosine {worst} over {} images", cos.len());
    assert_ne!(fp32, int8, "the int8 model really is another computation");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("i8/bottleneck.json")).unwrap()).unwrap();
    assert!(meta["model"].as_str().unwrap().ends_with(CONV_BASE_INT8), "{meta}");

    // The frozen part (block4_pool), as finetune runs it.
    let dataset = Dataset::scan(&data).unwrap();
    let samples: Arc<[_]> = dataset.samples.iter().step_by(12).cloned().collect();
    let batch = Loader::in_order(samples, ModelInput::RECIPE.loader(16)).next().unwrap().unwrap();
    let x = ModelInput::RECIPE.tensor(&batch);
    let cpu = SessionConfig { device: Device::Cpu, threads: None };
    let run_frozen = |f: &str| Model::load(out.join(f), &cpu).unwrap().run(x.view().into_dyn()).unwrap();
    let (fp32, int8) = (run_frozen("frozen_base.onnx"), run_frozen(FROZEN_BASE_INT8));
    assert_eq!(int8.shape(), [batch.len(), 9, 9, 512]);
    let cos = cosines(&fp32, &int8);
    assert!(cos.iter().all(|&c| c >= MIN_COSINE), "{cos:?}");
}

#[test]
fn int8_flags_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    usage_error("prepare-model", &["--quantize", "int8"], dir.path(), "--calibrate");
    usage_error("prepare-model", &["--calibrate", "data"], dir.path(), "--quantize");
    usage_error(
        "bottleneck",
        &["--data", "d", "--model", "m", "--out", "o", "--precision", "fp16"],
        dir.path(),
        "fp16",
    );
    // A model folder without the int8 files: the error names the file and the command that makes it.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    // The other inputs are what the stages take, so that the checks reach the model.
    colour_dataset(&dir.path().join("d"), 1, 1);
    std::fs::create_dir(dir.path().join("head")).unwrap();
    for f in ["conv_base.onnx", "frozen_base.onnx"] {
        std::fs::write(model.join(f), b"not read").unwrap();
    }
    let args = ["--data", "d", "--model", "model/conv_base.onnx", "--out", "o", "--precision", "int8"];
    let o = run("bottleneck", &args, dir.path());
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(CONV_BASE_INT8) && e.contains("prepare-model --out model --quantize int8 --calibrate"), "{e}");
    let o = run(
        "finetune",
        &[
            "--train",
            "d",
            "--validation",
            "d",
            "--model-dir",
            "model",
            "--head",
            "head",
            "--out",
            "o",
            "--precision",
            "int8",
        ],
        dir.path(),
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(FROZEN_BASE_INT8) && e.contains("--quantize int8"), "{e}");
}

#[test]
fn finetune_trains_on_the_int8_frozen_part_and_its_classifier_embeds_it_with_an_int8_block5() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let prepare = ["--source", "tiny.onnx", "--out", "model", "--skip-fingerprint", "--quantize", "int8"];
    ok(run("prepare-model", &[&prepare[..], &["--calibrate", "train", "--size", "32", "-q"]].concat(), d));
    let args = ["--train", "train", "--validation", "validation", "--model", "model", "--head", "head", "--out", "ft"];
    let more = ["--size", "32", "--epochs", "2", "--batch-size", "4", "--no-augment", "--device", "cpu", "-q"];
    ok(run("finetune", &[&args[..], &more, &["--precision", "int8"]].concat(), d));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("ft/metrics.json")).unwrap()).unwrap();
    assert_eq!(m["precision"], "int8");

    // classifier.onnx carries the int8 frozen part and quantises block 5 too (each of its three
    // convolutions reads a dequantised input and kernel); on these far-apart images the int8
    // block 5 does not change a decision, so predict gets finetune's own evaluation.
    let g = sd_onnx::load(d.join("ft/classifier.onnx")).unwrap().graph.unwrap();
    assert!(g.node.iter().any(|n| n.op_type.as_deref() == Some("QuantizeLinear")));
    let block5_dq = g.node.iter().filter(|n| {
        n.op_type.as_deref() == Some("DequantizeLinear")
            && n.name.as_deref().is_some_and(|s| s.starts_with("finetune/block5/"))
    });
    assert!(block5_dq.count() >= 6);
    ok(run("predict", &["--model", "ft/classifier.onnx", "--data", "validation", "--out", "p", "--device", "cpu"], d));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("p/metrics.json")).unwrap()).unwrap();
    assert_eq!(p["accuracy"], m["evaluation"]["accuracy"], "{p}");
    assert!(p["accuracy"].is_f64() && p["samples"] == 6, "{p}");
}
