//! The trained head on disk, for `finetune`, `predict` and anyone with NumPy or ONNX Runtime.
//!
//! * `dense{i}_kernel.npy` (float32 `[in, out]`, Keras layout: `y = x · W + b`) and
//!   `dense{i}_bias.npy` (float32 `[out]`), `i = 1..`; the last layer has one unit (the logit of
//!   the class labelled 1) for two classes, else one per class.
//!   `model.layers[i].set_weights([kernel, bias])` loads them into the matching Keras `Dense`.
//! * `head.json`: the architecture (input shape, layers, activations, dropout), the class map and
//!   the file names; [`load`] reads the head back from it.
//! * `head.onnx` (opset 13): input `features` float32 `[N, ...input_shape]` (e.g. `[N,4,4,512]`
//!   NHWC); for two classes output `probability` float32 `[N, 1]` (of the class labelled 1),
//!   `Flatten -> Gemm -> Relu -> ... -> Gemm -> Sigmoid` (`ReduceMean` over h and w instead of
//!   `Flatten` with `--pool avg`); for N classes `probabilities` `[N, classes]`, ending in
//!   `Softmax`.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use sd_data::Classes;
use serde::{Deserialize, Serialize};

use super::model::{Dense, Head};
use super::pool::Pool;

pub const HEAD_JSON: &str = "head.json";
pub const HEAD_ONNX: &str = "head.onnx";
pub const ONNX_INPUT: &str = "features";
/// The output of a two-class head: the probability of the class labelled 1, `[N, 1]`.
pub const ONNX_OUTPUT: &str = "probability";
/// The output of a head over more classes: every class's probability, `[N, classes]`.
pub const ONNX_OUTPUT_CLASSES: &str = "probabilities";
pub const OPSET: i64 = 13;

/// The name of the probabilities output of a classifier with `outputs` logits.
pub fn output_name(outputs: usize) -> &'static str {
    if outputs == 1 { ONNX_OUTPUT } else { ONNX_OUTPUT_CLASSES }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Npy(#[from] sd_data::npy::NpyError),
    #[error(transparent)]
    Write(#[from] sd_data::artifact::WriteError),
    #[error(transparent)]
    Onnx(#[from] sd_onnx::OnnxError),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// One dense layer in `head.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    pub name: String,
    pub units: usize,
    /// `relu` for hidden layers, `sigmoid` (two classes) or `softmax` for the output.
    pub activation: String,
    /// Dropout rate applied after this layer at training time (0 for the output layer).
    pub dropout: f64,
    pub kernel: String,
    pub bias: String,
}

/// `head.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Per-sample input shape (the feature map, e.g. `[4, 4, 512]`).
    pub input_shape: Vec<usize>,
    /// How the map becomes the first layer's input; absent (older heads, the recipe): Flatten,
    /// in C order.
    #[serde(default, skip_serializing_if = "Pool::is_flatten")]
    pub pool: Pool,
    pub layers: Vec<LayerSpec>,
    pub classes: Classes,
    pub onnx: String,
    pub onnx_input: String,
    pub onnx_output: String,
}

impl HeadSpec {
    pub fn of(head: &Head<f32>, input_shape: &[usize], classes: &Classes) -> HeadSpec {
        let last = head.layers.len() - 1;
        let output_activation = if head.outputs() == 1 { "sigmoid" } else { "softmax" };
        let layers = head
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let name = format!("dense{}", i + 1);
                LayerSpec {
                    units: l.units(),
                    activation: if i == last { output_activation } else { "relu" }.into(),
                    dropout: if i == last { 0.0 } else { head.dropout },
                    kernel: format!("{name}_kernel.npy"),
                    bias: format!("{name}_bias.npy"),
                    name,
                }
            })
            .collect();
        HeadSpec {
            input_shape: input_shape.to_vec(),
            pool: head.pool,
            layers,
            classes: classes.clone(),
            onnx: HEAD_ONNX.into(),
            onnx_input: ONNX_INPUT.into(),
            onnx_output: output_name(head.outputs()).into(),
        }
    }
}

/// Writes the weights, `head.json` and `head.onnx` into `dir`.
pub fn save(head: &Head<f32>, input_shape: &[usize], classes: &Classes, dir: &Path) -> Result<HeadSpec, ExportError> {
    let spec = HeadSpec::of(head, input_shape, classes);
    for (layer, s) in head.layers.iter().zip(&spec.layers) {
        sd_data::npy::write(dir.join(&s.kernel), &layer.kernel)?;
        sd_data::npy::write(dir.join(&s.bias), &layer.bias)?;
    }
    sd_onnx::save(&onnx(head, input_shape), dir.join(HEAD_ONNX))?;
    sd_data::artifact::write_json(dir.join(HEAD_JSON), &spec)?;
    Ok(spec)
}

/// Reads a head saved by [`save`] (e.g. to start fine-tuning from it).
pub fn load(dir: &Path) -> Result<(Head<f32>, HeadSpec), ExportError> {
    let path = dir.join(HEAD_JSON);
    let invalid = |path: &Path, reason: String| ExportError::Invalid { path: path.into(), reason };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(&path, format!("cannot read: {e}")))?;
    let spec: HeadSpec = serde_json::from_str(&text).map_err(|e| invalid(&path, e.to_string()))?;
    spec.pool.check(&spec.input_shape).map_err(|reason| invalid(&path, reason))?;
    let mut inputs = spec.pool.width(&spec.input_shape);
    let mut layers = Vec::new();
    // The weight files head.json names: plain names in its folder, errors naming both.
    let weights = |name: &str| -> Result<(PathBuf, ndarray::ArrayD<f32>), ExportError> {
        let mut parts = Path::new(name).components();
        if !matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None)) {
            return Err(invalid(&path, format!("weight file {name:?} is not a file name in the head's folder")));
        }
        let file = dir.join(name);
        let array =
            sd_data::npy::read::<f32>(&file).map_err(|e| invalid(&path, format!("a weight file it names: {e}")))?;
        Ok((file, array))
    };
    for s in &spec.layers {
        let (kp, kernel) = weights(&s.kernel)?;
        let kernel: Array2<f32> = kernel
            .into_dimensionality()
            .ok()
            .filter(|k: &Array2<f32>| k.dim() == (inputs, s.units))
            .ok_or_else(|| invalid(&kp, format!("expected shape [{inputs}, {}] as {HEAD_JSON} says", s.units)))?;
        let (bp, bias) = weights(&s.bias)?;
        let bias: Array1<f32> = bias
            .into_dimensionality()
            .ok()
            .filter(|b: &Array1<f32>| b.len() == s.units)
            .ok_or_else(|| invalid(&bp, format!("expected shape [{}] as {HEAD_JSON} says", s.units)))?;
        layers.push(Dense { kernel, bias });
        inputs = s.units;
    }
    let want = crate::Loss::for_classes(spec.classes.len().max(2)).outputs();
    if layers.is_empty() || inputs != want {
        return Err(invalid(
            &path,
            format!("the last layer must have {want} unit(s) for the {} classes {}", spec.classes.len(), spec.classes),
        ));
    }
    let dropout = spec.layers.first().map_or(0.0, |l| l.dropout);
    Ok((Head { pool: spec.pool, layers, dropout }, spec))
}

/// The inference graph of `head`.
pub fn onnx(head: &Head<f32>, input_shape: &[usize]) -> sd_onnx::ModelProto {
    use sd_onnx::{Dim, attr_int, dtype, node, tensor_from_array, value_info};
    let mut dims = vec![Dim::named("N")];
    dims.extend(input_shape.iter().map(|&d| Dim::Fixed(d as i64)));
    let mut nodes = head.pool.onnx_nodes(ONNX_INPUT, "flat");
    let mut initializers = Vec::new();
    let mut x = "flat".to_string();
    let last = head.layers.len() - 1;
    for (i, layer) in head.layers.iter().enumerate() {
        let name = format!("dense{}", i + 1);
        let (k, b, y) = (format!("{name}/kernel"), format!("{name}/bias"), format!("{name}/out"));
        initializers.push(tensor_from_array(&k, &layer.kernel.clone().into_dyn()));
        initializers.push(tensor_from_array(&b, &layer.bias.clone().into_dyn()));
        nodes.push(node("Gemm", &name, &[&x, &k, &b], &[&y], vec![]));
        let (op, out) = match (i == last, layer.units()) {
            (false, _) => ("Relu", format!("{name}/relu")),
            (true, 1) => ("Sigmoid", ONNX_OUTPUT.to_string()),
            (true, _) => ("Softmax", ONNX_OUTPUT_CLASSES.to_string()),
        };
        let attrs = if op == "Softmax" { vec![attr_int("axis", 1)] } else { vec![] };
        nodes.push(node(op, &format!("{name}/{}", op.to_lowercase()), &[&y], &[&out], attrs));
        x = out;
    }
    let graph = sd_onnx::GraphProto {
        name: Some("head".into()),
        node: nodes,
        initializer: initializers,
        input: vec![value_info(ONNX_INPUT, dtype::FLOAT, &dims)],
        output: vec![value_info(
            output_name(head.outputs()),
            dtype::FLOAT,
            &[Dim::named("N"), Dim::Fixed(head.outputs() as i64)],
        )],
        ..Default::default()
    };
    sd_onnx::model(graph, OPSET, "smalldata train-head")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn save_then_load_round_trips() {
        let head = Head::<f32>::new(2 * 3, &[5, 4], 1, 0.3, &mut ChaCha8Rng::seed_from_u64(1));
        let dir = tempfile::tempdir().unwrap();
        let classes = Classes::new(vec!["cats".into(), "dogs".into()]);
        let spec = save(&head, &[2, 3], &classes, dir.path()).unwrap();
        assert_eq!(
            spec.layers.iter().map(|l| l.kernel.as_str()).collect::<Vec<_>>(),
            ["dense1_kernel.npy", "dense2_kernel.npy", "dense3_kernel.npy"]
        );
        let (back, spec2) = load(dir.path()).unwrap();
        assert_eq!(back, head);
        assert_eq!(spec2, spec);
        let model = sd_onnx::load(dir.path().join(HEAD_ONNX)).unwrap();
        let ops: Vec<_> = model.graph.unwrap().node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Sigmoid"]);
    }

    #[test]
    fn load_names_the_bad_file() {
        let head = Head::<f32>::new(6, &[5], 1, 0.5, &mut ChaCha8Rng::seed_from_u64(1));
        let dir = tempfile::tempdir().unwrap();
        save(&head, &[6], &Classes::new(vec!["a".into(), "b".into()]), dir.path()).unwrap();
        sd_data::npy::write(dir.path().join("dense2_kernel.npy"), &Array2::<f32>::zeros((4, 1))).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("dense2_kernel.npy") && e.contains("[5, 1] as head.json says"), "{e}");
        // head.json naming a weight file that is missing, or outside its folder (found by the
        // head-json fuzz target: the error named only the weight file).
        let mut spec: HeadSpec = serde_json::from_slice(&std::fs::read(dir.path().join(HEAD_JSON)).unwrap()).unwrap();
        for (name, says) in [("dense9_kernel.npy", "a weight file it names"), ("../x.npy", "not a file name")] {
            spec.layers[0].kernel = name.into();
            sd_data::artifact::write_json(dir.path().join(HEAD_JSON), &spec).unwrap();
            let e = load(dir.path()).unwrap_err().to_string();
            assert!(e.contains("head.json") && e.contains(name) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_head_over_three_classes_ends_in_softmax() {
        let head = Head::<f32>::new(6, &[5], 3, 0.5, &mut ChaCha8Rng::seed_from_u64(1));
        let dir = tempfile::tempdir().unwrap();
        let classes = Classes::new(vec!["a".into(), "b".into(), "c".into()]);
        let spec = save(&head, &[6], &classes, dir.path()).unwrap();
        assert_eq!((spec.layers[1].activation.as_str(), spec.onnx_output.as_str()), ("softmax", "probabilities"));
        assert_eq!(load(dir.path()).unwrap().0, head);
        let graph = sd_onnx::load(dir.path().join(HEAD_ONNX)).unwrap().graph.unwrap();
        assert_eq!(graph.node.last().unwrap().op_type.as_deref(), Some("Softmax"));
        // Two classes' worth of classes.json against a 3-unit output: refused, naming the file.
        let mut spec2 = spec.clone();
        spec2.classes = Classes::new(vec!["a".into(), "b".into()]);
        sd_data::artifact::write_json(dir.path().join(HEAD_JSON), &spec2).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("head.json") && e.contains("1 unit"), "{e}");
    }
}
