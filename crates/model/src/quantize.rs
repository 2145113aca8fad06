//! `prepare-model --quantize int8`: calibrates the activation ranges by running the float conv
//! base (with its intermediate tensors as extra outputs, `sd_onnx::quantize::calibration_model`)
//! on a few dozen training images through ONNX Runtime, then writes the statically quantised
//! conv base and frozen part (`sd_onnx::quantize::quantize`) beside the float ones. Both cuts
//! share the tensor names of the source graph, so one calibration serves both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;
use sd_data::layout::model::{CONV_BASE_INT8, Calibration, FROZEN_BASE_INT8, INPUT, Int8Info};
use sd_data::loader::Loader;
use sd_data::{Dataset, ModelInput};
use sd_onnx::ModelProto;
use sd_onnx::quantize::{Range, observe_ranges, quantize};
use sd_runtime::SessionConfig;

/// Images per calibration batch: the intermediate activations of a batch are all held at once.
const BATCH: usize = 8;

/// Where the calibration images come from and how they become model input.
#[derive(Debug, Clone)]
pub struct CalibrationConfig {
    /// A class-folder data set (e.g. the training images).
    pub folder: PathBuf,
    /// How many images, spread evenly over the folder's sorted list (all when it has fewer).
    pub images: usize,
    pub input: ModelInput,
    pub session: SessionConfig,
}

/// Observes every tensor the quantisation needs on the calibration images (min-max).
pub fn calibrate(conv_base: &ModelProto, config: &CalibrationConfig) -> Result<Calibration> {
    let dataset = Dataset::scan(&config.folder)
        .with_context(|| format!("reading the calibration images (--calibrate {})", config.folder.display()))?;
    if dataset.is_empty() {
        bail!("--calibrate {} has no images; pass a class folder of training images", config.folder.display());
    }
    let samples: Arc<[_]> = dataset.spread(config.images).into();
    let n = samples.len();
    let batches = Loader::in_order(samples, config.input.loader(BATCH))
        .map(|batch| -> Result<ArrayD<f32>> { Ok(config.input.tensor(&batch?).into_dyn()) });
    let ranges = observe_ranges(conv_base, "the conv base", INPUT, &config.session, batches)?;
    tracing::info!(images = n, tensors = ranges.len(), "calibrated activation ranges");
    Ok(Calibration {
        folder: config.folder.display().to_string(),
        images: n,
        method: "minmax".into(),
        size: config.input.size,
        resize_filter: config.input.resize_filter,
        preprocess: config.input.preprocess,
        ranges: ranges.into_iter().map(|(k, r)| (k, [r.min, r.max])).collect(),
    })
}

/// Calibrates on `config`'s images and writes the int8 conv base and frozen part into `dir`.
pub fn write_int8(
    dir: &Path,
    conv_base: &ModelProto,
    frozen: &ModelProto,
    config: &CalibrationConfig,
) -> Result<Int8Info> {
    let calibration = calibrate(conv_base, config)?;
    let ranges: BTreeMap<String, Range> =
        calibration.ranges.iter().map(|(k, [min, max])| (k.clone(), Range { min: *min, max: *max })).collect();
    for (model, file) in [(conv_base, CONV_BASE_INT8), (frozen, FROZEN_BASE_INT8)] {
        let q = quantize(model, &ranges).with_context(|| format!("quantising {file}"))?;
        sd_onnx::save(&q, dir.join(file))?;
    }
    Ok(Int8Info {
        conv_base: CONV_BASE_INT8.into(),
        frozen_base: FROZEN_BASE_INT8.into(),
        weights: "int8, symmetric, one scale per output channel".into(),
        activations: "uint8, one scale and zero point per tensor (calibrated min-max, widened to hold 0)".into(),
        calibration,
    })
}
