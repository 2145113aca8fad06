//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The VGG16 source model fetched by scripts/setup.sh.
pub fn source_model() -> PathBuf {
    let p = root().join(".cache/models/vgg16-keras-imagenet.onnx");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first (the README's test command does)", p.display());
    p
}

/// The Python venv made by scripts/setup.sh (numpy, onnxruntime), if present.
pub fn python() -> Option<PathBuf> {
    let p = root().join(".cache/python/bin/python");
    p.is_file().then_some(p)
}

/// Runs a binary of this package and returns its output.
pub fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    let exe = match bin {
        "prepare-model" => env!("CARGO_BIN_EXE_prepare-model"),
        other => panic!("unknown binary {other}"),
    };
    Command::new(exe).args(args).current_dir(cwd).output().expect("binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Max |a-b| relative to max |b|.
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
