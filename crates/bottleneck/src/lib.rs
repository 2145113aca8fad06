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
    check_model_input(&model)?;

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

/// Rejects models that cannot take an NHWC RGB batch (e.g. a head or a full classifier).
fn check_model_input(model: &Model) -> Result<()> {
    let s = &model.input_shape;
    if s.len() != 4 || !(s[3] == 3 || s[3] == -1) {
        bail!(
            "{} takes input of shape {:?}, not an image batch [N, H, W, 3]; pass the conv_base.onnx written by prepare-model",
            model.path().display(),
            s
        );
    }
    Ok(())
}
