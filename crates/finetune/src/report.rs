//! Writing a finished run: the classifier, block 5's and the head's weights, metrics, history
//! and curves, all into one folder that appears only when complete.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use sd_data::artifact::{StagingDir, write_bytes, write_json, write_lines};
use sd_head::train::EpochStats;
use sd_predict::ClassifierMeta;
use serde::Serialize;

use crate::graphs::Block5Shape;
use crate::train::{FinetuneConfig, Finetuned, Validation};

pub use sd_head::report::{CURVES, HISTORY, METRICS, Source};

/// The fine-tuned head, in `train-head`'s format.
pub const HEAD_DIR: &str = "head";

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Validation before fine-tuning (the trained head on the prepared block 5).
    pub initial: Validation,
    /// The last epoch.
    pub last: EpochStats,
    /// The epoch with the best validation accuracy (ties: lower validation loss).
    pub best: EpochStats,
    /// The epoch whose weights were written (`last`, or `best` with `keep_best`).
    pub exported: EpochStats,
    pub epochs: usize,
    /// Training and validation, all epochs.
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    /// Caching frozen features and the initial validation, before the first epoch.
    pub setup_seconds: f64,
    pub device: String,
    pub train: Source,
    pub validation: Source,
    pub model: String,
    pub head: String,
    pub classes: BTreeMap<String, i64>,
    pub config: FinetuneConfig,
}

impl Metrics {
    pub fn of(
        t: &Finetuned,
        config: &FinetuneConfig,
        sources: [Source; 2],
        model: &Path,
        head: &Path,
        classes: &BTreeMap<String, i64>,
    ) -> Metrics {
        let [train, validation] = sources;
        Metrics {
            initial: t.initial,
            last: *t.history.last().expect("at least one epoch"),
            best: t.history[t.best],
            exported: t.history[t.exported],
            epochs: t.history.len(),
            seconds: t.seconds,
            seconds_per_epoch: t.seconds / t.history.len() as f64,
            setup_seconds: t.setup_seconds,
            device: t.device.clone(),
            train,
            validation,
            model: model.display().to_string(),
            head: head.display().to_string(),
            classes: classes.clone(),
            config: config.clone(),
        }
    }
}

/// Writes every output into `out` (replaced as a whole once complete).
pub fn write(out: &Path, t: &Finetuned, metrics: &Metrics, frozen_base: &Path, shape: &Block5Shape) -> Result<()> {
    let staging = StagingDir::create(out)?;
    let dir = staging.path();
    let config = &metrics.config;
    let meta = ClassifierMeta {
        preprocess: Some(config.preprocess),
        size: Some(config.size),
        resize_filter: Some(config.resize_filter),
        classes: Some(metrics.classes.clone()),
    };
    let classifier = crate::export::classifier(frozen_base, &t.weights, shape, &t.head, &meta)?;
    sd_onnx::save(&classifier, dir.join(crate::export::CLASSIFIER))?;
    t.weights.save(dir)?;
    sd_head::export::save(&t.head, &shape.output(), &metrics.classes, &dir.join(HEAD_DIR))?;
    write_json(dir.join(METRICS), metrics)?;
    write_lines(dir.join(HISTORY), &sd_head::report::history_csv(&t.history))?;
    let svg = sd_head::report::curves_svg(&t.history).map_err(anyhow::Error::msg)?;
    write_bytes(dir.join(CURVES), svg.as_bytes())?;
    staging.commit()?;
    Ok(())
}

/// Keras-style epoch line.
pub fn epoch_line(h: &EpochStats, epochs: usize) -> String {
    sd_head::report::epoch_line(h, epochs)
}
