//! `train-head`'s `metrics.json`; `history.csv` and `curves.svg` are `sd-train`'s.

use std::path::Path;

use sd_train::metrics::Evaluation;
use sd_train::summary::{EpochSummary, METRICS, Source};
use serde::Serialize;

use crate::train::{TrainConfig, Trained};

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub epochs: EpochSummary,
    pub train: Source,
    pub validation: Source,
    /// The exported head on the validation set: accuracy, top-k, per-class precision, recall
    /// and F1, the confusion matrix.
    pub evaluation: Evaluation,
    pub config: TrainConfig,
}

impl Metrics {
    pub fn of(t: &Trained, config: &TrainConfig, train: Source, validation: Source, evaluation: Evaluation) -> Metrics {
        Metrics { epochs: EpochSummary::of(t), train, validation, evaluation, config: config.clone() }
    }
}

/// Writes `metrics.json`, `history.csv` and `curves.svg` into `dir`, atomically.
pub fn write(dir: &Path, metrics: &Metrics, t: &Trained) -> Result<(), sd_data::artifact::WriteError> {
    sd_data::artifact::write_json(dir.join(METRICS), metrics)?;
    sd_train::summary::write_history(dir, &t.history, Some(metrics.epochs.exported.epoch))
}
