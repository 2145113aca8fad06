//! EfficientNet-Lite as the backbone (`prepare-model --backbone`): the pipeline's `lite` param
//! set on the committed sample up to the head (model folder, features, head), the stages taking
//! the input recipe from the model folder, and finetune's clear refusal of a Lite folder.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository's pipeline.yaml and the committed sample in a fresh folder, `.cache` linked.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("pipeline.yaml"), dir.path().join("pipeline.yaml")).unwrap();
    std::os::unix::fs::symlink(root().join(".cache"), dir.path().join(".cache")).unwrap();
    let copied = Command::new("cp").arg("-r").arg(root().join("data/sample")).arg(dir.path().join("sample")).status();
    assert!(copied.unwrap().success());
    dir
}

#[test]
fn the_lite_param_set_runs_the_pipeline_to_the_head_on_the_sample() {
    let weights = root().join(".cache/models/efficientnet-lite0.pth");
    assert!(weights.is_file(), "{} is missing: run scripts/setup.sh", weights.display());
    let dir = project();
    let out = Command::new(PIPELINE)
        .args(["--params", "lite", "--set", "data=sample", "--set", "augment_rounds=1", "--set", "epochs=20"])
        .args(["--set", "device=cpu", "run", "train-head"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let model = json(&dir.path().join("artifacts/model/model.json"));
    assert_eq!(model["backbone"], "efficientnet-lite0");
    assert_eq!(model["weights_verified_against"], "efficientnet-lite0-imagenet");
    assert_eq!(model["image_input"]["resize"], "crop");
    assert_eq!(model["image_input"]["preprocess"], "tf");
    let features = json(&dir.path().join("artifacts/features/validation/bottleneck.json"));
    assert_eq!(features["feature_shape"], serde_json::json!([7, 7, 1280]));
    let head = json(&dir.path().join("artifacts/head/metrics.json"));
    let acc = head["last"]["val_acc"].as_f64().unwrap();
    assert!(acc >= 0.9, "the Lite0 head on the sample: validation accuracy {acc}");

    // bottleneck without input flags takes the model folder's recipe (224, crop, tf).
    let o = run(
        "bottleneck",
        &["--data", "sample/validation", "--model", "artifacts/model/conv_base.onnx", "--out", "f", "-q"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let f = json(&dir.path().join("f/bottleneck.json"));
    assert_eq!((f["size"]["width"].as_u64(), f["preprocess"].as_str()), (Some(224), Some("tf")));
    let a = sd_data::npy::read::<f32>(dir.path().join("f/features.npy")).unwrap();
    let b = sd_data::npy::read::<f32>(dir.path().join("artifacts/features/validation/features.npy")).unwrap();
    assert!(rel_max_diff(a.as_slice().unwrap(), b.as_slice().unwrap()) < 1e-5, "same features as the pipeline's");

    // finetune refuses a Lite folder, naming the backbone and what to do instead.
    let o = run(
        "finetune",
        &[
            "--train",
            "sample/train",
            "--validation",
            "sample/validation",
            "--model",
            "artifacts/model",
            "--head",
            "artifacts/head",
            "--out",
            "ft",
        ],
        dir.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("efficientnet-lite0") && err.contains("not implemented") && err.contains("--backbone vgg16"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.path().join("ft").exists());
}
