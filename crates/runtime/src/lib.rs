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

mod device;
mod library;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::{ArrayD, ArrayViewD};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Outlet, TensorElementType, TensorRef, ValueType};

pub use device::Device;
pub use library::{LibraryKind, find_library};

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
    #[error("model {path}: {what} '{name}' is not a float32 tensor")]
    NotFloat { path: PathBuf, what: &'static str, name: String },
    #[error("running {path} on input of shape {shape:?}: {reason}")]
    Run { path: PathBuf, shape: Vec<usize>, reason: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The ONNX Runtime this process loaded.
pub struct Runtime {
    pub library: PathBuf,
    pub kind: LibraryKind,
    environment: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Loads ONNX Runtime for `device` (once per process).
pub fn init(device: Device) -> Result<&'static Runtime> {
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
    let environment = ort::init_from(&library)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("smalldata")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    tracing::info!(library = %library.display(), ?kind, "ONNX Runtime loaded");
    Ok(RUNTIME.get_or_init(|| Runtime { library, kind, environment }))
}

/// Session settings shared by every stage (`--device`, `--threads`).
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    pub device: Device,
    /// Intra-op threads for the CPU provider; `None` lets ONNX Runtime use all physical cores.
    pub threads: Option<usize>,
}

/// A single-input, single-output float32 model, ready to run.
pub struct Model {
    session: Session,
    path: PathBuf,
    input: String,
    output: String,
    /// Declared input and output shapes; -1 marks a dynamic dimension.
    pub input_shape: Vec<i64>,
    pub output_shape: Vec<i64>,
    /// Where it runs: `cpu` or `cuda:N`.
    pub device: Device,
}

impl Model {
    pub fn load(path: impl AsRef<Path>, config: &SessionConfig) -> Result<Model> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(RuntimeError::Model { path, reason: "no such file (run prepare-model first?)".into() });
        }
        let runtime = init(config.device)?;
        let model_err = |e: ort::Error| RuntimeError::Model { path: path.clone(), reason: e.to_string() };
        let mut builder = Session::builder(&runtime.environment)
            .map_err(model_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| model_err(e.into()))?;
        if let Some(n) = config.threads {
            builder = builder.with_intra_threads(n).map_err(|e| model_err(e.into()))?;
        }
        let device = device::register(&mut builder, config.device, runtime.kind)?;
        let session = builder.commit_from_file(&path).map_err(model_err)?;
        let (inputs, outputs) = (session.inputs().len(), session.outputs().len());
        if inputs != 1 || outputs != 1 {
            return Err(RuntimeError::Signature { path, inputs, outputs });
        }
        let float_shape = |o: &Outlet, what: &'static str| match o.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Ok(shape.to_vec()),
            _ => Err(RuntimeError::NotFloat { path: path.clone(), what, name: o.name().to_string() }),
        };
        let input_shape = float_shape(&session.inputs()[0], "input")?;
        let output_shape = float_shape(&session.outputs()[0], "output")?;
        let input = session.inputs()[0].name().to_string();
        let output = session.outputs()[0].name().to_string();
        tracing::debug!(model = %path.display(), %input, ?input_shape, %output, ?output_shape, %device, "session ready");
        Ok(Model { session, path, input, output, input_shape, output_shape, device })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the model on one batch.
    pub fn run(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        let shape = input.shape().to_vec();
        let err =
            |e: ort::Error| RuntimeError::Run { path: self.path.clone(), shape: shape.clone(), reason: e.to_string() };
        let tensor = TensorRef::from_array_view(input).map_err(err)?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(err)?;
        let out = outputs[self.output.as_str()].try_extract_array::<f32>().map_err(err)?.to_owned();
        Ok(out)
    }
}
