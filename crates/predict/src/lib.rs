//! `predict`: a classifier ONNX (image batch NHWC in; out, as `finetune` exports it, the
//! probability `[N, 1]` of the class labelled 1 for two classes, or every class's
//! `[N, classes]`) over a class-folder data set: one prediction per image, accuracy, top-k
//! accuracy, per-class precision/recall/F1, the confusion matrix and the loss.
//!
//! Images stream through the prefetching loader and predictions stream to disk, so memory does
//! not grow with the data set. Size, resize filter, preprocessing and class names default to
//! what the classifier's metadata (`sd_data::layout::classifier`) records from training.

pub mod cli;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sd_data::artifact::{AtomicFile, StagingDir};
use sd_data::image::{ImageSize, ResizeFilter};
use sd_data::layout::classifier::ClassifierMeta;
use sd_data::loader::Loader;
use sd_data::{Dataset, ModelInput, Preprocess};
use sd_runtime::{Model, SessionConfig};
use sd_train::Loss;
use sd_train::loss::argmax;
use sd_train::metrics::{Evaluation, Tally};
use serde::Serialize;

pub const PREDICTIONS: &str = "predictions.csv";
pub const METRICS: &str = "metrics.json";

/// What `predict` does; `None` options come from the classifier's metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    /// Flags given for the image input (the rest from the classifier's metadata).
    pub input: sd_cli::args::InputArgs,
    pub batch_size: usize,
    pub session: SessionConfig,
    pub show_progress: bool,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub model: String,
    pub data: String,
    pub size: ImageSize,
    pub preprocess: Preprocess,
    pub resize_filter: ResizeFilter,
    pub device: String,
    pub seconds: f64,
}

/// The image input, from the flags given and the classifier's metadata.
fn resolve(config: &Config, meta: &ClassifierMeta, model: &Model) -> Result<ModelInput> {
    let path = config.model.display();
    let declared = match model.input_shape[..] {
        [_, h, w, 3] if h > 0 && w > 0 => Some(ImageSize { width: w as u32, height: h as u32 }),
        [_, _, _, 3 | -1] => None,
        ref s => bail!(
            "{path} takes input of shape {s:?}, not an image batch [N, H, W, 3]; pass the classifier.onnx written by finetune"
        ),
    };
    if model.output_shape.len() != 2 {
        bail!(
            "{path} gives output of shape {:?}; predict needs probabilities per image, [N, 1] or [N, classes] (the classifier.onnx written by finetune)",
            model.output_shape
        );
    }
    let trained = meta.size.or(declared);
    let size = match (config.input.resize.size, trained) {
        (Some(asked), Some(t)) if asked != t => {
            bail!("--size {asked} does not fit {path}, which was built for {t} images; leave --size out")
        }
        (asked, t) => asked.or(t).unwrap_or(ImageSize::square(150)),
    };
    let preprocess = match (config.input.preprocess, meta.preprocess) {
        (Some(asked), Some(t)) if asked != t => {
            tracing::warn!("--preprocess {asked}, but {path} was trained with {t}: predictions will be off");
            asked
        }
        (asked, t) => asked.or(t).unwrap_or_default(),
    };
    let resize_filter = config.input.resize.resize_filter.or(meta.resize_filter).unwrap_or_default();
    Ok(ModelInput { size, preprocess, resize_filter })
}

/// Predicts every image of `config.data`; writes `predictions.csv` and `metrics.json` into
/// `config.out` (replaced as a whole) when given.
pub fn predict(config: &Config) -> Result<Metrics> {
    let start = Instant::now();
    if config.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut model = Model::load(&config.model, &config.session)?;
    let meta =
        ClassifierMeta::from_map(&model.metadata()).map_err(|e| anyhow::anyhow!("{}: {e}", config.model.display()))?;
    let opts = resolve(config, &meta, &model)?;
    let dataset = Dataset::scan(&config.data)?;
    let classes = match &meta.classes {
        Some(classes) => {
            dataset.expect_classes(classes, &format!("the classifier {}", config.model.display()))?;
            classes.clone()
        }
        None => dataset.classes.clone(),
    };
    let loss = Loss::for_classes(classes.len().max(2));
    let width = loss.outputs();
    if classes.len() < 2 || !matches!(model.output_shape[1], -1) && model.output_shape[1] != width as i64 {
        bail!(
            "{} gives {} probabilities per image, but {} has {} classes {} (a classifier for them gives {width}): \
             pass the classifier trained on these classes",
            config.model.display(),
            model.output_shape[1],
            config.data.display(),
            classes.len(),
            classes
        );
    }
    let classes = classes.names().to_vec();
    let relative = dataset.relative_paths();
    let samples: Arc<[_]> = dataset.samples.clone().into();

    let staging = config.out.as_ref().map(StagingDir::create).transpose()?;
    let mut csv = staging.as_ref().map(|s| AtomicFile::create(s.path().join(PREDICTIONS))).transpose()?;
    if let Some(f) = &mut csv {
        let columns: Vec<String> = classes.iter().map(|c| csv_field(&format!("p_{c}"))).collect();
        writeln!(f, "file,label,predicted,confidence,{}", columns.join(",")).context("writing predictions.csv")?;
    }
    let bar = sd_cli::progress_bar(samples.len() as u64, "predict", config.show_progress);
    let mut tally = Tally::new(loss);
    for batch in Loader::in_order(samples.clone(), opts.loader(config.batch_size)) {
        let batch = batch?;
        let out = model.run(opts.tensor(&batch).view().into_dyn())?;
        if out.len() != batch.len() * width {
            bail!("{} returned {} values for a batch of {}", config.model.display(), out.len(), batch.len());
        }
        let probabilities = out.as_slice().context("model output is not contiguous")?;
        tally.add_probabilities(probabilities, &batch.labels);
        for ((&s, &label), p) in batch.samples.iter().zip(&batch.labels).zip(probabilities.chunks_exact(width)) {
            if let Some(f) = &mut csv {
                // Every class's probability: the two-class output is that of the class labelled 1.
                let all: Vec<f32> = if width == 1 { vec![1.0 - p[0], p[0]] } else { p.to_vec() };
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

    let metrics = Metrics {
        evaluation: tally.report(&classes),
        model: config.model.display().to_string(),
        data: config.data.display().to_string(),
        size: opts.size,
        preprocess: opts.preprocess,
        resize_filter: opts.resize_filter,
        device: model.device.to_string(),
        seconds: start.elapsed().as_secs_f64(),
    };
    if let (Some(staging), Some(csv)) = (staging, csv) {
        csv.commit()?;
        sd_data::artifact::write_json(staging.path().join(METRICS), &metrics)?;
        staging.commit()?;
    }
    Ok(metrics)
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The human summary: accuracy, loss, and the confusion matrix with per-class scores.
pub fn summary(m: &Metrics) -> String {
    let mut lines = sd_train::report::evaluation_lines(&m.evaluation);
    lines[0] = format!("predict: {}; {} images on {} in {:.1} s", lines[0], m.evaluation.samples, m.device, m.seconds);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("cats/cat.1.jpg"), "cats/cat.1.jpg");
        assert_eq!(csv_field("a,b \"c\".jpg"), "\"a,b \"\"c\"\".jpg\"");
    }
}
