//! Issue 18, trying to break it: damaged images, models that are not a conv base, zero counts,
//! missing and damaged inputs, file names that are not one line. Each case is refused by every
//! stage it reaches, with the file at fault and the fix, and leaves no output behind.

use std::path::Path;

use crate::common::*;

/// The tiny recipe plus a classifier (`out/classifier.onnx`), in `d`.
fn with_classifier(d: &Path) {
    tiny_recipe(d);
    let args = ["--train", "train", "--validation", "validation", "--model", "model", "--head", "head", "--out", "out"];
    let more = ["--size", "32", "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--threads", "1", "-q"];
    ok(run("finetune", &[&args[..], &more].concat(), d));
}

/// Runs `bin args` in `d` and asserts exit 1, every needle in stderr, no panic, and no `out`;
/// returns stderr.
fn fails(bin: &str, args: &[&str], d: &Path, out: &str, needles: &[&str]) -> String {
    let o = run(bin, args, d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{bin} {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{bin} {args:?}: expected '{n}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!d.join(out).exists(), "{bin} {args:?} left {out} behind");
    err
}

/// The stages that read a class-folder set `data`, each writing `bad-out`.
fn every_image_reader(d: &Path, data: &str, needles: &[&str]) {
    let size = ["--size", "32", "-q"];
    fails(
        "augment",
        &[&["rounds", "--data", data, "--out", "bad-out", "--rounds", "1"][..], &size].concat(),
        d,
        "bad-out",
        needles,
    );
    let args = ["--data", data, "--model", "model/conv_base.onnx", "--out", "bad-out", "--device", "cpu"];
    fails("bottleneck", &[&args[..], &size].concat(), d, "bad-out", needles);
    let args =
        ["--train", data, "--validation", "validation", "--model", "model", "--head", "head", "--out", "bad-out"];
    fails("finetune", &[&args[..], &["--epochs", "1", "--device", "cpu"], &size].concat(), d, "bad-out", needles);
    let args = ["--model", "out/classifier.onnx", "--data", data, "--out", "bad-out", "--device", "cpu", "-q"];
    fails("predict", &args, d, "bad-out", needles);
}

#[test]
fn a_truncated_photo_is_an_error_in_every_stage_that_reads_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    with_classifier(d);
    // A real photo cut to its first 4 KB: the decoder alone fills the rest with grey.
    let photo = std::fs::read(root().join("data/sample/train/cats/cat.1.jpg")).unwrap();
    sample_subset(&d.join("cut"), &[("cats", "cat.2.jpg"), ("dogs", "dog.1.jpg")]);
    std::fs::write(d.join("cut/cats/cut.jpg"), &photo[..4096]).unwrap();
    every_image_reader(d, "cut", &["cut/cats/cut.jpg", "truncated"]);
    let _ = fails(
        "augment",
        &["preview", "cut/cats/cut.jpg", "--count", "1", "--out", "bad-out"],
        d,
        "bad-out",
        &["truncated"],
    );

    // predict on files: an error naming it, or with --skip-invalid a logged, listed skip.
    let args = ["--model", "out/classifier.onnx", "cut/cats", "--out", "rows.csv", "--device", "cpu"];
    fails("predict", &args, d, "rows.csv", &["cut/cats/cut.jpg", "truncated"]);
    let o = run("predict", &[&args[..], &["--skip-invalid"]].concat(), d);
    let err = stderr(&o);
    assert!(ok(o).contains("1 skipped"));
    assert!(err.contains("skipped") && err.contains("cut.jpg"), "{err}");
    let csv = std::fs::read_to_string(d.join("rows.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("cut/cats/cut.jpg,")).unwrap();
    assert!(row.contains("truncated"), "{row}");
}

#[test]
fn bottleneck_refuses_models_that_are_not_a_conv_base() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    with_classifier(d);
    let attempt = |model: &str, needles: &[&str]| {
        let args = ["--data", "train", "--model", model, "--out", "bad-out", "--size", "32", "--device", "cpu"];
        fails("bottleneck", &args, d, "bad-out", &[&[model, "conv_base.onnx"][..], needles].concat());
    };
    // The frozen part beside model.json, and a copy of it elsewhere ([N, 2, 2, C] at 32x32).
    attempt("model/frozen_base.onnx", &["model/model.json"]);
    std::fs::create_dir(d.join("loose")).unwrap();
    std::fs::copy(d.join("model/frozen_base.onnx"), d.join("loose/frozen.onnx")).unwrap();
    attempt("loose/frozen.onnx", &["[2, 2, 5]", "[1, 1, C]", "frozen part"]);
    // The whole classifier: [N, 1] probabilities.
    attempt("out/classifier.onnx", &["not a feature map"]);
    ok(run(
        "finetune",
        &[
            "--train",
            "train",
            "--validation",
            "validation",
            "--model",
            "model",
            "--head",
            "head",
            "--out",
            "float",
            "--size",
            "32",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--classifier-input",
            "float",
            "-q",
        ],
        d,
    ));
    attempt("float/classifier.onnx", &["not a feature map"]);
    // The real thing still works.
    ok(run(
        "bottleneck",
        &["--data", "train", "--model", "model/conv_base.onnx", "--out", "f", "--size", "32", "-q"],
        d,
    ));
}

#[test]
fn zero_counts_are_usage_errors_in_every_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("augment", &["rounds", "--data", "x", "--out", "o", "--rounds", "1"], &["--rounds", "--threads"]),
        ("bottleneck", &["--data", "x", "--model", "m", "--out", "o"], &["--batch-size", "--threads"]),
        ("train-head", &["--train", "x", "--validation", "y", "--out", "o"], &["--epochs", "--batch-size"]),
        (
            "finetune",
            &["--train", "x", "--validation", "y", "--model", "m", "--head", "h", "--out", "o"],
            &["--epochs", "--batch-size", "--threads"],
        ),
        ("predict", &["--model", "m", "--data", "x"], &["--batch-size", "--threads", "--top-k"]),
    ];
    for (bin, base, flags) in cases {
        for flag in *flags {
            usage_error(bin, &[&base[..], &[flag, "0"]].concat(), d, flag);
        }
    }
}

#[test]
fn missing_and_damaged_inputs_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let once = |bin: &str, args: &[&str], needles: &[&str]| {
        let err = fails(bin, args, d, "bad-out", needles);
        assert!(err.matches("os error").count() <= 1, "the OS error twice: {err}");
    };
    once("split", &["--source", "nope", "--out", "bad-out"], &["nope", "Kaggle"]);
    once("prepare-model", &["--source", "nope.onnx", "--out", "bad-out"], &["nope.onnx", "scripts/setup.sh"]);
    once("augment", &["preview", "nope.jpg", "--count", "1", "--out", "bad-out"], &["nope.jpg"]);
    let file = "train/cats/cats.0.png";
    once("bottleneck", &["--data", file, "--model", "model/conv_base.onnx", "--out", "bad-out"], &[file, "is a file"]);
    once("augment", &["rounds", "--data", file, "--out", "bad-out", "--rounds", "1"], &[file, "is a file"]);

    // train-head on damaged feature folders.
    let head = |train: &str, needles: &[&str]| {
        let args = ["--train", train, "--validation", "features/validation", "--out", "bad-out", "--epochs", "1", "-q"];
        once("train-head", &args, needles);
    };
    let copy = |name: &str| {
        let to = d.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["features.npy", "labels.npy", "classes.json", "files.txt", "bottleneck.json"] {
            std::fs::copy(d.join("features/train").join(f), to.join(f)).unwrap();
        }
        to
    };
    std::fs::remove_file(copy("no-classes").join("classes.json")).unwrap();
    head("no-classes", &["no-classes/classes.json", "missing", "class map"]);
    let bad = copy("bad-header").join("features.npy");
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[20] = b'#';
    std::fs::write(&bad, &bytes).unwrap();
    head("bad-header", &["bad-header/features.npy", "not a valid .npy file"]);
    let cut = copy("cut").join("labels.npy");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
    head("cut", &["cut/labels.npy", "truncated"]);

    // A Fortran-order features.npy (numpy writes one for a transposed array) is read as its
    // values: the head trained on it is the one trained on the C-order file, byte for byte.
    let Some(py) = python() else {
        eprintln!("skipping the Fortran-order check: .cache/python is missing (run scripts/setup.sh)");
        return;
    };
    let f = copy("fortran").join("features.npy");
    let script = "import numpy as np, sys\na = np.load(sys.argv[1])\nnp.save(sys.argv[1], np.asfortranarray(a))\n\
                  assert np.load(sys.argv[1]).flags.f_contiguous";
    ok(std::process::Command::new(py).args(["-c", script, f.to_str().unwrap()]).output().unwrap());
    let train = |features: &str, out: &str| {
        let args = ["--train", features, "--validation", "features/validation", "--out", out, "--hidden", "8"];
        ok(run("train-head", &[&args[..], &["--epochs", "3", "--seed", "1", "-q"]].concat(), d));
    };
    train("features/train", "head-c");
    train("fortran", "head-f");
    for w in ["dense1_kernel.npy", "dense2_kernel.npy"] {
        assert_eq!(
            std::fs::read(d.join("head-c").join(w)).unwrap(),
            std::fs::read(d.join("head-f").join(w)).unwrap(),
            "{w}"
        );
    }
    // bottleneck --merge streams the file and cannot: it says how to convert it.
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("fortran/bottleneck.json")).unwrap()).unwrap();
    meta["shard"] = serde_json::json!({"index": 0, "count": 1, "start": 0, "end": 12, "total": 12});
    std::fs::write(d.join("fortran/bottleneck.json"), meta.to_string()).unwrap();
    once("bottleneck", &["--merge", "fortran", "--out", "bad-out"], &["fortran/features.npy", "np.ascontiguousarray"]);
}

#[test]
fn a_file_name_with_a_line_break_is_refused_by_every_stage() {
    // files.txt and the trainers' file lists hold one name per line: such a name would be two rows.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    with_classifier(d);
    sample_subset(&d.join("names"), &[("cats", "cat.2.jpg"), ("dogs", "dog.1.jpg")]);
    std::fs::copy(d.join("names/cats/cat.2.jpg"), d.join("names/cats/two\nlines.jpg")).unwrap();
    every_image_reader(d, "names", &["two\\nlines.jpg", "line break", "rename"]);
    let args = ["--model", "out/classifier.onnx", "names", "--out", "bad-out", "--device", "cpu"];
    fails("predict", &args, d, "bad-out", &["two\\nlines.jpg", "line break"]);
}
