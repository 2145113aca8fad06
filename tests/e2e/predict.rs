//! End-to-end tests of `predict` on a classifier fine-tuned from a tiny VGG16-shaped model.

use std::path::Path;

use crate::common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tiny recipe through finetune: `out/classifier.onnx`.
fn classifier(d: &Path) {
    tiny_recipe(d);
    let args = ["--train", "train", "--validation", "validation", "--model", "model", "--head", "head", "--out", "out"];
    ok(run(
        "finetune",
        &[&args[..], &["--size", "32", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "-q"]].concat(),
        d,
    ));
}

#[test]
fn predicts_every_image_with_metrics_and_confusion_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    // A set with a misleading image: a reddish "dog" (the classifier calls it a cat).
    colour_dataset(&d.join("test"), 4, 9);
    std::fs::copy(d.join("test/cats/cats.0.png"), d.join("test/dogs/red-dog.png")).unwrap();
    let stdout = ok(run(
        "predict",
        &["--model", "out/classifier.onnx", "--data", "test", "--out", "pred", "--batch-size", "3"],
        d,
    ));
    let m = json(&d.join("pred/metrics.json"));
    assert_eq!(m["samples"], 9);
    assert_eq!(m["confusion_matrix"], serde_json::json!([[4, 0], [1, 4]]), "{m}");
    assert_eq!(m["correct"], 8);
    assert!((m["accuracy"].as_f64().unwrap() - 8.0 / 9.0).abs() < 1e-12);
    // Recall (the per-class accuracy) and precision.
    assert_eq!(
        (m["per_class"]["cats"]["recall"].as_f64(), m["per_class"]["dogs"]["recall"].as_f64()),
        (Some(1.0), Some(0.8))
    );
    assert_eq!(m["per_class"]["cats"]["precision"], 0.8);
    assert_eq!((m["top_k"]["k"].as_u64(), m["top_k"]["accuracy"].as_f64()), (Some(1), m["accuracy"].as_f64()));
    assert_eq!(m["classes"], serde_json::json!(["cats", "dogs"]));
    // Defaults come from the classifier's metadata.
    assert_eq!((m["size"]["width"].as_u64(), m["preprocess"].as_str()), (Some(32), Some("caffe")));
    assert!(m["loss"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("accuracy 0.8889 (8/9)"), "{stdout}");

    let csv = std::fs::read_to_string(d.join("pred/predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,label,predicted,confidence,p_cats,p_dogs");
    assert_eq!(lines.len(), 10);
    let red_dog = lines.iter().find(|l| l.starts_with("dogs/red-dog.png,")).unwrap();
    assert!(red_dog.starts_with("dogs/red-dog.png,dogs,cats,"), "{red_dog}");
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        let [confidence, cats, dogs] = [3, 4, 5].map(|i| f[i].parse::<f64>().unwrap());
        assert!((cats + dogs - 1.0).abs() < 2e-6 && confidence == cats.max(dogs), "{l}");
        assert_eq!(f[2] == "dogs", dogs > 0.5, "{l}");
    }
    // Without --out: the summary only.
    let stdout = ok(run("predict", &["--model", "out/classifier.onnx", "--data", "validation", "-q"], d));
    assert!(stdout.is_empty());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    let fails = |args: &[&str], needles: &[&str]| {
        let o = run("predict", &[args, &["--out", "pred"]].concat(), d);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!d.join("pred").exists(), "{args:?} left output behind");
    };
    fails(&["--model", "nope.onnx", "--data", "validation"], &["nope.onnx"]);
    fails(&["--model", "model/conv_base.onnx", "--data", "validation"], &["conv_base.onnx", "[N, 1]"]);
    fails(&["--model", "out/classifier.onnx", "--data", "validation", "--size", "64"], &["--size 64x64", "32x32"]);
    fails(&["--model", "out/classifier.onnx", "--data", "nowhere"], &["nowhere"]);
    std::fs::create_dir_all(d.join("birds/birds")).unwrap();
    std::fs::create_dir_all(d.join("birds/cats")).unwrap();
    std::fs::copy(d.join("validation/cats/cats.0.png"), d.join("birds/birds/b.png")).unwrap();
    std::fs::copy(d.join("validation/cats/cats.0.png"), d.join("birds/cats/c.png")).unwrap();
    fails(&["--model", "out/classifier.onnx", "--data", "birds"], &["birds", "classifier"]);
}
