//! The readers under test. Each reads a file that comes from outside (a user, numpy, PyTorch,
//! an editor, an earlier run) through the same public function the stages call.

use std::path::Path;

/// One reader: where its input goes and how it is read.
pub struct Target {
    pub name: &'static str,
    /// The file name the input is written to, inside the target's work folder; every error
    /// must name it.
    pub file: &'static str,
    /// Tokens of the format, for the mutator.
    pub dict: &'static [&'static [u8]],
    /// Peak allocation allowed beyond the input-size bound (a decoder's pixels).
    pub extra_alloc: usize,
    /// Prepares the work folder (files the input refers to).
    pub setup: fn(&Path) -> anyhow::Result<()>,
    /// Reads `folder/file`; `Err` is the reader's error message.
    pub read: fn(&Path) -> Result<(), String>,
}

/// The pixel limit images are decoded under while fuzzing (4 MB of RGB).
pub const IMAGE_PIXELS: u64 = 1 << 20;

const JSON: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"[[[[[[[[[[[[[[[[",
];

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "npy",
            file: "x.npy",
            dict: &[
                b"\x93NUMPY\x01\x00",
                b"\x93NUMPY\x02\x00",
                b"'descr': ",
                b"'<f4'",
                b"'<i8'",
                b"'|u1'",
                b"'fortran_order': ",
                b"True",
                b"False",
                b"'shape': (",
                b"100000000000, ",
                b"0,",
                b")",
                b"}",
            ],
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| {
                use sd_data::npy::{read, read_header};
                // The header alone (what streaming readers use), then the whole array as the
                // element type it declares (float32 for any other, an error).
                let header = read_header(p).map_err(|e| e.to_string());
                let whole = match header.as_ref().map(|h| h.descr.as_str()) {
                    Ok("<i8") => read::<i64>(p).map(drop),
                    Ok("|u1") => read::<u8>(p).map(drop),
                    _ => read::<f32>(p).map(drop),
                };
                header?;
                whole.map_err(|e| e.to_string())
            },
        },
        Target {
            name: "pipeline-yaml",
            file: "pipeline.yaml",
            dict: &[
                b"stages:\n",
                b"params:\n",
                b"param_sets:\n",
                b"  cmd: ",
                b"  deps: [",
                b"  outs: [",
                b"${",
                b"}",
                b"&a ",
                b"*a",
                b"<<: *a",
                b"- ",
                b": ",
                b"{",
                b"[",
                b"\n    ",
                b"!!str ",
                b"'",
                b"\"",
                b"|\n",
                b"#",
            ],
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| sd_pipeline::Pipeline::load(p).map(drop).map_err(|e| e.to_string()),
        },
        Target {
            name: "lock",
            file: "pipeline.lock",
            dict: JSON,
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| sd_pipeline::lock::Lock::load(p).map(drop).map_err(|e| e.to_string()),
        },
        Target {
            name: "classes-json",
            file: "classes.json",
            dict: JSON,
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| {
                let dir = p.parent().expect("in a folder");
                sd_data::layout::features::read_classes(dir).map(drop).map_err(|e| e.to_string())
            },
        },
        Target {
            name: "model-json",
            file: "model.json",
            dict: JSON,
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| {
                let dir = p.parent().expect("in a folder");
                sd_data::layout::model::ModelDir::new(dir).info().map(drop).map_err(|e| e.to_string())
            },
        },
        Target {
            name: "head-json",
            file: "head.json",
            dict: JSON,
            extra_alloc: 0,
            setup: head_weights,
            read: |p| {
                sd_train::head::export::load(p.parent().expect("in a folder")).map(drop).map_err(|e| e.to_string())
            },
        },
        Target {
            name: "image",
            file: "photo.jpg",
            dict: &[
                b"\xFF\xD8",
                b"\xFF\xD9",
                b"\xFF\xDA\x00\x08",
                b"\xFF\xC0\x00\x11\x08",
                b"\xFF\xE1\xFF\xFF",
                b"\xFF\x00",
                b"\xFF\xD0",
                b"\x89PNG\r\n\x1a\n",
                b"IHDR",
                b"IDAT",
            ],
            // The decoder may hold the pixels the limit allows, in the widest pixel type.
            extra_alloc: (IMAGE_PIXELS as usize) * 16,
            setup: |_| Ok(()),
            read: |p| sd_data::image::load_rgb_limited(p, IMAGE_PIXELS).map(drop).map_err(|e| e.to_string()),
        },
        Target {
            name: "onnx",
            file: "model.onnx",
            dict: &[
                b"\x08",
                b"\x0A",
                b"\x12",
                b"\x1A",
                b"\x3A",
                b"\x42",
                b"\xFF\xFF\xFF\xFF\x0F",
                b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
            ],
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| {
                let model = sd_onnx::load(p).map_err(|e| e.to_string())?;
                // What the stages look at once a model is loaded.
                let name = p.display();
                let _ = sd_onnx::default_opset(&model);
                let _ = sd_onnx::metadata(&model);
                let graph = model.graph.as_ref().expect("load checks the graph");
                for info in graph.input.iter().chain(&graph.output) {
                    let _ = sd_onnx::declared_dims(info);
                }
                for t in &graph.initializer {
                    if t.data_type == Some(sd_onnx::dtype::FLOAT) {
                        sd_onnx::array_from_tensor(t).map_err(|e| format!("{name}: {e}"))?;
                    }
                }
                Ok(())
            },
        },
        Target {
            name: "torch",
            file: "weights.pth",
            dict: &[
                b"\x80\x02",
                b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
                b"ccollections\nOrderedDict\n",
                b"ctorch._utils\n_rebuild_tensor_v2\n",
                b"ctorch\nFloatStorage\n",
                b"cos\nsystem\n",
                b"J\xff\xff\xff\x7f",
                b"X\xff\xff\xff\x7f",
                b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
                b"(",
                b"t",
                b"R",
                b"Q",
                b"h\x00",
                b"q\x00",
                b"}",
                b"]",
                b"\x85",
                b"\x86",
                b".",
            ],
            extra_alloc: 0,
            setup: |_| Ok(()),
            read: |p| sd_torch::read(p).map(drop).map_err(|e| e.to_string()),
        },
    ]
}

/// A tiny head's weights beside the fuzzed `head.json` (the seed names them): [1, 1, 4] input,
/// dense 3, dense 1.
fn head_weights(dir: &Path) -> anyhow::Result<()> {
    use ndarray::{Array1, Array2};
    sd_data::npy::write(dir.join("dense1_kernel.npy"), &Array2::<f32>::zeros((4, 3)))?;
    sd_data::npy::write(dir.join("dense1_bias.npy"), &Array1::<f32>::zeros(3))?;
    sd_data::npy::write(dir.join("dense2_kernel.npy"), &Array2::<f32>::zeros((3, 1)))?;
    sd_data::npy::write(dir.join("dense2_bias.npy"), &Array1::<f32>::zeros(1))?;
    Ok(())
}

/// Seeds that are easier built than kept by hand: `.npy` files of each kind, small ONNX models.
pub fn make_seeds(corpus: &Path) -> anyhow::Result<()> {
    use ndarray::{Array1, Array2, Array4};
    let npy = corpus.join("npy");
    std::fs::create_dir_all(&npy)?;
    sd_data::npy::write(npy.join("f32-2d.npy"), &Array2::<f32>::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32))?;
    sd_data::npy::write(npy.join("f32-4d.npy"), &Array4::<f32>::zeros((2, 1, 1, 3)))?;
    sd_data::npy::write(npy.join("i64-labels.npy"), &Array1::<i64>::from(vec![0, 1, 1, 0]))?;
    sd_data::npy::write(npy.join("u8.npy"), &Array1::<u8>::from(vec![1, 2, 3]))?;
    sd_data::npy::write(npy.join("empty.npy"), &Array2::<f32>::zeros((0, 8)))?;
    // numpy's version 2.0 header, and a Fortran-order array.
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }}{}\n", " ".repeat(49));
    v2.extend((dict.len() as u32).to_le_bytes());
    v2.extend(dict.as_bytes());
    v2.extend([0u8; 8]);
    std::fs::write(npy.join("v2.npy"), v2)?;
    let mut fortran = sd_data::npy::header("<i8", &[2, 3]);
    let at = fortran.windows(5).position(|w| w == b"False").expect("in the header");
    fortran.splice(at..at + 5, *b"True ");
    fortran.extend([0i64, 3, 1, 4, 2, 5].iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(npy.join("fortran.npy"), fortran)?;

    let onnx = corpus.join("onnx");
    std::fs::create_dir_all(&onnx)?;
    use sd_onnx::{Dim, attr_int, attr_ints, dtype, node, tensor_from_array, value_info};
    let gemm = sd_onnx::GraphProto {
        name: Some("head".into()),
        node: vec![
            node("Flatten", "flat", &["features"], &["flat"], vec![attr_int("axis", 1)]),
            node("Gemm", "dense1", &["flat", "k", "b"], &["y"], vec![]),
            node("Sigmoid", "out", &["y"], &["probability"], vec![]),
        ],
        initializer: vec![
            tensor_from_array("k", &Array2::<f32>::from_elem((4, 1), 0.5).into_dyn()),
            tensor_from_array("b", &Array1::<f32>::zeros(1).into_dyn()),
        ],
        input: vec![value_info(
            "features",
            dtype::FLOAT,
            &[Dim::named("N"), Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(4)],
        )],
        output: vec![value_info("probability", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(1)])],
        ..Default::default()
    };
    let mut model = sd_onnx::model(gemm, 17, "sd-fuzz");
    sd_onnx::set_metadata(&mut model, [("classes".to_string(), r#"{"cats":0,"dogs":1}"#.to_string())]);
    sd_onnx::save(&model, onnx.join("head.onnx"))?;
    let conv = sd_onnx::GraphProto {
        name: Some("conv".into()),
        node: vec![
            node(
                "Conv",
                "conv1",
                &["input", "w"],
                &["c"],
                vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", "relu1", &["c"], &["r"], vec![]),
            node(
                "MaxPool",
                "pool1",
                &["r"],
                &["features"],
                vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
            ),
        ],
        initializer: vec![tensor_from_array("w", &Array4::<f32>::from_elem((2, 3, 3, 3), 0.1).into_dyn())],
        input: vec![value_info("input", dtype::FLOAT, &[Dim::named("N"), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)])],
        output: vec![value_info(
            "features",
            dtype::FLOAT,
            &[Dim::named("N"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)],
        )],
        ..Default::default()
    };
    sd_onnx::save(&sd_onnx::model(conv, 17, "sd-fuzz"), onnx.join("conv.onnx"))?;

    let image = corpus.join("image");
    std::fs::create_dir_all(&image)?;
    let photo = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, 128]));
    photo.save_with_format(image.join("small.jpg"), image::ImageFormat::Jpeg)?;
    photo.save_with_format(image.join("small.png"), image::ImageFormat::Png)?;
    Ok(())
}
