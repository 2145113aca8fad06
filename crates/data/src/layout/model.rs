//! `prepare-model`'s output folder, what `bottleneck`, `finetune` and the benchmarks read:
//!
//! | file | contents |
//! |---|---|
//! | `conv_base.onnx` | input [`INPUT`] float32 NHWC `[N, H, W, 3]` (preprocessed), output [`FEATURES`] NHWC `[N, H/32, W/32, 512]` |
//! | `frozen_base.onnx` | same input, output [`BLOCK4_POOL`] NHWC `[N, H/16, W/16, 512]`: what stays frozen when fine-tuning |
//! | `block5/block5_conv{1,2,3}_{kernel,bias}.npy` | block 5's weights, kernel OIHW `[Cout, Cin, 3, 3]`, bias `[Cout]` |
//! | `model.json` | [`ModelInfo`]: what was found and written |
//! | `conv_base.int8.onnx`, `frozen_base.int8.onnx` | with `prepare-model --quantize int8`: the same models statically quantised (QDQ), same inputs and outputs; [`Int8Info`] in `model.json` says how |
//!
//! [`Precision`] picks between the float and int8 files (`--precision` in the stages).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{LayoutError, read_json};
use crate::Preprocess;

pub const CONV_BASE: &str = "conv_base.onnx";
pub const FROZEN_BASE: &str = "frozen_base.onnx";
pub const MODEL_JSON: &str = "model.json";
/// Where `scripts/setup.sh` puts the VGG16 source model, relative to its `.cache` folder.
pub const SETUP_SOURCE: &str = "models/vgg16-keras-imagenet.onnx";
pub const CONV_BASE_INT8: &str = "conv_base.int8.onnx";
pub const FROZEN_BASE_INT8: &str = "frozen_base.int8.onnx";
/// The prepared models' input tensor.
pub const INPUT: &str = "input";
/// The conv base's output tensor.
pub const FEATURES: &str = "features";
/// The frozen part's output tensor.
pub const BLOCK4_POOL: &str = "block4_pool";
/// Block 5's layers, Keras' names.
pub const BLOCK5_LAYERS: [&str; 3] = ["block5_conv1", "block5_conv2", "block5_conv3"];

/// The network a model folder holds: `prepare-model --backbone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// VGG16 (the recipe's): conv base to `[N, H/32, W/32, 512]`, block 5 fine-tuned.
    #[default]
    Vgg16,
    /// EfficientNet-Lite0: conv base to `[N, H/32, W/32, 1280]`, 224x224, `tf` preprocessing.
    EfficientnetLite0,
    /// EfficientNet-Lite2: as Lite0, deeper and wider, 260x260.
    EfficientnetLite2,
}

impl Backbone {
    pub const NAMES: &'static [&'static str] = &["vgg16", "efficientnet-lite0", "efficientnet-lite2"];

    /// How images become this network's input unless told otherwise: VGG16 the recipe's;
    /// EfficientNet-Lite its ImageNet evaluation (native size, centre crop, `tf` preprocessing).
    pub fn image_input(self) -> crate::ModelInput {
        use crate::image::{ImageSize, ResizeMode};
        let lite = |side| crate::ModelInput {
            size: ImageSize::square(side),
            resize: ResizeMode::Crop,
            preprocess: crate::Preprocess::Tf,
            ..crate::ModelInput::RECIPE
        };
        match self {
            Backbone::Vgg16 => crate::ModelInput::RECIPE,
            Backbone::EfficientnetLite0 => lite(224),
            Backbone::EfficientnetLite2 => lite(260),
        }
    }

    /// For `skip_serializing_if`: VGG16 folders' `model.json` stays as it was.
    pub fn is_vgg16(&self) -> bool {
        *self == Backbone::Vgg16
    }
}

impl FromStr for Backbone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vgg16" => Ok(Self::Vgg16),
            "efficientnet-lite0" => Ok(Self::EfficientnetLite0),
            "efficientnet-lite2" => Ok(Self::EfficientnetLite2),
            _ => Err(format!("unknown backbone '{s}' (expected one of: {})", Self::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for Backbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

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
    /// The int8 models, when `prepare-model --quantize int8` wrote them (absent in older files
    /// and fp32-only folders, which therefore read and write as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Info>,
    /// The network (absent in older files and VGG16 folders: VGG16).
    #[serde(default, skip_serializing_if = "Backbone::is_vgg16")]
    pub backbone: Backbone,
    /// How images become this model's input (size, resize, preprocessing): what every stage
    /// uses unless told otherwise. Absent (VGG16): the recipe's, [`crate::ModelInput::RECIPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_input: Option<crate::ModelInput>,
    /// The layers after the frozen part's cut, which fine-tuning trains (VGG16: `block5`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trainable_tail: Vec<String>,
}

impl ModelInfo {
    /// How images become this model's input unless a stage is told otherwise.
    pub fn image_input(&self) -> crate::ModelInput {
        self.image_input.unwrap_or(crate::ModelInput::RECIPE)
    }
}

/// How the int8 models were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Info {
    pub conv_base: String,
    pub frozen_base: String,
    /// e.g. "int8, symmetric, per output channel".
    pub weights: String,
    /// e.g. "uint8, per tensor, calibrated min-max".
    pub activations: String,
    pub calibration: Calibration,
}

/// How many images int8 quantisation calibrates on unless told otherwise (`prepare-model
/// --calibrate-images`; finetune's int8 block 5).
pub const DEFAULT_CALIBRATION_IMAGES: usize = 64;

/// The images the activation ranges were observed on, and the ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub folder: String,
    pub images: usize,
    /// "minmax": each tensor's smallest and largest value over all calibration images.
    pub method: String,
    pub size: crate::image::ImageSize,
    pub resize_filter: crate::image::ResizeFilter,
    pub preprocess: Preprocess,
    /// Per tensor of the float graph: `[min, max]`.
    pub ranges: BTreeMap<String, [f32; 2]>,
}

/// Which conv base / frozen part the stages run: the float32 one or the int8 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Int8,
}

impl Precision {
    pub const NAMES: &'static [&'static str] = &["fp32", "int8"];

    /// For `skip_serializing_if`: outputs of fp32 runs stay as they were before int8 existed.
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    pub fn conv_base(self) -> &'static str {
        match self {
            Precision::Fp32 => CONV_BASE,
            Precision::Int8 => CONV_BASE_INT8,
        }
    }

    pub fn frozen_base(self) -> &'static str {
        match self {
            Precision::Fp32 => FROZEN_BASE,
            Precision::Int8 => FROZEN_BASE_INT8,
        }
    }

    /// The model file of this precision for `model_file`, a conv base or frozen part in a
    /// model folder (either precision's); fp32 leaves any file as given. The file must exist.
    pub fn pick(self, model_file: &Path) -> Result<PathBuf, LayoutError> {
        let name = model_file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let picked = match (self, name) {
            (Precision::Fp32, _) => return Ok(model_file.to_path_buf()),
            (Precision::Int8, CONV_BASE | CONV_BASE_INT8) => model_file.with_file_name(CONV_BASE_INT8),
            (Precision::Int8, FROZEN_BASE | FROZEN_BASE_INT8) => model_file.with_file_name(FROZEN_BASE_INT8),
            (Precision::Int8, _) => {
                return Err(LayoutError::Invalid {
                    path: model_file.into(),
                    reason: format!(
                        "--precision int8 needs a model folder's {CONV_BASE} or {FROZEN_BASE} (it runs the \
                         {CONV_BASE_INT8} / {FROZEN_BASE_INT8} beside it); pass one, or a quantised model with --precision fp32"
                    ),
                });
            }
        };
        if !picked.is_file() {
            let dir = crate::scratch::parent_dir(model_file);
            return Err(LayoutError::Invalid {
                path: picked,
                reason: format!(
                    "missing; run `prepare-model --out {} --quantize int8 --calibrate TRAIN_DIR` first",
                    dir.display()
                ),
            });
        }
        Ok(picked)
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "int8" => Ok(Self::Int8),
            _ => Err(format!("unknown precision '{s}' (expected fp32 or int8)")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
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

/// How images become the input of `model_file` (a conv base or frozen part) unless a stage is
/// told otherwise: its folder's `model.json`, else (a bare ONNX file) the recipe's.
pub fn image_input_of(model_file: &Path) -> Result<crate::ModelInput, LayoutError> {
    match folder_of(model_file) {
        Some(dir) => Ok(dir.info()?.image_input()),
        None => Ok(crate::ModelInput::RECIPE),
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
    fn precision_picks_the_file_beside_the_float_one() {
        let dir = tempfile::tempdir().unwrap();
        let (base, frozen) = (dir.path().join(CONV_BASE), dir.path().join(FROZEN_BASE));
        assert_eq!(Precision::Fp32.pick(&base).unwrap(), base);
        let e = Precision::Int8.pick(&base).unwrap_err().to_string();
        assert!(e.contains(CONV_BASE_INT8) && e.contains("--quantize int8 --calibrate"), "{e}");
        for f in [CONV_BASE_INT8, FROZEN_BASE_INT8] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        assert_eq!(Precision::Int8.pick(&base).unwrap(), dir.path().join(CONV_BASE_INT8));
        assert_eq!(Precision::Int8.pick(&frozen).unwrap(), dir.path().join(FROZEN_BASE_INT8));
        assert_eq!(Precision::Int8.pick(&dir.path().join(CONV_BASE_INT8)).unwrap(), dir.path().join(CONV_BASE_INT8));
        let e = Precision::Int8.pick(Path::new("head.onnx")).unwrap_err().to_string();
        assert!(e.contains("head.onnx") && e.contains("--precision int8 needs"), "{e}");
        assert_eq!(("int8".parse::<Precision>(), Precision::Fp32.to_string()), (Ok(Precision::Int8), "fp32".into()));
    }

    #[test]
    fn model_json_without_int8_reads_and_writes_as_before() {
        let old = r#"{"source":"s","source_blake3":"h","source_input":"i","source_input_layout":"NHWC","input":"input",
            "input_layout":"NHWC","conv_base":"conv_base.onnx","conv_base_output":"features","frozen_base":"frozen_base.onnx",
            "frozen_base_output":"block4_pool","channels":[64],"weights_verified_against":"keras-imagenet",
            "preprocess":"caffe","layers":[],"block5":[]}"#;
        let info: ModelInfo = serde_json::from_str(old).unwrap();
        assert_eq!(info.int8, None);
        assert!(!serde_json::to_string(&info).unwrap().contains("int8"));
    }

    #[test]
    fn missing_info_says_which_stage_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = ModelDir::new(dir.path()).info().unwrap_err().to_string();
        assert!(e.contains("model.json") && e.contains("prepare-model"), "{e}");
    }
}
