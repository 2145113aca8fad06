//! `train-head`'s `metrics.json`; `history.csv` and `curves.svg` are `sd-train`'s.

use std::path::Path;

use sd_train::report::{EpochSummary, METRICS, Source};
use serde::Serialize;

use crate::train::{TrainConfig, Trained};

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub epochs: EpochSummary,
    pub train: Source,
    pub validation: Source,
    pub config: TrainConfig,
}

impl Metrics {
    pub fn of(t: &Trained, config: &TrainConfig, train: Source, validation: Source) -> Metrics {
        Metrics { epochs: EpochSummary::of(t), train, validation, config: config.clone() }
    }
}

/// Writes `metrics.json`, `history.csv` and `curves.svg` into `dir`, atomically.
pub fn write(dir: &Path, metrics: &Metrics, t: &Trained) -> Result<(), sd_data::artifact::WriteError> {
    sd_data::artifact::write_json(dir.join(METRICS), metrics)?;
    sd_train::report::write_history(dir, &t.history)
}
