//! `predict --data`: a classifier over a labelled class-folder data set: accuracy, top-k,
//! per-class precision/recall/F1, the confusion matrix and the loss (`metrics.json`), and every
//! image's prediction (`predictions.csv`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use sd_data::artifact::{AtomicFile, StagingDir};
use sd_data::image::{ImageSize, ResizeFilter};
use sd_data::loader::Loader;
use sd_data::{Dataset, Preprocess};
use sd_train::Loss;
use sd_train::loss::argmax;
use sd_train::metrics::{Evaluation, Tally};
use serde::Serialize;

use crate::classifier::{Classifier, Tta, distribution};
use crate::csv_field;

pub use sd_data::layout::predict::{METRICS, PREDICTION_FIELDS, PREDICTIONS};

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub model: String,
    pub data: String,
    /// Which split of a data set `data` is (`predict --data-root`): `test`, held out and used
    /// once, or `validation`, which also chose the model. Absent for `--data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    pub size: ImageSize,
    pub preprocess: Preprocess,
    pub resize_filter: ResizeFilter,
    pub tta: Tta,
    pub device: String,
    pub seconds: f64,
}

/// Predicts every image of `data` (the `split` of a data set, when it is one); writes
/// `predictions.csv` and `metrics.json` into `out` (replaced as a whole) when given.
pub fn evaluate(
    classifier: &mut Classifier,
    data: &PathBuf,
    split: Option<&str>,
    out: Option<&PathBuf>,
    batch_size: usize,
    show_progress: bool,
) -> Result<Metrics> {
    let start = Instant::now();
    let dataset = Dataset::scan(data)?;
    let classes = match &classifier.classes {
        Some(classes) => {
            dataset.expect_classes(classes, &format!("the classifier {}", classifier.path.display()))?;
            classes.clone()
        }
        None => dataset.classes.clone(),
    };
    classifier.check_classes(&classes, &data.display().to_string())?;
    let classes = classes.names().to_vec();
    let relative = dataset.relative_paths();
    let samples: Arc<[_]> = dataset.samples.clone().into();

    let staging = out.map(StagingDir::create).transpose()?;
    let mut csv = staging.as_ref().map(|s| AtomicFile::create(s.path().join(PREDICTIONS))).transpose()?;
    if let Some(f) = &mut csv {
        let columns: Vec<String> = classes.iter().map(|c| csv_field(&format!("p_{c}"))).collect();
        writeln!(f, "{},{}", PREDICTION_FIELDS.join(","), columns.join(",")).context("writing predictions.csv")?;
    }
    let bar = sd_cli::progress_bar(samples.len() as u64, "predict", show_progress);
    let mut tally = Tally::new(Loss::for_classes(classes.len()));
    for batch in Loader::in_order(samples.clone(), classifier.loader(batch_size)) {
        let batch = batch?;
        let probabilities = classifier.probabilities(&batch)?;
        tally.add_probabilities(&probabilities, &batch.labels);
        let width = probabilities.len() / batch.len();
        for ((&s, &label), p) in batch.samples.iter().zip(&batch.labels).zip(probabilities.chunks_exact(width)) {
            if let Some(f) = &mut csv {
                let all = distribution(p);
                let predicted = argmax(&all) as usize;
                let columns: Vec<String> = all.iter().map(|v| format!("{v:.6}")).collect();
                let (file, label) = (csv_field(&relative[s]), csv_field(&classes[label as usize]));
                let predicted_name = csv_field(&classes[predicted]);
                writeln!(f, "{file},{label},{predicted_name},{:.6},{}", all[predicted], columns.join(","))
                    .context("writing predictions.csv")?;
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    let input = classifier.input;
    let metrics = Metrics {
        evaluation: tally.report(&classes),
        model: classifier.path.display().to_string(),
        data: data.display().to_string(),
        split: split.map(str::to_string),
        size: input.size,
        preprocess: input.preprocess,
        resize_filter: input.resize_filter,
        tta: classifier.tta,
        device: classifier.device().to_string(),
        seconds: start.elapsed().as_secs_f64(),
    };
    if let (Some(staging), Some(csv)) = (staging, csv) {
        csv.commit()?;
        sd_data::artifact::write_json(staging.path().join(METRICS), &metrics)?;
        staging.commit()?;
    }
    Ok(metrics)
}

/// The human summary: accuracy, loss, and the confusion matrix with per-class scores.
pub fn summary(m: &Metrics) -> String {
    let mut lines = sd_train::summary::evaluation_lines(&m.evaluation);
    let on = m.split.as_ref().map(|s| format!(" {s}")).unwrap_or_default();
    lines[0] =
        format!("predict: {}; {}{on} images on {} in {:.1} s", lines[0], m.evaluation.samples, m.device, m.seconds);
    lines.join("\n")
}
