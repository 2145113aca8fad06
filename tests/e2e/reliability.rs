//! Issue 18, trying to break it: damaged images, models that are not a conv base, zero counts,
//! missing and damaged inputs, file names that are not one line; issue 34: `.npy` headers that
//! claim more than the file holds, symlink loops in data folders, decompression bombs. Each case
//! is refused by every stage it reaches, with the file at fault and the fix, and leaves no output
//! behind.

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
        ["--train", data, "--validation", "validation", "--model-dir", "model", "--head", "head", "--out", "bad-out"];
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
        (
            "train-head",
            &["--train-features", "x", "--validation-features", "y", "--out", "o"],
            &["--epochs", "--batch-size"],
        ),
        (
            "finetune",
            &["--train", "x", "--validation", "y", "--model-dir", "m", "--head", "h", "--out", "o"],
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
    // A path that names nothing, or a file for a folder: usage errors (exit 2).
    let file = "train/cats/cats.0.png";
    let refused: [(&str, &[&str], &str); 4] = [
        ("prepare-model", &["--source", "nope.onnx", "--out", "bad-out"], "--source nope.onnx does not exist"),
        ("augment", &["preview", "nope.jpg", "--count", "1", "--out", "bad-out"], "nope.jpg does not exist"),
        (
            "bottleneck",
            &["--data", file, "--model", "model/conv_base.onnx", "--out", "bad-out"],
            "cats.0.png is a file",
        ),
        ("augment", &["rounds", "--data", file, "--out", "bad-out", "--rounds", "1"], "cats.0.png is a file"),
    ];
    for (bin, args, says) in refused {
        usage_error(bin, args, d, says);
        assert!(!d.join("bad-out").exists(), "{bin} {args:?} left bad-out behind");
    }
    assert!(
        stderr(&run("prepare-model", &["--source", "nope.onnx", "--out", "bad-out"], d)).contains("scripts/setup.sh")
    );

    // train-head on damaged feature folders.
    let head = |train: &str, needles: &[&str]| {
        let args = [
            "--train-features",
            train,
            "--validation-features",
            "features/validation",
            "--out",
            "bad-out",
            "--epochs",
            "1",
            "-q",
        ];
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
    let Some(py) = python_for("the Fortran-order .npy check") else { return };
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

/// Issue 34, 1: a `features.npy` whose header claims (100000000000, 4, 4, 512) floats, with 1 KB
/// of data, used to abort train-head trying to allocate 3.3 PB.
#[test]
fn a_npy_header_claiming_more_than_the_file_holds_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let bad = d.join("huge");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["labels.npy", "classes.json", "files.txt", "bottleneck.json"] {
        std::fs::copy(d.join("features/train").join(f), bad.join(f)).unwrap();
    }
    let mut npy = sd_data::npy::header("<f4", &[100_000_000_000, 4, 4, 512]);
    npy.extend([0u8; 1024]);
    std::fs::write(bad.join("features.npy"), npy).unwrap();
    let args = ["--train-features", "huge", "--validation-features", "features/validation", "--out", "bad-out", "-q"];
    let err =
        fails("train-head", &args, d, "bad-out", &["huge/features.npy", "the file holds 1024 bytes", "write it again"]);
    assert!(!err.contains("memory allocation"), "{err}");
}

/// Issue 34, 2: `cats/up -> ../..` inside a data folder made bottleneck write the same photos
/// many times (dogs reached through `cats/up/` labelled cats) and predict classify one photo
/// dozens of times.
#[cfg(unix)]
#[test]
fn a_symlink_loop_in_a_data_folder_is_an_error_naming_it_in_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    with_classifier(d);
    let files = [("cats", "cat.1.jpg"), ("cats", "cat.2.jpg"), ("cats", "cat.3.jpg")];
    sample_subset(&d.join("data/loop"), &files);
    sample_subset(&d.join("data/loop"), &[("dogs", "dog.1.jpg"), ("dogs", "dog.2.jpg"), ("dogs", "dog.3.jpg")]);
    std::os::unix::fs::symlink("../..", d.join("data/loop/cats/up")).unwrap();
    let needles = ["symlink loop", "data/loop/cats/up -> ../.."];
    every_image_reader(d, "data/loop", &needles);
    // predict on a folder of photos (no labels): the same walk.
    let args = ["--model", "out/classifier.onnx", "data/loop", "--out", "rows.csv", "--device", "cpu", "-q"];
    fails("predict", &args, d, "rows.csv", &needles);
    // A link to photos outside the folder is followed, once.
    std::fs::remove_file(d.join("data/loop/cats/up")).unwrap();
    sample_subset(&d.join("more"), &[("cats", "cat.4.jpg")]);
    std::os::unix::fs::symlink(d.join("more/cats"), d.join("data/loop/cats/more")).unwrap();
    let args = ["--model", "out/classifier.onnx", "data/loop", "--out", "rows.csv", "--device", "cpu", "-q"];
    ok(run("predict", &args, d));
    let csv = std::fs::read_to_string(d.join("rows.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 7, "{csv}");
    assert_eq!(csv.lines().filter(|l| l.contains("cat.4.jpg")).count(), 1, "{csv}");
}

/// A grey PNG of `side` x `side` zero pixels, compressed row by row (40000: 1.5 MB on disk,
/// 1.6 GB of pixels).
fn bomb_png(side: u32) -> Vec<u8> {
    use std::io::Write;
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[&side.to_be_bytes()[..], &side.to_be_bytes(), &[8, 0, 0, 0, 0]].concat());
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; side as usize + 1];
    for _ in 0..side {
        z.write_all(&row).unwrap();
    }
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Issue 34, 3: a 40000x40000 PNG (1.5 MB) was refused as "corrupt or not an image".
#[test]
fn an_image_too_large_to_decode_says_its_size_the_limit_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    with_classifier(d);
    sample_subset(&d.join("bomb"), &[("cats", "cat.2.jpg"), ("dogs", "dog.1.jpg")]);
    let png = bomb_png(40000);
    assert!(png.len() < 2 << 20, "{} bytes", png.len());
    std::fs::write(d.join("bomb/cats/bomb.png"), png).unwrap();
    let needles = ["bomb/cats/bomb.png", "40000x40000 pixels", "89478485", "resize", "SMALLDATA_MAX_IMAGE_PIXELS="];
    every_image_reader(d, "bomb", &needles);
    let args = ["--model", "out/classifier.onnx", "bomb/cats/bomb.png", "--out", "rows.csv", "--device", "cpu"];
    let err = fails("predict", &args, d, "rows.csv", &needles);
    assert!(!err.contains("corrupt"), "{err}");
    // The limit is the environment's: a photo over a lowered one is refused, a bad value named.
    let photo = ["--model", "out/classifier.onnx", "bomb/dogs/dog.1.jpg", "--out", "rows.csv", "--device", "cpu"];
    let o = cmd("predict", d).args(photo).env("SMALLDATA_MAX_IMAGE_PIXELS", "1000").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("over the limit of 1000 pixels"), "{}", stderr(&o));
    let o = cmd("predict", d).args(photo).env("SMALLDATA_MAX_IMAGE_PIXELS", "lots").output().unwrap();
    assert!(stderr(&o).contains("SMALLDATA_MAX_IMAGE_PIXELS=\"lots\" is not a number"), "{}", stderr(&o));
    ok(cmd("predict", d).args(photo).env("SMALLDATA_MAX_IMAGE_PIXELS", "1000000").output().unwrap());
}
