//! ONNX Runtime for every stage: finding the shared library, choosing the execution provider and
//! building sessions, with errors that say how to fix the set-up instead of panicking.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`), looked up in this order:
//! 1. `ORT_DYLIB_PATH` (a path to `libonnxruntime.so*`);
//! 2. `$SMALLDATA_CACHE/onnxruntime/{cuda,cpu}/libonnxruntime.so`;
//! 3. `.cache/onnxruntime/{cuda,cpu}/libonnxruntime.so` in a folder above the running
//!    executable, above the working directory, or at the workspace this was built from
//!    (where `scripts/setup.sh` puts it).
//!
//! The CUDA build (`setup.sh --gpu`) is preferred for `--device cuda` and `auto`; it also runs
//! on CPU. ONNX Runtime loads once per process, so the first [`Device`] asked for decides which
//! library is used.

mod denormals;
mod device;
mod library;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::{ArrayD, ArrayViewD};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Outlet, TensorElementType, TensorRef, ValueType};

pub use device::Device;
pub use library::{LibraryKind, find_in_cache, find_library};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked for {looked}). Run scripts/setup.sh to fetch it from PyPI, \
         or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or newer"
    )]
    NotFound { looked: String },
    #[error(
        "ORT_DYLIB_PATH is set to {0}, which does not exist; fix or unset it (scripts/setup.sh puts the library in .cache/onnxruntime/)"
    )]
    BadEnvPath(PathBuf),
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}. Run scripts/setup.sh again, or point ORT_DYLIB_PATH at a working libonnxruntime.so (>= 1.31)"
    )]
    Load { path: PathBuf, reason: String },
    #[error(
        "--device {device} asks for CUDA, but no CUDA build of ONNX Runtime was found (looked for {looked}). \
         Run scripts/setup.sh --gpu, or use --device cpu"
    )]
    NoCudaLibrary { device: Device, looked: String },
    #[error(
        "--device {device}: CUDA is not usable here: {reason}. Check `nvidia-smi` and the driver (>= 580 for CUDA 13), or use --device cpu / auto"
    )]
    CudaUnavailable { device: Device, reason: String },
    #[error(
        "ONNX Runtime was already loaded from {loaded} (a CPU-only build) in this process; --device {device} needs the CUDA build"
    )]
    AlreadyLoaded { loaded: PathBuf, device: Device },
    #[error("cannot load model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("model {path} must have exactly one input and one output, it has {inputs} and {outputs}")]
    Signature { path: PathBuf, inputs: usize, outputs: usize },
    #[error("model {path}: {what} '{name}' is a {found} tensor; expected {expected}")]
    ElementType { path: PathBuf, what: &'static str, name: String, found: String, expected: &'static str },
    #[error("running {path} on input of shape {shape:?}: {reason}")]
    Run { path: PathBuf, shape: Vec<usize>, reason: String },
    #[error("running {path} on {inputs}: {reason}")]
    RunMany { path: PathBuf, inputs: String, reason: String },
    #[error("{path}: {reason}")]
    Inputs { path: PathBuf, reason: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The ONNX Runtime this process loaded.
pub struct Runtime {
    pub library: PathBuf,
    pub kind: LibraryKind,
    environment: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Loads ONNX Runtime for `device` (once per process), with one intra-op thread pool of `threads`
/// (default: all physical cores) that every session shares, its threads flushing denormals to
/// zero ([`denormals`]). Per-session pools would each spin
/// after a run, and a stage that alternates sessions (finetune: frozen part, block 5 forward,
/// backward) then has idle pools taking the cores from the busy one: on two cores its exact-mode
/// epoch ran at 55% of the sessions' own speed.
fn init(device: Device, threads: Option<usize>) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        if device.wants_cuda() && rt.kind == LibraryKind::Cpu {
            return Err(RuntimeError::AlreadyLoaded { loaded: rt.library.clone(), device });
        }
        return Ok(rt);
    }
    let (library, kind) = library::find_library(device)?;
    if kind == LibraryKind::Cuda {
        library::preload_cuda_libraries(&library);
    }
    let load_err = |reason: String| RuntimeError::Load { path: library.clone(), reason };
    let builder = ort::init_from(&library).map_err(|e| load_err(e.to_string()))?;
    // After init_from: the options are made through the library just loaded.
    let mut pool = ort::environment::GlobalThreadPoolOptions::default()
        .with_flush_to_zero()
        .map_err(|e| load_err(e.to_string()))?;
    if let Some(n) = threads {
        pool = pool.with_intra_threads(n).map_err(|e| load_err(e.to_string()))?;
    }
    let environment =
        builder.with_name("smalldata").with_global_thread_pool(pool).build().map_err(|e| load_err(e.to_string()))?;
    tracing::info!(library = %library.display(), ?kind, "ONNX Runtime loaded");
    Ok(RUNTIME.get_or_init(|| Runtime { library, kind, environment }))
}

/// Session settings shared by every stage (`--device`, `--threads`; with the `clap` feature, a
/// `#[command(flatten)]` group of those flags).
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct SessionConfig {
    /// Where ONNX Runtime runs: auto (CUDA if available, else CPU), cpu, cuda or cuda:N.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Device::Auto))]
    pub device: Device,
    /// ONNX Runtime intra-op threads (default: all physical cores), in the one pool every session
    /// of the process shares (set by its first session).
    #[cfg_attr(feature = "clap", arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)))]
    pub threads: Option<usize>,
}

/// The element types the stages' models take: float32 tensors, and uint8 image batches (a
/// classifier that preprocesses inside its graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    F32,
    U8,
}

/// A declared graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// Declared shape; -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
    pub element: Element,
}

/// A model with any number of named inputs and float32 outputs, ready to run: what the
/// fine-tuning graphs (weights as inputs, activations as outputs) need. Built from a file or
/// from bytes (graphs made at start-up with `sd-onnx`).
pub struct Session {
    session: ort::session::Session,
    /// The file, or the name given to an in-memory graph; used in error messages.
    path: PathBuf,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// Where it runs: `cpu` or `cuda:N`.
    pub device: Device,
}

impl Session {
    /// Loads a model file.
    pub fn load(path: impl AsRef<Path>, config: &SessionConfig) -> Result<Session> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Err(RuntimeError::Model { path, reason: "a folder, not an ONNX file".into() });
        }
        if !path.is_file() {
            return Err(RuntimeError::Model { path, reason: "no such file".into() });
        }
        Session::build(path.clone(), config, |b| b.commit_from_file(&path))
    }

    /// Builds a session from an encoded ONNX model; `name` stands for it in error messages.
    pub fn from_bytes(name: &str, bytes: &[u8], config: &SessionConfig) -> Result<Session> {
        Session::build(PathBuf::from(name), config, |b| b.commit_from_memory(bytes))
    }

    fn build(
        path: PathBuf,
        config: &SessionConfig,
        commit: impl FnOnce(&mut ort::session::builder::SessionBuilder) -> ort::Result<ort::session::Session>,
    ) -> Result<Session> {
        let runtime = init(config.device, config.threads)?;
        let model_err = |e: ort::Error| RuntimeError::Model { path: path.clone(), reason: e.to_string() };
        let mut builder = ort::session::Session::builder(&runtime.environment)
            .map_err(model_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| model_err(e.into()))?;
        let device = device::register(&mut builder, config.device, runtime.kind)?;
        let session = commit(&mut builder).map_err(model_err)?;
        let port = |o: &Outlet, what: &'static str| {
            let wrong = |found: String| RuntimeError::ElementType {
                path: path.clone(),
                what,
                name: o.name().to_string(),
                found,
                expected: if what == "input" { "float32 or uint8" } else { "float32" },
            };
            match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    let element = match ty {
                        TensorElementType::Float32 => Element::F32,
                        TensorElementType::Uint8 if what == "input" => Element::U8,
                        other => return Err(wrong(format!("{other:?}"))),
                    };
                    Ok(Port { name: o.name().to_string(), shape: shape.to_vec(), element })
                }
                other => Err(wrong(format!("{other:?}"))),
            }
        };
        let inputs = session.inputs().iter().map(|o| port(o, "input")).collect::<Result<Vec<_>>>()?;
        let outputs = session.outputs().iter().map(|o| port(o, "output")).collect::<Result<Vec<_>>>()?;
        tracing::debug!(model = %path.display(), ?inputs, ?outputs, %device, "session ready");
        Ok(Session { session, path, inputs, outputs, device })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// Runs the model with every declared input given by name (any order); returns every
    /// output, in declared order. Non-contiguous views are copied to standard layout first.
    pub fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Vec<ArrayD<f32>>> {
        let shapes = || inputs.iter().map(|(n, a)| format!("{n} {:?}", a.shape())).collect::<Vec<_>>().join(", ");
        let bad = |reason: String| RuntimeError::Inputs { path: self.path.clone(), reason };
        for (name, _) in inputs {
            if !self.inputs.iter().any(|p| p.name == *name) {
                return Err(bad(format!("no input named '{name}' (inputs: {})", self.input_names())));
            }
            if inputs.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(bad(format!("input '{name}' given twice")));
            }
        }
        if let Some(missing) = self.inputs.iter().find(|p| !inputs.iter().any(|(n, _)| *n == p.name)) {
            return Err(bad(format!("input '{}' is missing", missing.name)));
        }
        if let Some(p) = self.inputs.iter().find(|p| p.element != Element::F32) {
            return Err(bad(format!("input '{}' takes {:?} values, not float32", p.name, p.element)));
        }
        let path = self.path.clone();
        let err = |e: ort::Error| RuntimeError::RunMany { path: path.clone(), inputs: shapes(), reason: e.to_string() };
        let arrays: Vec<_> = inputs.iter().map(|(_, a)| a.as_standard_layout()).collect();
        let mut values = Vec::with_capacity(inputs.len());
        for ((name, _), array) in inputs.iter().zip(&arrays) {
            values.push((*name, TensorRef::from_array_view(array).map_err(err)?.into_dyn()));
        }
        self.run_values(values).map_err(err)
    }

    /// Runs a single-input model on a uint8 tensor (an image batch as decoded, for a classifier
    /// that preprocesses inside its graph).
    fn run_u8(&mut self, input: ArrayViewD<'_, u8>) -> Result<Vec<ArrayD<f32>>> {
        let path = self.path.clone();
        let err = |e: ort::Error| RuntimeError::Run {
            path: path.clone(),
            shape: input.shape().to_vec(),
            reason: e.to_string(),
        };
        let array = input.as_standard_layout();
        let value = TensorRef::from_array_view(&array).map_err(err)?.into_dyn();
        let name = self.inputs[0].name.clone();
        self.run_values(vec![(name.as_str(), value)]).map_err(err)
    }

    fn run_values(&mut self, values: Vec<(&str, ort::value::ValueRef<'_>)>) -> ort::Result<Vec<ArrayD<f32>>> {
        let outputs = denormals::flushing(|| self.session.run(values))?;
        (0..self.outputs.len()).map(|i| Ok(outputs[i].try_extract_array::<f32>()?.to_owned())).collect()
    }

    /// The model's custom metadata (`metadata_props`), e.g. how its input must be preprocessed.
    pub fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        let Ok(meta) = self.session.metadata() else { return Default::default() };
        let keys = meta.custom_keys().unwrap_or_default();
        keys.into_iter().filter_map(|k| meta.custom(&k).map(|v| (k, v))).collect()
    }

    fn input_names(&self) -> String {
        self.inputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// A single-input, single-output model (float32 or uint8 in, float32 out), ready to run.
pub struct Model {
    session: Session,
    /// Declared input and output shapes; -1 marks a dynamic dimension.
    pub input_shape: Vec<i64>,
    pub output_shape: Vec<i64>,
    pub input_element: Element,
    /// Where it runs: `cpu` or `cuda:N`.
    pub device: Device,
}

impl Model {
    pub fn load(path: impl AsRef<Path>, config: &SessionConfig) -> Result<Model> {
        let session = Session::load(path, config)?;
        let (inputs, outputs) = (session.inputs.len(), session.outputs.len());
        if inputs != 1 || outputs != 1 {
            return Err(RuntimeError::Signature { path: session.path.clone(), inputs, outputs });
        }
        let (input_shape, output_shape) = (session.inputs[0].shape.clone(), session.outputs[0].shape.clone());
        let input_element = session.inputs[0].element;
        Ok(Model { input_shape, output_shape, input_element, device: session.device, session })
    }

    pub fn path(&self) -> &Path {
        self.session.path()
    }

    /// The model's custom metadata (see [`Session::metadata`]).
    pub fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        self.session.metadata()
    }

    /// Runs the model on one batch.
    pub fn run(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        let shape = input.shape().to_vec();
        let name = self.session.inputs[0].name.clone();
        let mut out = self.session.run(&[(&name, input)]).map_err(|e| match e {
            RuntimeError::RunMany { path, reason, .. } => RuntimeError::Run { path, shape, reason },
            e => e,
        })?;
        Ok(out.pop().expect("one output"))
    }

    /// Runs a uint8-input model on one batch.
    pub fn run_u8(&mut self, input: ArrayViewD<'_, u8>) -> Result<ArrayD<f32>> {
        if self.input_element != Element::U8 {
            return Err(RuntimeError::Inputs {
                path: self.session.path.clone(),
                reason: "its input takes float32 values, not uint8".into(),
            });
        }
        Ok(self.session.run_u8(input)?.pop().expect("one output"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};
    use sd_onnx::{Dim, dtype, node, value_info};

    /// `sum = a + b`, `product = a * b`, both `[N, 2]`.
    fn two_in_two_out() -> Vec<u8> {
        use prost::Message;
        let dims = [Dim::named("N"), Dim::Fixed(2)];
        let graph = sd_onnx::GraphProto {
            node: vec![
                node("Add", "add", &["a", "b"], &["sum"], vec![]),
                node("Mul", "mul", &["a", "b"], &["product"], vec![]),
            ],
            input: vec![value_info("a", dtype::FLOAT, &dims), value_info("b", dtype::FLOAT, &dims)],
            output: vec![value_info("sum", dtype::FLOAT, &dims), value_info("product", dtype::FLOAT, &dims)],
            ..Default::default()
        };
        let mut m = sd_onnx::model(graph, 13, "test");
        m.metadata_props
            .push(sd_onnx::proto::StringStringEntryProto { key: Some("k".into()), value: Some("v".into()) });
        m.encode_to_vec()
    }

    fn cpu() -> SessionConfig {
        SessionConfig { device: Device::Cpu, threads: Some(1) }
    }

    #[test]
    fn session_with_named_inputs_and_several_outputs() {
        let mut s = Session::from_bytes("pair.onnx", &two_in_two_out(), &cpu()).unwrap();
        assert_eq!(s.inputs().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.outputs()[1], Port { name: "product".into(), shape: vec![-1, 2], element: Element::F32 });
        assert_eq!(s.device, Device::Cpu);
        assert_eq!(s.metadata(), [("k".to_string(), "v".to_string())].into());
        let a = array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn();
        let b = array![[10.0f32, 20.0], [30.0, 40.0]].into_dyn();
        // Any order of inputs; a transposed (non-contiguous) view works too.
        let bt = array![[10.0f32, 30.0], [20.0, 40.0]];
        let out = s.run(&[("b", bt.t().into_dyn()), ("a", a.view())]).unwrap();
        assert_eq!(out[0], array![[11.0f32, 22.0], [33.0, 44.0]].into_dyn());
        assert_eq!(out[1], array![[10.0f32, 40.0], [90.0, 160.0]].into_dyn());
        assert_eq!(s.run(&[("a", a.view()), ("b", b.view())]).unwrap()[0], out[0]);
    }

    #[test]
    fn sessions_flush_denormals_to_zero() {
        let mut s = Session::from_bytes("pair.onnx", &two_in_two_out(), &cpu()).unwrap();
        // 1e-20² = 1e-40 and 1e-39 are denormal: flushed, they are 0; normal values are kept.
        let a = array![[1e-20f32, 1e-39], [1.0, 2.0]].into_dyn();
        let b = array![[1e-20f32, 0.0], [3.0, 4.0]].into_dyn();
        let out = s.run(&[("a", a.view()), ("b", b.view())]).unwrap();
        assert_eq!(out[0], array![[2e-20f32, 0.0], [4.0, 6.0]].into_dyn());
        assert_eq!(out[1], array![[0.0f32, 0.0], [3.0, 8.0]].into_dyn());
    }

    #[test]
    fn session_input_errors_name_the_model_and_the_input() {
        let mut s = Session::from_bytes("pair.onnx", &two_in_two_out(), &cpu()).unwrap();
        let a = ArrayD::<f32>::zeros(IxDyn(&[1, 2]));
        let e = s.run(&[("a", a.view())]).unwrap_err().to_string();
        assert!(e.contains("pair.onnx") && e.contains("'b' is missing"), "{e}");
        let e = s.run(&[("a", a.view()), ("b", a.view()), ("c", a.view())]).unwrap_err().to_string();
        assert!(e.contains("no input named 'c'") && e.contains("a, b"), "{e}");
        let wrong = ArrayD::<f32>::zeros(IxDyn(&[1, 3]));
        let e = s.run(&[("a", a.view()), ("b", wrong.view())]).unwrap_err().to_string();
        assert!(e.contains("pair.onnx") && e.contains("b [1, 3]"), "{e}");
        let e = Session::from_bytes("junk.onnx", b"not a model", &cpu()).err().unwrap().to_string();
        assert!(e.contains("junk.onnx"), "{e}");
    }

    #[test]
    fn model_is_the_single_input_single_output_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.onnx");
        std::fs::write(&path, two_in_two_out()).unwrap();
        let e = Model::load(&path, &cpu()).err().unwrap().to_string();
        assert!(e.contains("exactly one input and one output") && e.contains("has 2 and 2"), "{e}");
    }
}
