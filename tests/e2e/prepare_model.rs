//! prepare-model on the real VGG16 (from scripts/setup.sh): structure, fingerprint, and the
//! conv base's features against an independent Python reference (tests/fixtures/make_reference.py).

use crate::common::*;
use sd_data::Preprocess;
use sd_runtime::{Device, Model, SessionConfig};

#[test]
fn real_vgg16_conv_base_matches_fingerprint_and_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let src = source_model();
    let o = run("prepare-model", &["--source", src.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));

    // Fingerprint verified against the committed copy of shared/vgg16/imagenet-fingerprint.json.
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["weights_verified_against"], "keras-imagenet");
    assert_eq!(info["source_input_layout"], "NHWC");
    assert_eq!(info["channels"].as_array().unwrap().len(), 13);
    let k = sd_data::npy::read::<f32>(out.join("block5/block5_conv3_kernel.npy")).unwrap();
    assert_eq!(k.shape(), [512, 512, 3, 3]);

    // Features of a 150x150 image, Rust (decode, caffe preprocessing, cut model, ort) vs Python.
    let img = sd_data::image::load_rgb(root().join("tests/fixtures/cat.1.150.png")).unwrap();
    let mut x = ndarray::Array4::<f32>::zeros((1, 150, 150, 3));
    Preprocess::Caffe.write_hwc(&img, x.as_slice_mut().unwrap());
    let mut model =
        Model::load(out.join("conv_base.onnx"), &SessionConfig { device: Device::Cpu, threads: None }).unwrap();
    let features = model.run(x.view().into_dyn()).unwrap();
    assert_eq!(features.shape(), [1, 4, 4, 512]);
    let reference = sd_data::npy::read::<f32>(root().join("tests/fixtures/cat.1.features.npy")).unwrap();
    let diff = rel_max_diff(features.as_slice().unwrap(), reference.as_slice().unwrap());
    assert!(diff < 1e-4, "relative max difference {diff}");

    // Dynamic spatial size: 224x224 gives 7x7.
    let big = ndarray::Array4::<f32>::zeros((2, 224, 224, 3));
    assert_eq!(model.run(big.view().into_dyn()).unwrap().shape(), [2, 7, 7, 512]);
}

#[test]
fn corrupt_and_non_vgg_models_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.onnx"), b"\x08\x07garbage that is not protobuf").unwrap();
    let o = run("prepare-model", &["--source", "broken.onnx", "--out", "m"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("broken.onnx") && err.contains("not an ONNX model"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A model that is not VGG16: a single convolution.
    use sd_onnx::*;
    let g = GraphProto {
        node: vec![node(
            "Conv",
            "c",
            &["x", "w"],
            &["y"],
            vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])],
        )],
        initializer: vec![tensor_from_array("w", &ndarray::ArrayD::zeros(vec![4, 3, 3, 3]))],
        input: vec![value_info("x", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)])],
        output: vec![value_info("y", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(4), Dim::Fixed(8), Dim::Fixed(8)])],
        ..Default::default()
    };
    save(&model(g, 13, "test"), dir.path().join("resnet.onnx")).unwrap();
    let o = run("prepare-model", &["--source", "resnet.onnx", "--out", "m"], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("resnet.onnx is not usable as VGG16") && err.contains("found 1 3x3 convolutions"), "{err}");

    let o = run("prepare-model", &["--source", "absent.onnx", "--out", "m"], dir.path());
    assert!(stderr(&o).contains("absent.onnx"), "{}", stderr(&o));
    assert!(!dir.path().join("m").exists());
}
