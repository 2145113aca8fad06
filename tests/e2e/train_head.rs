//! End-to-end tests of `train-head` on small synthetic bottleneck features.

use std::path::Path;

use crate::common::{ok, python_for, rel_max_diff, run, stderr, usage_error};
use ndarray::{Array1, Array4, ArrayD, Axis};
use sd_runtime::{Device, Model, SessionConfig};

const SHAPE: [usize; 3] = [2, 2, 8];

/// A linearly separable split in `dir`: class 1 has larger values in channel 0.
fn write_split(dir: &Path, n: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let labels = Array1::from_shape_fn(n, |i| (i % 2) as i64);
    let features = Array4::from_shape_fn((n, SHAPE[0], SHAPE[1], SHAPE[2]), |(i, _, _, c)| {
        let signal = if c == 0 { 2.0 * labels[i] as f32 } else { 0.0 };
        (signal + noise()).max(0.0)
    });
    sd_data::npy::write(dir.join("features.npy"), &features).unwrap();
    sd_data::npy::write(dir.join("labels.npy"), &labels).unwrap();
    std::fs::write(dir.join("classes.json"), r#"{"cats": 0, "dogs": 1}"#).unwrap();
}

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--train-features", "train", "--validation-features", "validation", "--out", out, "-q"];
    a.extend_from_slice(&["--epochs", "12", "--hidden", "16", "--seed", "3"]);
    a.extend_from_slice(extra);
    a
}

fn read_f32(path: &Path) -> ArrayD<f32> {
    sd_data::npy::read::<f32>(path).unwrap()
}

#[test]
fn trains_writes_every_output_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    write_split(&dir.path().join("train"), 48, 1);
    write_split(&dir.path().join("validation"), 20, 2);
    ok(run("train-head", &train_args("out", &["--preset", "keras"]), dir.path()));
    let out = dir.path().join("out");
    for f in [
        "dense1_kernel.npy",
        "dense1_bias.npy",
        "dense2_kernel.npy",
        "dense2_bias.npy",
        "head.json",
        "head.onnx",
        "metrics.json",
        "history.csv",
        "curves.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(read_f32(&out.join("dense1_kernel.npy")).shape(), [32, 16]);
    assert_eq!(read_f32(&out.join("dense2_kernel.npy")).shape(), [16, 1]);

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["epochs"], 12);
    assert_eq!(metrics["last"]["val_acc"], 1.0, "{metrics}");
    assert_eq!(metrics["config"]["seed"], 3);
    assert_eq!(metrics["config"]["hidden"], serde_json::json!([16]));
    assert_eq!(metrics["config"]["optimizer"]["name"], "rmsprop");
    assert_eq!(metrics["train"]["samples"], 48);
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 13);
    assert!(history.starts_with("epoch,loss,acc,val_loss,val_acc"));

    // Same seed, inputs and options: byte-identical weights and model.
    ok(run("train-head", &train_args("again", &["--preset", "keras"]), dir.path()));
    for f in ["dense1_kernel.npy", "dense2_kernel.npy", "dense1_bias.npy", "head.onnx"] {
        let (a, b) = (std::fs::read(out.join(f)).unwrap(), std::fs::read(dir.path().join("again").join(f)).unwrap());
        assert!(a == b, "{f} differs between two identical runs");
    }
}

#[test]
fn onnx_head_matches_the_rust_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_split(&dir.path().join("train"), 32, 1);
    write_split(&dir.path().join("validation"), 16, 2);
    ok(run("train-head", &train_args("out", &["--hidden", "12,6"]), dir.path()));
    let out = dir.path().join("out");

    let (head, spec) = sd_train::head::export::load(&out).unwrap();
    assert_eq!(head.hidden(), [12, 6]);
    let x = read_f32(&dir.path().join("validation/features.npy"));
    let flat = x.view().into_shape_with_order((16, 32)).unwrap().into_dimensionality().unwrap();
    let rust = head.logits(flat).column(0).mapv(sd_train::loss::sigmoid);

    let mut model = Model::load(out.join(&spec.onnx), &SessionConfig { device: Device::Cpu, threads: Some(1) })
        .expect("ONNX Runtime is set up (scripts/setup.sh)");
    let onnx = model.run(x.view()).unwrap();
    assert_eq!(onnx.shape(), [16, 1]);
    let onnx = onnx.index_axis(Axis(1), 0).to_owned();
    let diff = rel_max_diff(onnx.as_slice().unwrap(), rust.as_slice().unwrap());
    assert!(diff < 1e-5, "ONNX Runtime and the Rust forward pass differ by {diff}");

    // And from Python, the way a user would load it.
    let Some(py) = python_for("the Python onnxruntime check of head.onnx") else { return };
    sd_data::npy::write(dir.path().join("rust.npy"), &rust).unwrap();
    let script = "import numpy as np, onnxruntime as ort\n\
        s = ort.InferenceSession('out/head.onnx', providers=['CPUExecutionProvider'])\n\
        x = np.load('validation/features.npy')\n\
        p = s.run(['probability'], {'features': x})[0]\n\
        r = np.load('rust.npy')\n\
        assert p.shape == (16, 1), p.shape\n\
        d = float(np.abs(p[:, 0] - r).max())\n\
        assert d < 1e-5, d\n\
        print('python ok')";
    let o = std::process::Command::new(py).arg("-c").arg(script).current_dir(dir.path()).output().unwrap();
    assert_eq!(ok(o).trim(), "python ok");
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_split(&dir.path().join("train"), 8, 1);
    write_split(&dir.path().join("validation"), 4, 2);
    let fails = |args: &[&str], needles: &[&str]| {
        let o = run("train-head", args, dir.path());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.path().join("out").exists(), "{args:?} left output behind");
    };
    let base = ["--train", "train", "--validation", "validation", "--out", "out", "--epochs", "1"];

    // Labels that don't match the features.
    sd_data::npy::write(dir.path().join("train/labels.npy"), &Array1::from(vec![0i64, 1, 0])).unwrap();
    fails(&base, &["train/labels.npy", "8 samples"]);
    // Wrong dtype.
    sd_data::npy::write(dir.path().join("train/labels.npy"), &Array1::from(vec![0f32; 8])).unwrap();
    fails(&base, &["train/labels.npy", "<i8"]);
    write_split(&dir.path().join("train"), 8, 1);
    // Missing file.
    std::fs::remove_file(dir.path().join("validation/features.npy")).unwrap();
    fails(&base, &["validation/features.npy"]);
    // Train and validation from different models.
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    sd_data::npy::write(dir.path().join("validation/features.npy"), &Array4::<f32>::zeros((4, 1, 1, 32))).unwrap();
    fails(&base, &["train/features.npy", "validation/features.npy", "[2, 2, 8]", "[1, 1, 32]"]);
    write_split(&dir.path().join("validation"), 4, 2);
    // Bad options: usage errors, before any work.
    for (flag, value) in
        [("--dropout", "1.5"), ("--epochs", "0"), ("--batch-size", "0"), ("--lr", "0"), ("--hidden", "8,0")]
    {
        usage_error("train-head", &[&base[..], &[flag, value]].concat(), dir.path(), flag);
        assert!(!dir.path().join("out").exists());
    }
}
