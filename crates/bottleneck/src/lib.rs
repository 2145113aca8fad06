//! Bottleneck features: every image of a class-folder data set through the VGG16 conv base.
//!
//! Images are decoded and resized on the rayon pool while ONNX Runtime runs the previous batch
//! (`sd_data::loader`), and features are streamed to `features.npy` batch by batch, so memory
//! does not grow with the data set. Every image is used (the last batch is just smaller) and
//! labels are written from the same batches as the features, so they line up by construction.
//!
//! The output folder (replaced as a whole when complete) is `sd_data::layout::features`.

pub mod cli;
mod merge;
mod shard;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ndarray::Array4;
use sd_data::artifact::StagingDir;
use sd_data::layout::features::{FeatureMeta, FeatureWriter, ShardInfo};
use sd_data::loader::Loader;
use sd_data::{Dataset, ModelInput};
use sd_runtime::{Model, SessionConfig};

pub use merge::merge;
pub use shard::Shard;

/// What `bottleneck` does, all of it.
#[derive(Debug, Clone)]
pub struct Config {
    pub data: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    pub input: ModelInput,
    pub batch_size: usize,
    pub session: SessionConfig,
    pub shard: Option<Shard>,
    pub show_progress: bool,
}

/// What a run did, for the summary line and benchmarks.
#[derive(Debug, Clone)]
pub struct Report {
    pub images: usize,
    pub feature_shape: Vec<usize>,
    pub elapsed: Duration,
    /// Time spent inside ONNX Runtime.
    pub inference: Duration,
    pub device: String,
}

/// Computes features for `config.data` (or one shard of it) into `config.out`.
pub fn extract(config: &Config) -> Result<Report> {
    let start = Instant::now();
    if config.batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    let dataset = Dataset::scan(&config.data)?;
    let total = dataset.len();
    let range = match config.shard {
        Some(s) => s.range(total, config.batch_size),
        None => 0..total,
    };
    let relative = dataset.relative_paths();
    let samples: Arc<[_]> = dataset.samples[range.clone()].to_vec().into();
    let count = samples.len();
    tracing::info!(data = %config.data.display(), images = count, total, classes = %dataset.classes, "scanned");

    let mut model = Model::load(&config.model, &config.session)?;
    check_conv_base(&model)?;

    let staging = StagingDir::create(&config.out)?;
    let mut writer = FeatureWriter::create(staging.path(), count)?;
    let mut feature_shape = Vec::new();
    let mut inference = Duration::ZERO;
    let bar = sd_cli::progress_bar(count as u64, "bottleneck", config.show_progress);
    for batch in Loader::in_order(samples.clone(), config.input.loader(config.batch_size)) {
        let batch = batch?;
        let input = config.input.tensor(&batch);
        let t = Instant::now();
        let output = model.run(input.view().into_dyn())?;
        inference += t.elapsed();
        if output.shape()[0] != batch.len() {
            bail!("{} returned {} rows for a batch of {}", config.model.display(), output.shape()[0], batch.len());
        }
        feature_shape = output.shape()[1..].to_vec();
        check_features(&model, config.input.size, &feature_shape)?;
        writer.set_shape(&feature_shape)?;
        let files: Vec<&str> = batch.samples.iter().map(|&s| relative[range.start + s].as_str()).collect();
        writer.write(output.as_slice().context("model output is not contiguous")?, &batch.labels, &files)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    if count == 0 {
        // An empty shard: one zero image gives the feature shape.
        let (w, h) = (config.input.size.width as usize, config.input.size.height as usize);
        feature_shape = model.run(Array4::<f32>::zeros((1, h, w, 3)).view().into_dyn())?.shape()[1..].to_vec();
        check_features(&model, config.input.size, &feature_shape)?;
        writer.set_shape(&feature_shape)?;
    }
    let meta = FeatureMeta {
        data: config.data.display().to_string(),
        model: config.model.display().to_string(),
        size: config.input.size,
        resize_filter: config.input.resize_filter,
        preprocess: config.input.preprocess,
        batch_size: config.batch_size,
        classes: dataset.classes.names().to_vec(),
        count,
        feature_shape: feature_shape.clone(),
        shard: config.shard.map(|s| ShardInfo {
            index: s.index,
            count: s.count,
            start: range.start,
            end: range.end,
            total,
        }),
    };
    writer.finish(&dataset.classes, &meta)?;
    staging.commit()?;
    Ok(Report { images: count, feature_shape, elapsed: start.elapsed(), inference, device: model.device.to_string() })
}

const USE_CONV_BASE: &str = "pass the conv_base.onnx written by prepare-model (artifacts/model/conv_base.onnx)";

/// Rejects, before any work, models that are not a conv base: one that cannot take an NHWC RGB
/// batch (a head), one whose output is not a feature map (a whole classifier gives [N, 1]),
/// and, in a prepare-model folder, any file other than the conv base its model.json names, float
/// or int8 (its frozen part gives block 4's features, with the same declared shape).
fn check_conv_base(model: &Model) -> Result<()> {
    let (path, input, output) = (model.path(), &model.input_shape, &model.output_shape);
    if input.len() != 4 || !(input[3] == 3 || input[3] == -1) {
        bail!("{} takes input of shape {input:?}, not an image batch [N, H, W, 3]; {USE_CONV_BASE}", path.display());
    }
    if output.len() != 4 {
        bail!(
            "{} outputs shape {output:?}, not a feature map [N, H/32, W/32, C]: it is not a conv base (a whole classifier?); {USE_CONV_BASE}",
            path.display()
        );
    }
    if let Some(folder) = sd_data::layout::model::folder_of(path) {
        let info = folder.info()?;
        let channels = info.channels.last().copied().unwrap_or_default() as i64;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let int8 = info.int8.is_some() && name == sd_data::layout::model::CONV_BASE_INT8;
        if !(name == info.conv_base || int8) || !(output[3] == channels || output[3] == -1) {
            bail!(
                "{} is not the conv base of {}, which is {}; {USE_CONV_BASE}",
                path.display(),
                folder.info_path().display(),
                folder.conv_base().display()
            );
        }
    }
    Ok(())
}

/// A conv base's features have a 32nd of the image's size (five 2x2 pools; block 4's have a
/// 16th): checked on the first batch, before anything is written.
fn check_features(model: &Model, size: sd_data::image::ImageSize, shape: &[usize]) -> Result<()> {
    // A 32nd of the size, rounded down (VGG16's max pools) or up (EfficientNet's 'SAME' strides).
    let want = [size.height as usize / 32, size.width as usize / 32];
    let fits = |d: usize, side: u32| d == side as usize / 32 || d == (side as usize).div_ceil(32);
    if shape.len() != 3 || !fits(shape[0], size.height) || !fits(shape[1], size.width) {
        bail!(
            "{} gives features of shape {shape:?} for {size} images, where a conv base gives [{}, {}, C] (a 32nd of the size): is it the frozen part (block 4, a 16th)? {USE_CONV_BASE}",
            model.path().display(),
            want[0],
            want[1]
        );
    }
    Ok(())
}
