//! The inputs of a fine-tuning run, checked up front with errors that name the file and the fix:
//! the prepared model folder (`prepare-model`), the trained head (`train-head`) and whether they
//! fit together at the chosen image size.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sd_data::Preprocess;
use sd_data::image::ImageSize;
use sd_data::layout::model::{self, ModelDir, Precision};
use sd_train::head::Head;
use sd_train::head::export::HeadSpec;

use crate::block5::Block5Weights;
use crate::graphs::Block5Shape;

/// A `prepare-model` output folder, loaded.
pub struct PreparedModel {
    pub dir: ModelDir,
    /// `frozen_base.onnx` (or its int8 copy): images to `block4_pool`.
    pub frozen_base: PathBuf,
    pub precision: Precision,
    /// Block 5's starting weights.
    pub weights: Block5Weights,
    /// The preprocessing the weights expect, when `model.json` knows it.
    pub preprocess: Option<Preprocess>,
}

impl PreparedModel {
    /// Loads the folder, with the frozen part of `precision`.
    pub fn load(dir: &Path, precision: Precision) -> Result<PreparedModel> {
        if !dir.is_dir() {
            bail!("model folder {} does not exist; run `prepare-model --out {}` first", dir.display(), dir.display());
        }
        let folder = ModelDir::new(dir);
        let frozen_base = folder.frozen_base();
        if !frozen_base.is_file() {
            bail!(
                "{} is missing: --model must be the folder prepare-model writes ({}, block5/*.npy, {})",
                frozen_base.display(),
                model::FROZEN_BASE,
                model::MODEL_JSON
            );
        }
        let frozen_base = precision.pick(&frozen_base)?;
        let weights = Block5Weights::load(dir).with_context(|| {
            format!("cannot read block 5's weights from {} (written by prepare-model)", dir.join("block5").display())
        })?;
        let preprocess = match folder.info_path().is_file() {
            true => folder.info()?.preprocess,
            false => None,
        };
        Ok(PreparedModel { dir: folder, frozen_base, precision, weights, preprocess })
    }

    /// Block 5's shape for images of `size`: `block4_pool` is 1/16 of the image (four 2x2
    /// pools, each flooring).
    pub fn block5_shape(&self, size: ImageSize) -> Block5Shape {
        self.weights.shape_for(size)
    }
}

/// Loads a `train-head` output folder.
pub fn load_head(dir: &Path) -> Result<(Head<f32>, HeadSpec)> {
    if !dir.is_dir() {
        bail!("head folder {} does not exist; run `train-head --out {}` first", dir.display(), dir.display());
    }
    sd_train::head::export::load(dir)
        .with_context(|| format!("cannot load the trained head from {} (written by train-head)", dir.display()))
}

/// Checks that the head takes what block 5 gives at `size`.
pub fn check_head_fits(spec: &HeadSpec, head_dir: &Path, shape: &Block5Shape, size: ImageSize) -> Result<()> {
    let out = shape.output().to_vec();
    if spec.input_shape != out {
        bail!(
            "{} expects features of shape {:?}, but block 5 gives {:?} at --size {size}: train the head on \
             bottleneck features of the same model at the same --size (150 gives [4, 4, 512] with VGG16)",
            head_dir.join(sd_train::head::export::HEAD_JSON).display(),
            spec.input_shape,
            out
        );
    }
    Ok(())
}
