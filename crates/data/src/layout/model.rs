//! `prepare-model`'s output folder, what `bottleneck`, `finetune` and the benchmarks read:
//!
//! | file | contents |
//! |---|---|
//! | `conv_base.onnx` | input [`INPUT`] float32 NHWC `[N, H, W, 3]` (preprocessed), output [`FEATURES`] NHWC `[N, H/32, W/32, 512]` |
//! | `frozen_base.onnx` | same input, output [`BLOCK4_POOL`] NHWC `[N, H/16, W/16, 512]`: what stays frozen when fine-tuning |
//! | `block5/block5_conv{1,2,3}_{kernel,bias}.npy` | block 5's weights, kernel OIHW `[Cout, Cin, 3, 3]`, bias `[Cout]` |
//! | `model.json` | [`ModelInfo`]: what was found and written |

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LayoutError, read_json};
use crate::Preprocess;

pub const CONV_BASE: &str = "conv_base.onnx";
pub const FROZEN_BASE: &str = "frozen_base.onnx";
pub const MODEL_JSON: &str = "model.json";
/// The prepared models' input tensor.
pub const INPUT: &str = "input";
/// The conv base's output tensor.
pub const FEATURES: &str = "features";
/// The frozen part's output tensor.
pub const BLOCK4_POOL: &str = "block4_pool";
/// Block 5's layers, Keras' names.
pub const BLOCK5_LAYERS: [&str; 3] = ["block5_conv1", "block5_conv2", "block5_conv3"];

/// Memory layout of an image batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    Nhwc,
    Nchw,
}

/// One convolution of the source model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    pub node: String,
    pub kernel_shape: Vec<usize>,
}

/// Where one block 5 layer's weights are, relative to the folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightFiles {
    pub name: String,
    pub kernel: String,
    pub bias: String,
}

impl WeightFiles {
    /// The files of block 5's layer `i` (0..3).
    pub fn block5(i: usize) -> WeightFiles {
        let name = BLOCK5_LAYERS[i];
        WeightFiles {
            name: name.into(),
            kernel: format!("block5/{name}_kernel.npy"),
            bias: format!("block5/{name}_bias.npy"),
        }
    }
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub source: String,
    pub source_blake3: String,
    pub source_input: String,
    pub source_input_layout: Layout,
    pub input: String,
    pub input_layout: Layout,
    pub conv_base: String,
    pub conv_base_output: String,
    pub frozen_base: String,
    pub frozen_base_output: String,
    pub channels: Vec<usize>,
    /// `"keras-imagenet"`, a fingerprint file's path, or `"skipped"`.
    pub weights_verified_against: String,
    /// The preprocessing these weights expect, when known (the Keras ImageNet weights: caffe).
    pub preprocess: Option<Preprocess>,
    pub layers: Vec<LayerInfo>,
    pub block5: Vec<WeightFiles>,
}

/// A prepared model folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
}

impl ModelDir {
    pub fn new(dir: impl AsRef<Path>) -> ModelDir {
        ModelDir { dir: dir.as_ref().to_path_buf() }
    }

    pub fn conv_base(&self) -> PathBuf {
        self.dir.join(CONV_BASE)
    }

    pub fn frozen_base(&self) -> PathBuf {
        self.dir.join(FROZEN_BASE)
    }

    pub fn info_path(&self) -> PathBuf {
        self.dir.join(MODEL_JSON)
    }

    /// Reads `model.json`.
    pub fn info(&self) -> Result<ModelInfo, LayoutError> {
        read_json(&self.info_path(), &format!("run `prepare-model --out {}` first", self.dir.display()))
    }

    pub fn write_info(&self, info: &ModelInfo) -> Result<(), LayoutError> {
        Ok(crate::artifact::write_json(self.info_path(), info)?)
    }

    /// Paths of block 5's layer `i` (kernel, bias).
    pub fn block5(&self, i: usize) -> (PathBuf, PathBuf) {
        let f = WeightFiles::block5(i);
        (self.dir.join(f.kernel), self.dir.join(f.bias))
    }
}

/// The model folder a conv base or frozen part lives in, if it is one (`model.json` beside it).
pub fn folder_of(model_file: &Path) -> Option<ModelDir> {
    let dir = crate::scratch::parent_dir(model_file);
    dir.join(MODEL_JSON).is_file().then(|| ModelDir::new(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block5_files_are_named_after_keras_layers() {
        let f = WeightFiles::block5(2);
        assert_eq!(
            (f.kernel.as_str(), f.bias.as_str()),
            ("block5/block5_conv3_kernel.npy", "block5/block5_conv3_bias.npy")
        );
        let m = ModelDir::new("artifacts/model");
        assert_eq!(m.block5(0).0, Path::new("artifacts/model/block5/block5_conv1_kernel.npy"));
        assert_eq!(m.frozen_base(), Path::new("artifacts/model/frozen_base.onnx"));
    }

    #[test]
    fn missing_info_says_which_stage_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = ModelDir::new(dir.path()).info().unwrap_err().to_string();
        assert!(e.contains("model.json") && e.contains("prepare-model"), "{e}");
    }
}
