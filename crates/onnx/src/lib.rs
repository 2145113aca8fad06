//! The one place that reads, edits, builds and writes ONNX models.
//!
//! The protobuf types come from the official `onnx.proto` (see `build.rs`). On top of them this
//! crate offers what the stages need: loading and atomic saving with errors that name the file,
//! float tensors to and from `ndarray`, small node/attribute builders, and cutting a sub-graph
//! that computes a chosen set of tensors; [`quantize`]: static int8 quantisation in QDQ form.

pub mod quantize;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use prost::Message;

/// Generated protobuf types (`ModelProto`, `GraphProto`, `NodeProto`, ...).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// ONNX `TensorProto.DataType` codes used here.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
}

/// The ONNX IR version written by this crate (ONNX 1.10+, understood by ONNX Runtime >= 1.10).
pub const IR_VERSION: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ONNX model ({reason}); check that the file is a complete .onnx export")]
    Decode { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("graph has no tensor named '{0}'")]
    MissingTensor(String),
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// Reads and decodes an ONNX model.
pub fn load(path: impl AsRef<Path>) -> Result<ModelProto> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Read { path: path.into(), source })?;
    decode(&bytes).map_err(|reason| OnnxError::Decode { path: path.into(), reason })
}

/// Decodes an ONNX model from bytes; rejects inputs that decode to an empty graph (protobuf
/// happily decodes many non-ONNX files into an empty message).
pub fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    let model = ModelProto::decode(bytes).map_err(|e| format!("protobuf decoding failed: {e}"))?;
    if model.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        return Err("no graph with nodes in the file".into());
    }
    Ok(model)
}

/// Writes a model atomically (see `sd_data::artifact`): a crash or kill never leaves a
/// truncated `.onnx` under the real name, and its scratch is cleaned like every artifact's.
pub fn save(model: &ModelProto, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    sd_data::artifact::write_bytes(path, &model.encode_to_vec())
        .map_err(|e| OnnxError::Write { path: path.into(), source: e.source })
}

/// A model's custom metadata (`metadata_props`) by key.
pub fn metadata(model: &ModelProto) -> std::collections::BTreeMap<String, String> {
    model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone().unwrap_or_default(), p.value.clone().unwrap_or_default()))
        .collect()
}

/// Replaces a model's custom metadata (`metadata_props`) with `props`, in their order.
pub fn set_metadata(model: &mut ModelProto, props: impl IntoIterator<Item = (String, String)>) {
    model.metadata_props =
        props.into_iter().map(|(k, v)| proto::StringStringEntryProto { key: Some(k), value: Some(v) }).collect();
}

/// A new model around `graph` with the default ONNX opset `opset`.
pub fn model(graph: GraphProto, opset: i64, producer: &str) -> ModelProto {
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        producer_name: Some(producer.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// The version of the default ("" or "ai.onnx") opset a model imports.
pub fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
}

// ---------------------------------------------------------------------------------------------
// Tensors

/// A float32 initializer from an `ndarray` array.
pub fn tensor_from_array(name: &str, array: &ArrayD<f32>) -> TensorProto {
    let mut raw = Vec::with_capacity(array.len() * 4);
    for v in array.iter() {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype::FLOAT),
        dims: array.shape().iter().map(|&d| d as i64).collect(),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// An int64 initializer (shapes, axes).
pub fn tensor_from_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype::INT64),
        dims: dims.to_vec(),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A float32 tensor as an `ndarray` array (from `raw_data` or `float_data`).
pub fn array_from_tensor(t: &TensorProto) -> Result<ArrayD<f32>> {
    let name = t.name.clone().unwrap_or_default();
    let bad = |reason: String| OnnxError::Tensor { name: name.clone(), reason };
    if t.data_type != Some(dtype::FLOAT) {
        return Err(bad(format!("data type {:?} is not float32", t.data_type)));
    }
    if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) {
        return Err(bad("data is stored outside the model file (external data) and is not supported; re-export the model with its weights embedded".into()));
    }
    // Dims come from the file: negative or overflowing ones are errors, never a wrapped size.
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d} in {:?}", t.dims))))
        .collect::<Result<Vec<usize>>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| bad(format!("shape {shape:?} holds more values than can exist")))?;
    let values: Vec<f32> = match &t.raw_data {
        Some(raw) if !raw.is_empty() || n == 0 => {
            if raw.len() != n * 4 {
                return Err(bad(format!("{} bytes of data for {n} float32 values", raw.len())));
            }
            raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        _ => {
            if t.float_data.len() != n {
                return Err(bad(format!("{} values for shape {shape:?}", t.float_data.len())));
            }
            t.float_data.clone()
        }
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| bad(e.to_string()))
}

/// The constant tensor named `name`: an initializer, or the `value` of a `Constant` node.
pub fn constant<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name.as_deref() == Some(name)).or_else(|| {
        graph
            .node
            .iter()
            .find(|n| n.op_type.as_deref() == Some("Constant") && n.output.iter().any(|o| o == name))
            .and_then(|n| n.attribute.iter().find(|a| a.name.as_deref() == Some("value")))
            .and_then(|a| a.t.as_ref())
    })
}

// ---------------------------------------------------------------------------------------------
// Nodes, attributes, value infos

/// A node; `name` doubles as a readable prefix in error messages from ONNX Runtime.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

fn attribute(name: &str, kind: proto::attribute_proto::AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(kind as i32), ..Default::default() }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { i: Some(value), ..attribute(name, proto::attribute_proto::AttributeType::Int) }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { f: Some(value), ..attribute(name, proto::attribute_proto::AttributeType::Float) }
}

pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: Some(value.as_bytes().to_vec()),
        ..attribute(name, proto::attribute_proto::AttributeType::String)
    }
}

pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { ints: values.to_vec(), ..attribute(name, proto::attribute_proto::AttributeType::Ints) }
}

/// An integer-list attribute of a node, if present.
pub fn get_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).map(|a| a.ints.as_slice())
}

/// An integer attribute of a node, if present.
pub fn get_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i)
}

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A named dynamic dimension ("N", "H", ...).
    Named(String),
}

impl Dim {
    pub fn named(name: &str) -> Dim {
        Dim::Named(name.into())
    }
}

/// A graph input/output declaration.
pub fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v),
                Dim::Named(s) => Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The declared dims of a graph input/output (`None` for a dimension without value or name).
pub fn declared_dims(info: &ValueInfoProto) -> Option<Vec<Option<Dim>>> {
    use proto::tensor_shape_proto::dimension::Value;
    let Some(proto::type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) => Some(Dim::Fixed(*v)),
                Some(Value::DimParam(s)) => Some(Dim::Named(s.clone())),
                None => None,
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Graph surgery

/// Index from tensor name to the node that produces it.
pub fn producers(graph: &GraphProto) -> HashMap<&str, &NodeProto> {
    graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect()
}

/// The part of `graph` that computes `outputs`: the nodes they need (in the original,
/// topological order), the initializers and graph inputs those nodes read. Declared outputs,
/// value infos (often stale fixed shapes) and unused inputs are dropped; the caller declares the
/// new outputs.
pub fn extract(graph: &GraphProto, outputs: &[&str]) -> Result<GraphProto> {
    let producer = producers(graph);
    let initializer_names: HashSet<&str> = graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    let input_names: HashSet<&str> = graph.input.iter().filter_map(|i| i.name.as_deref()).collect();

    let mut needed_tensors: HashSet<&str> = HashSet::new();
    let mut needed_nodes: HashSet<*const NodeProto> = HashSet::new();
    let mut stack: Vec<&str> = outputs.to_vec();
    while let Some(t) = stack.pop() {
        if t.is_empty() || !needed_tensors.insert(t) {
            continue;
        }
        match producer.get(t) {
            Some(n) => {
                if needed_nodes.insert(*n as *const _) {
                    stack.extend(n.input.iter().map(String::as_str));
                }
            }
            None if initializer_names.contains(t) || input_names.contains(t) => {}
            None => return Err(OnnxError::MissingTensor(t.to_string())),
        }
    }

    Ok(GraphProto {
        name: graph.name.clone(),
        node: graph.node.iter().filter(|n| needed_nodes.contains(&(*n as *const _))).cloned().collect(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| t.name.as_deref().is_some_and(|n| needed_tensors.contains(n)))
            .cloned()
            .collect(),
        input: graph
            .input
            .iter()
            .filter(|i| i.name.as_deref().is_some_and(|n| needed_tensors.contains(n) && !initializer_names.contains(n)))
            .cloned()
            .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn float_tensor_round_trip() {
        let a = array![[1.0f32, -2.5], [3.25, 4.0]].into_dyn();
        let t = tensor_from_array("w", &a);
        assert_eq!(t.dims, vec![2, 2]);
        assert_eq!(array_from_tensor(&t).unwrap(), a);
        let from_float_data = TensorProto { raw_data: None, float_data: a.iter().copied().collect(), ..t };
        assert_eq!(array_from_tensor(&from_float_data).unwrap(), a);
    }

    #[test]
    fn tensor_with_wrong_byte_count_is_an_error() {
        let mut t = tensor_from_array("w", &array![1.0f32, 2.0].into_dyn());
        t.raw_data.as_mut().unwrap().pop();
        let err = array_from_tensor(&t).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("7 bytes"), "{err}");
    }

    fn chain_graph() -> GraphProto {
        // x -> Relu -> a -> Neg -> b ; c = Abs(x) (unused branch); b needs initializer k via Add
        GraphProto {
            node: vec![
                node("Relu", "r", &["x"], &["a"], vec![]),
                node("Abs", "unused", &["x"], &["c"], vec![]),
                node("Add", "add", &["a", "k"], &["b"], vec![]),
            ],
            initializer: vec![
                tensor_from_array("k", &array![1.0f32].into_dyn()),
                tensor_from_array("z", &array![0.0f32].into_dyn()),
            ],
            input: vec![value_info("x", dtype::FLOAT, &[Dim::named("N")])],
            ..Default::default()
        }
    }

    #[test]
    fn extract_keeps_only_what_the_outputs_need() {
        let g = extract(&chain_graph(), &["b"]).unwrap();
        let ops: Vec<_> = g.node.iter().map(|n| n.name.clone().unwrap()).collect();
        assert_eq!(ops, ["r", "add"]);
        assert_eq!(g.initializer.len(), 1);
        assert_eq!(g.initializer[0].name.as_deref(), Some("k"));
        assert_eq!(g.input.len(), 1);
    }

    #[test]
    fn extract_of_unknown_tensor_fails() {
        assert!(matches!(extract(&chain_graph(), &["nope"]), Err(OnnxError::MissingTensor(t)) if t == "nope"));
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let m = model(chain_graph(), 13, "test");
        save(&m, &path).unwrap();
        assert_eq!(load(&path).unwrap(), m);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn non_onnx_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not.onnx");
        std::fs::write(&path, b"hello, this is text").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not.onnx") && err.contains("not an ONNX model"), "{err}");
    }

    #[test]
    fn tensor_dims_from_the_file_cannot_overflow_or_go_negative() {
        let mut t = tensor_from_array("w", &ndarray::ArrayD::<f32>::zeros(IxDyn(&[2, 3])));
        assert_eq!(array_from_tensor(&t).unwrap().shape(), [2, 3]);
        for dims in [vec![-1, -6], vec![i64::MAX, i64::MAX, 4], vec![1 << 62, 4]] {
            t.dims = dims.clone();
            let err = array_from_tensor(&t).unwrap_err().to_string();
            assert!(
                err.contains("'w'") && (err.contains("negative") || err.contains("more values")),
                "{dims:?}: {err}"
            );
        }
    }
}
