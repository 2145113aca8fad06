//! Writing a finished run: the classifier, block 5's and the head's weights, metrics, history
//! and curves, all into one folder that appears only when complete.

use std::path::Path;

use anyhow::Result;
use sd_data::Classes;
use sd_data::artifact::{StagingDir, write_json};
use sd_data::layout::classifier::ClassifierMeta;
use sd_data::layout::model::Precision;
use sd_train::metrics::Evaluation;
use sd_train::summary::{EpochSummary, METRICS, Source};
use serde::Serialize;

use crate::graphs::Block5Shape;
use crate::train::{FinetuneConfig, Finetuned, Validation};

/// The fine-tuned head, in `train-head`'s format.
pub const HEAD_DIR: &str = "head";

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Validation before fine-tuning (the trained head on the prepared block 5).
    pub initial: Validation,
    #[serde(flatten)]
    pub epochs: EpochSummary,
    /// Caching frozen features, before training (the initial validation is part of `seconds`).
    pub setup_seconds: f64,
    pub device: String,
    pub train: Source,
    pub validation: Source,
    pub model: String,
    /// The frozen part's precision (written only for int8).
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    pub head: String,
    pub classes: Classes,
    /// The exported weights on the validation set: accuracy, top-k, per-class precision,
    /// recall and F1, the confusion matrix.
    pub evaluation: Evaluation,
    pub config: FinetuneConfig,
}

impl Metrics {
    pub fn of(
        t: &Finetuned,
        config: &FinetuneConfig,
        sources: [Source; 2],
        model: &Path,
        precision: Precision,
        head: &Path,
        classes: &Classes,
    ) -> Metrics {
        let [train, validation] = sources;
        Metrics {
            initial: t.initial,
            epochs: EpochSummary::of(&t.fit),
            setup_seconds: t.setup_seconds,
            device: t.device.clone(),
            train,
            validation,
            model: model.display().to_string(),
            precision,
            head: head.display().to_string(),
            classes: classes.clone(),
            evaluation: t.fit.validation.report(classes.names()),
            config: config.clone(),
        }
    }
}

/// Writes every output into `out` (replaced as a whole once complete).
pub fn write(
    out: &Path,
    t: &Finetuned,
    metrics: &Metrics,
    frozen_base: &Path,
    shape: &Block5Shape,
    int8: Option<&crate::export::Int8Calibration>,
) -> Result<()> {
    let staging = StagingDir::create(out)?;
    let dir = staging.path();
    let input = metrics.config.input;
    let meta = ClassifierMeta {
        preprocess: Some(input.preprocess),
        size: Some(input.size),
        resize_filter: Some(input.resize_filter),
        classes: Some(metrics.classes.clone()),
        resize: Some(input.resize),
        backbone: None,
    };
    let (weights, head) = &t.fit.weights;
    let classifier =
        crate::export::classifier(frozen_base, weights, shape, head, &meta, metrics.config.classifier_input, int8)?;
    sd_onnx::save(&classifier, dir.join(crate::export::CLASSIFIER))?;
    weights.save(dir)?;
    sd_train::head::export::save(head, &shape.output(), &metrics.classes, &dir.join(HEAD_DIR))?;
    write_json(dir.join(METRICS), metrics)?;
    sd_train::summary::write_history(dir, &t.fit.history, Some(metrics.epochs.exported.epoch))?;
    staging.commit()?;
    Ok(())
}
