//! Five classes end to end on real photos (data/flowers-sample, real VGG16): bottleneck,
//! train-head (softmax), finetune, predict; and the errors a multi-class user runs into.

use std::path::{Path, PathBuf};

use crate::common::*;

const CLASSES: [&str; 5] = ["daisy", "dandelion", "rose", "sunflower", "tulip"];

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flowers() -> PathBuf {
    root().join("data/flowers-sample")
}

fn features(d: &Path, split: &str, data: &Path) {
    let model = prepared_model().join("conv_base.onnx");
    let out = format!("features/{split}");
    let args = ["--data", data.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out", &out, "--device", "cpu"];
    ok(run("bottleneck", &[&args[..], &["-q"]].concat(), d));
}

#[test]
fn five_classes_through_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for split in ["train", "validation"] {
        features(d, split, &flowers().join(split));
    }
    assert_eq!(
        json(&d.join("features/train/classes.json")),
        serde_json::json!({"daisy": 0, "dandelion": 1, "rose": 2, "sunflower": 3, "tulip": 4})
    );

    let head = ["--train-features", "features/train", "--validation-features", "features/validation", "--out", "head"];
    ok(run("train-head", &[&head[..], &["--epochs", "30", "--seed", "1", "-q"]].concat(), d));
    let m = json(&d.join("head/metrics.json"));
    let e = &m["evaluation"];
    assert_eq!((e["samples"].as_u64(), e["top_k"]["k"].as_u64()), (Some(20), Some(4)));
    assert_eq!(e["classes"], serde_json::json!(CLASSES));
    let matrix = e["confusion_matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 5);
    assert!(matrix.iter().all(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>() == 4));
    assert_eq!(e["accuracy"], m["exported"]["val_acc"], "the evaluation is the exported epoch's");
    // Real VGG16 features tell flowers apart far above chance (0.2), even from 12 photos a class.
    assert!(e["accuracy"].as_f64().unwrap() >= 0.6, "{e}");
    assert!(e["macro_f1"].as_f64().unwrap() > 0.5 && e["top_k"]["accuracy"].as_f64().unwrap() >= 0.9, "{e}");
    for c in CLASSES {
        let f1 = e["per_class"][c]["f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1), "{c}: {f1}");
    }
    let spec = json(&d.join("head/head.json"));
    assert_eq!(
        (spec["layers"][1]["units"].as_u64(), spec["layers"][1]["activation"].as_str()),
        (Some(5), Some("softmax"))
    );
    assert_eq!(spec["onnx_output"], "probabilities");
    assert!(spec.get("pool").is_none(), "the recipe's Flatten is the default, and head.json stays as it was");

    // The head that averages each map (flowers' better head) is the one fine-tuned below.
    let avg = ["--pool", "avg", "--epochs", "30", "--seed", "1", "-q"];
    ok(run("train-head", &[&head[..5], &["head-avg"], &avg[..]].concat(), d));
    let spec = json(&d.join("head-avg/head.json"));
    assert_eq!((spec["pool"].as_str(), spec["input_shape"].clone()), (Some("avg"), serde_json::json!([4, 4, 512])));
    assert_eq!(spec["layers"][0]["units"], 256);
    let kernel = std::fs::read(d.join("head-avg/dense1_kernel.npy")).unwrap();
    let floats = 512 * 256 * 4;
    assert!((floats..floats + 1024).contains(&kernel.len()), "the first layer reads 512 averages, not 4·4·512 values");
    let e = &json(&d.join("head-avg/metrics.json"))["evaluation"];
    assert!(e["accuracy"].as_f64().unwrap() >= 0.6, "{e}");
    let flip = run("train-head", &[&head[..5], &["head-flip", "--pool", "avg", "--flip"]].concat(), d);
    assert_eq!(flip.status.code(), Some(2), "{flip:?}");
    assert!(stderr(&flip).contains("--flip mirrors feature maps"), "{}", stderr(&flip));

    let tune = [
        "--train",
        "train",
        "--validation",
        "validation",
        "--model-dir",
        "model",
        "--head",
        "head-avg",
        "--out",
        "tuned",
    ];
    std::os::unix::fs::symlink(prepared_model(), d.join("model")).unwrap();
    for split in ["train", "validation"] {
        std::os::unix::fs::symlink(flowers().join(split), d.join(split)).unwrap();
    }
    let extra = ["--epochs", "1", "--batch-size", "8", "--label-smoothing", "0.1", "--class-weight", "balanced"];
    ok(run("finetune", &[&tune[..], &extra, &["--device", "cpu", "-q"]].concat(), d));
    let t = json(&d.join("tuned/metrics.json"));
    assert_eq!(t["config"]["label_smoothing"], 0.1);
    assert_eq!(t["config"]["class_weight"], "balanced");
    assert_eq!(t["evaluation"]["confusion_matrix"].as_array().unwrap().len(), 5);

    let out = ok(run("predict", &["--model", "tuned/classifier.onnx", "--data", "validation", "--out", "pred"], d));
    let p = json(&d.join("pred/metrics.json"));
    // The same images through the exported classifier: what finetune measured, image for image.
    assert_eq!(p["confusion_matrix"], t["evaluation"]["confusion_matrix"], "{out}");
    assert_eq!(p["accuracy"], t["exported"]["val_acc"], "predict scores the exported epoch");
    for c in CLASSES {
        assert!(out.contains(&format!("  {c}")), "the console names every class: {out}");
    }
    assert!(out.contains("macro-F1") && out.contains("top-4 accuracy"), "{out}");
    let csv = std::fs::read_to_string(d.join("pred/predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,label,predicted,confidence,p_daisy,p_dandelion,p_rose,p_sunflower,p_tulip");
    assert_eq!(lines.len(), 21);
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        let p: Vec<f64> = f[4..].iter().map(|v| v.parse().unwrap()).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{l}");
        let best = (0..5).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!((f[2], f[3].parse::<f64>().unwrap()), (CLASSES[best], p[best]), "{l}");
    }
}

#[test]
fn class_mismatches_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Validation without tulips (a class only in training).
    let four = d.join("four");
    for c in &CLASSES[..4] {
        std::fs::create_dir_all(four.join(c)).unwrap();
        for f in std::fs::read_dir(flowers().join("validation").join(c)).unwrap().take(1) {
            let f = f.unwrap().path();
            std::fs::copy(&f, four.join(c).join(f.file_name().unwrap())).unwrap();
        }
    }
    features(d, "train", &flowers().join("train"));
    features(d, "four", &four);
    let o = run(
        "train-head",
        &[
            "--train-features",
            "features/train",
            "--validation-features",
            "features/four",
            "--out",
            "head",
            "--epochs",
            "1",
        ],
        d,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("features/four/classes.json") && err.contains("tulip"), "{err}");
    assert!(!d.join("head").exists());

    // An empty class folder names the folder.
    std::fs::create_dir_all(four.join("tulip")).unwrap();
    let model = prepared_model().join("conv_base.onnx");
    let o =
        run("bottleneck", &["--data", "four", "--model", model.to_str().unwrap(), "--out", "x", "--device", "cpu"], d);
    assert!(stderr(&o).contains("four/tulip") && stderr(&o).contains("holds no images"), "{}", stderr(&o));

    // Labels out of range in a hand-edited labels.npy.
    sd_data::npy::write(d.join("features/four/labels.npy"), &ndarray::Array1::from(vec![0i64, 1, 2, 7])).unwrap();
    let o = run(
        "train-head",
        &["--train-features", "features/four", "--validation-features", "features/four", "--out", "head"],
        d,
    );
    assert!(stderr(&o).contains("features/four/labels.npy") && stderr(&o).contains("label 7"), "{}", stderr(&o));

    // A head for five classes, images of two: finetune and predict refuse.
    ok(run(
        "train-head",
        &[
            "--train-features",
            "features/train",
            "--validation-features",
            "features/train",
            "--out",
            "head",
            "--epochs",
            "1",
            "-q",
        ],
        d,
    ));
    colour_dataset(&d.join("two"), 2, 1);
    let tune =
        ["--train", "two", "--validation", "two", "--model-dir", prepared_model().to_str().unwrap(), "--head", "head"];
    let o = run("finetune", &[&tune[..], &["--out", "tuned", "--epochs", "1", "--device", "cpu"]].concat(), d);
    let err = stderr(&o);
    assert!(err.contains("head/head.json") && err.contains("daisy") && err.contains("cats"), "{err}");
    assert!(!d.join("tuned").exists());
}
