//! bottleneck end to end: exact features from a hand-checkable model, the real conv base
//! against the Python reference, sharding + merge byte-identical, numpy compatibility, and
//! clear errors for bad input.

use std::path::Path;

use crate::common::*;
use sd_onnx::{Dim, attr_ints, dtype, node, value_info};

/// A model whose features can be computed by hand: NHWC -> 32x32 max pool -> NHWC, so a solid
/// colour image gives its preprocessed colour in every cell of a [h/32, w/32, 3] map.
fn max_pool_model(path: &Path) {
    let g = sd_onnx::GraphProto {
        node: vec![
            node("Transpose", "a", &["input"], &["nchw"], vec![attr_ints("perm", &[0, 3, 1, 2])]),
            node(
                "MaxPool",
                "p",
                &["nchw"],
                &["pooled"],
                vec![attr_ints("kernel_shape", &[32, 32]), attr_ints("strides", &[32, 32])],
            ),
            node("Transpose", "b", &["pooled"], &["features"], vec![attr_ints("perm", &[0, 2, 3, 1])]),
        ],
        input: vec![value_info(
            "input",
            dtype::FLOAT,
            &[Dim::named("N"), Dim::named("H"), Dim::named("W"), Dim::Fixed(3)],
        )],
        output: vec![value_info(
            "features",
            dtype::FLOAT,
            &[Dim::named("N"), Dim::named("h"), Dim::named("w"), Dim::Fixed(3)],
        )],
        ..Default::default()
    };
    sd_onnx::save(&sd_onnx::model(g, 13, "test"), path).unwrap();
}

fn colour(i: usize) -> [u8; 3] {
    [(i * 37 % 256) as u8, (i * 91 % 256) as u8, (i * 13 % 256) as u8]
}

/// 5 cats and 4 dogs, solid colours, various sizes and formats.
fn solid_dataset(dir: &Path) {
    for i in 0..9 {
        let class = if i < 5 { "cats" } else { "dogs" };
        std::fs::create_dir_all(dir.join(class)).unwrap();
        let img = image::RgbImage::from_pixel(40 + 13 * i as u32, 200 - 7 * i as u32, image::Rgb(colour(i)));
        img.save(dir.join(class).join(format!("img{i}.png"))).unwrap();
    }
}

fn read_f32(p: &Path) -> ndarray::ArrayD<f32> {
    sd_data::npy::read::<f32>(p).unwrap()
}

#[test]
fn exact_features_labels_and_order_from_a_hand_checkable_model() {
    let dir = tempfile::tempdir().unwrap();
    solid_dataset(&dir.path().join("data"));
    max_pool_model(&dir.path().join("pool.onnx"));
    ok(run(
        "bottleneck",
        &["--data", "data", "--model", "pool.onnx", "--out", "out", "--batch-size", "4", "--device", "cpu"],
        dir.path(),
    ));

    let out = dir.path().join("out");
    let features = read_f32(&out.join("features.npy"));
    assert_eq!(features.shape(), [9, 4, 4, 3], "every image, last partial batch included");
    for i in 0..9 {
        let [r, g, b] = colour(i).map(f32::from);
        let want = [b - 103.939, g - 116.779, r - 123.68];
        for cell in features.index_axis(ndarray::Axis(0), i).as_slice().unwrap().chunks(3) {
            for c in 0..3 {
                assert!((cell[c] - want[c]).abs() < 1e-4, "image {i}: {cell:?} vs {want:?}");
            }
        }
    }
    let labels = sd_data::npy::read::<i64>(out.join("labels.npy")).unwrap();
    assert_eq!(labels.as_slice().unwrap(), [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    let files = std::fs::read_to_string(out.join("files.txt")).unwrap();
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        (0..9).map(|i| format!("{}/img{i}.png", if i < 5 { "cats" } else { "dogs" })).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read_to_string(out.join("classes.json")).unwrap(), "{\n  \"cats\": 0,\n  \"dogs\": 1\n}\n");

    // rescale preprocessing: RGB / 255.
    ok(run(
        "bottleneck",
        &["--data", "data", "--model", "pool.onnx", "--out", "r", "--preprocess", "rescale", "-q"],
        dir.path(),
    ));
    let f = read_f32(&dir.path().join("r/features.npy"));
    let [r, g, b] = colour(7).map(|v| v as f32 / 255.0);
    assert!(
        (f[[7, 0, 0, 0]] - r).abs() < 1e-6 && (f[[7, 3, 3, 1]] - g).abs() < 1e-6 && (f[[7, 2, 1, 2]] - b).abs() < 1e-6
    );
}

#[test]
fn reads_the_augmented_rounds_that_augment_writes() {
    let dir = tempfile::tempdir().unwrap();
    solid_dataset(&dir.path().join("data"));
    max_pool_model(&dir.path().join("pool.onnx"));
    // Shear, zoom and flip with fill `nearest` map a solid image onto itself, so every round's
    // features are still the image's own colour.
    ok(run(
        "augment",
        &["rounds", "--data", "data", "--out", "aug", "--rounds", "2", "--augment", "finetune", "--seed", "5", "-q"],
        dir.path(),
    ));
    ok(run(
        "bottleneck",
        &["--data", "aug", "--model", "pool.onnx", "--out", "out", "--device", "cpu", "-q"],
        dir.path(),
    ));

    let out = dir.path().join("out");
    let files = std::fs::read_to_string(out.join("files.txt")).unwrap();
    let files: Vec<&str> = files.lines().collect();
    let want: Vec<String> = (0..9)
        .flat_map(|i| (0..2).map(move |r| format!("{}/img{i}_r{r}.png", if i < 5 { "cats" } else { "dogs" })))
        .collect();
    assert_eq!(files, want, "two rounds of each of the 9 images, in class-folder order");
    let labels = sd_data::npy::read::<i64>(out.join("labels.npy")).unwrap();
    assert_eq!(labels.as_slice().unwrap(), [[0; 10].as_slice(), &[1; 8]].concat());
    let features = read_f32(&out.join("features.npy"));
    assert_eq!(features.shape(), [18, 4, 4, 3], "augment's default 150x150 gives a 4x4 map");
    for (row, file) in files.iter().enumerate() {
        let i: usize = file.split("img").nth(1).unwrap().split('_').next().unwrap().parse().unwrap();
        let [r, g, b] = colour(i).map(f32::from);
        let want = [b - 103.939, g - 116.779, r - 123.68];
        for cell in features.index_axis(ndarray::Axis(0), row).as_slice().unwrap().chunks(3) {
            for c in 0..3 {
                assert!((cell[c] - want[c]).abs() < 1e-4, "{file}: {cell:?} vs {want:?}");
            }
        }
    }
}

fn read_dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn shards_merge_to_byte_identical_output_with_the_real_conv_base() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sample_subset(
        &data,
        &[
            ("cats", "cat.2.jpg"),
            ("cats", "cat.3.jpg"),
            ("cats", "cat.4.jpg"),
            ("dogs", "dog.1.jpg"),
            ("dogs", "dog.2.jpg"),
            ("dogs", "dog.3.jpg"),
            ("dogs", "dog.4.jpg"),
        ],
    );
    // The fixture image the Python reference was computed from, already 150x150.
    std::fs::copy(root().join("tests/fixtures/cat.1.150.png"), data.join("cats/cat.1.png")).unwrap();
    let model = prepared_model().join("conv_base.onnx");
    let m = model.to_str().unwrap();
    let common = ["--data", "data", "--model", m, "--batch-size", "3", "--device", "cpu", "-q"];

    ok(run("bottleneck", &[&common[..], &["--out", "full"]].concat(), dir.path()));
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = format!("shard{i}");
        ok(run("bottleneck", &[&common[..], &["--out", &out, "--shard", &shard]].concat(), dir.path()));
    }
    // Merge accepts shards in any order.
    ok(run("bottleneck", &["--merge", "shard2", "shard0", "shard1", "--out", "merged", "-q"], dir.path()));
    assert_eq!(read_dir_bytes(&dir.path().join("merged")), read_dir_bytes(&dir.path().join("full")));

    let features = read_f32(&dir.path().join("full/features.npy"));
    assert_eq!(features.shape(), [8, 4, 4, 512]);
    let files = std::fs::read_to_string(dir.path().join("full/files.txt")).unwrap();
    let row = files.lines().position(|l| l == "cats/cat.1.png").unwrap();
    let reference = read_f32(&root().join("tests/fixtures/cat.1.features.npy"));
    let diff =
        rel_max_diff(features.index_axis(ndarray::Axis(0), row).as_slice().unwrap(), reference.as_slice().unwrap());
    assert!(diff < 1e-4, "features of the fixture image differ from the Python reference by {diff}");

    // A missing shard is named.
    let o = run("bottleneck", &["--merge", "shard0", "shard2", "--out", "bad"], dir.path());
    assert!(stderr(&o).contains("missing: 1/3"), "{}", stderr(&o));
    assert!(!dir.path().join("bad").exists());

    if let Some(py) = python_for("the numpy check of the merged features") {
        let script = "import numpy as np, json, sys\n\
            f = np.load('full/features.npy'); l = np.load('full/labels.npy')\n\
            assert f.shape == (8, 4, 4, 512) and f.dtype == np.float32, (f.shape, f.dtype)\n\
            assert l.dtype == np.int64 and l.tolist() == [0, 0, 0, 0, 1, 1, 1, 1], l\n\
            assert json.load(open('full/classes.json')) == {'cats': 0, 'dogs': 1}\n\
            print('numpy ok')";
        let o = std::process::Command::new(py).arg("-c").arg(script).current_dir(dir.path()).output().unwrap();
        assert_eq!(ok(o).trim(), "numpy ok");
    }
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    solid_dataset(&dir.path().join("data"));
    max_pool_model(&dir.path().join("pool.onnx"));
    let fails = |args: &[&str], envs: &[(&str, &str)], needles: &[&str]| {
        let o = crate::common::cmd("bottleneck", dir.path()).args(args).envs(envs.iter().copied()).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.path().join("out").exists(), "{args:?} left an output behind");
    };
    let base = ["--data", "data", "--model", "pool.onnx", "--out", "out", "--device", "cpu"];

    std::fs::write(dir.path().join("data/dogs/broken.jpg"), b"this is not a jpeg").unwrap();
    fails(&base, &[], &["broken.jpg", "corrupt or not an image"]);
    std::fs::remove_file(dir.path().join("data/dogs/broken.jpg")).unwrap();

    std::fs::create_dir_all(dir.path().join("data/birds")).unwrap();
    fails(&base, &[], &["birds", "holds no images"]);
    std::fs::remove_dir(dir.path().join("data/birds")).unwrap();

    // A model that does not take images (a dense head, say).
    let head = sd_onnx::GraphProto {
        node: vec![node("Relu", "r", &["x"], &["y"], vec![])],
        input: vec![value_info("x", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(8192)])],
        output: vec![value_info("y", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(8192)])],
        ..Default::default()
    };
    sd_onnx::save(&sd_onnx::model(head, 13, "test"), dir.path().join("head.onnx")).unwrap();
    fails(
        &["--data", "data", "--model", "head.onnx", "--out", "out", "--device", "cpu"],
        &[],
        &["head.onnx", "conv_base.onnx"],
    );
    // Paths that name nothing are usage errors (exit 2) that say what to pass.
    let d = dir.path();
    crate::common::usage_error(
        "bottleneck",
        &["--data", "data", "--model", "nope.onnx", "--out", "out"],
        d,
        "prepare-model",
    );
    crate::common::usage_error(
        "bottleneck",
        &["--data", "nodata", "--model", "pool.onnx", "--out", "out"],
        d,
        "nodata does not exist",
    );
    assert!(!d.join("out").exists());

    // Runtime problems say how to fix the set-up.
    fails(
        &base,
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
        &["ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"],
    );
    std::fs::write(dir.path().join("fake.so"), b"not a library").unwrap();
    let fake = dir.path().join("fake.so");
    fails(&base, &[("ORT_DYLIB_PATH", fake.to_str().unwrap())], &["cannot load ONNX Runtime", "fake.so"]);
    // CUDA asked for explicitly, without a CUDA build or GPU: an error, not a silent CPU run.
    let o = crate::common::cmd("bottleneck", dir.path())
        .args(["--data", "data", "--model", "pool.onnx", "--out", "out", "--device", "cuda"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cuda") && (err.contains("setup.sh --gpu") || err.contains("CUDA is not usable")), "{err}");

    // Usage errors exit 2.
    let o =
        run("bottleneck", &["--data", "data", "--model", "pool.onnx", "--out", "out", "--shard", "3/3"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad shard '3/3'"), "{}", stderr(&o));
}
