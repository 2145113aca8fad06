//! Bottleneck features: every image of a class-folder data set through the VGG16 conv base.
//!
//! Images are decoded and resized on the rayon pool while ONNX Runtime runs the previous batch
//! (`sd_data::loader`), and features are streamed to `features.npy` batch by batch, so memory
//! does not grow with the data set. Every image is used (the last batch is just smaller) and
//! labels are written from the same batches as the features, so they line up by construction.
//!
//! Output folder (replaced as a whole when complete):
//! * `features.npy`: float32 `[N, h, w, C]` (NHWC, `[N, 4, 4, 512]` at 150x150)
//! * `labels.npy`: int64 `[N]`, class indices
//! * `files.txt`: the image paths relative to the data folder, one per line, same order
//! * `classes.json`: class name -> index (`{"cats": 0, "dogs": 1}`)
//! * `bottleneck.json`: how they were made (model, size, preprocessing, shard)

pub mod cli;
mod merge;
mod shard;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ndarray::Array4;
use sd_data::artifact::{AtomicFile, StagingDir};
use sd_data::image::{ImageSize, ResizeFilter};
use sd_data::loader::{Loader, LoaderConfig};
use sd_data::npy::NpyWriter;
use sd_data::{Dataset, Preprocess};
use sd_runtime::{Model, SessionConfig};
use serde::{Deserialize, Serialize};

pub use merge::merge;
pub use shard::Shard;

pub const FEATURES: &str = "features.npy";
pub const LABELS: &str = "labels.npy";
pub const FILES: &str = "files.txt";
pub const CLASSES: &str = "classes.json";
pub const META: &str = "bottleneck.json";

/// What `bottleneck` does, all of it.
#[derive(Debug, Clone)]
pub struct Config {
    pub data: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    pub size: ImageSize,
    pub batch_size: usize,
    pub preprocess: Preprocess,
    pub resize_filter: ResizeFilter,
    pub session: SessionConfig,
    pub shard: Option<Shard>,
    pub show_progress: bool,
}

/// `bottleneck.json`: the parameters that determine the features. Deterministic (no timings),
/// so that the same inputs give byte-identical outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub data: String,
    pub model: String,
    pub size: ImageSize,
    pub resize_filter: ResizeFilter,
    pub preprocess: Preprocess,
    pub batch_size: usize,
    pub classes: Vec<String>,
    /// Images in this output.
    pub count: usize,
    pub feature_shape: Vec<usize>,
    /// Present for one shard of a larger run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: usize,
    pub count: usize,
    /// Sample range of the whole data set that this shard holds.
    pub start: usize,
    pub end: usize,
    pub total: usize,
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
        bail!("--batch-size must be at least 1");
    }
    let dataset = Dataset::scan(&config.data)?;
    let total = dataset.len();
    let range = match config.shard {
        Some(s) => s.range(total, config.batch_size),
        None => 0..total,
    };
    let classes = dataset.classes.clone();
    let relative = dataset.relative_paths();
    let samples: Arc<[_]> = dataset.samples[range.clone()].to_vec().into();
    let count = samples.len();
    tracing::info!(data = %config.data.display(), images = count, total, classes = ?classes, "scanned");

    let mut model = Model::load(&config.model, &config.session)?;
    check_model_input(&model)?;

    let staging = StagingDir::create(&config.out)?;
    let dir = staging.path();
    let mut features: Option<NpyWriter<f32>> = None;
    let mut labels = NpyWriter::<i64>::create(dir.join(LABELS), count, &[])?;
    let mut files = AtomicFile::create(dir.join(FILES))?;
    let mut feature_shape = Vec::new();
    let mut inference = Duration::ZERO;

    let (w, h) = (config.size.width as usize, config.size.height as usize);
    let mut loader_config = LoaderConfig::new(config.size.width, config.size.height, config.batch_size);
    loader_config.filter = config.resize_filter;
    let bar = sd_cli::progress_bar(count as u64, "bottleneck", config.show_progress);
    for batch in Loader::in_order(samples.clone(), loader_config) {
        let batch = batch?;
        let mut input = Array4::<f32>::zeros((batch.len(), h, w, 3));
        config.preprocess.write_hwc_bytes(&batch.pixels, input.as_slice_mut().expect("standard layout"));
        let t = Instant::now();
        let output = model.run(input.view().into_dyn())?;
        inference += t.elapsed();

        let writer = match &mut features {
            Some(f) => f,
            None => {
                feature_shape = output.shape()[1..].to_vec();
                features.insert(NpyWriter::create(dir.join(FEATURES), count, &feature_shape)?)
            }
        };
        if output.shape()[0] != batch.len() {
            bail!("{} returned {} rows for a batch of {}", config.model.display(), output.shape()[0], batch.len());
        }
        writer.write_rows(output.as_slice().context("model output is not contiguous")?)?;
        labels.write_rows(&batch.labels.iter().map(|&l| l as i64).collect::<Vec<_>>())?;
        for &s in &batch.samples {
            writeln!(files, "{}", relative[range.start + s]).with_context(|| format!("writing {FILES}"))?;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    let features = match features {
        Some(f) => f,
        None => {
            // An empty shard: one zero image gives the feature shape.
            feature_shape = model.run(Array4::<f32>::zeros((1, h, w, 3)).view().into_dyn())?.shape()[1..].to_vec();
            NpyWriter::create(dir.join(FEATURES), 0, &feature_shape)?
        }
    };
    features.finish()?;
    labels.finish()?;
    files.commit()?;
    sd_data::artifact::write_json(dir.join(CLASSES), &dataset.class_indices())?;
    let meta = Meta {
        data: config.data.display().to_string(),
        model: config.model.display().to_string(),
        size: config.size,
        resize_filter: config.resize_filter,
        preprocess: config.preprocess,
        batch_size: config.batch_size,
        classes,
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
    sd_data::artifact::write_json(dir.join(META), &meta)?;
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

/// Reads `bottleneck.json` from an output folder.
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let p = dir.join(META);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("reading {} (is {} a bottleneck output?)", p.display(), dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid {META}", p.display()))
}
