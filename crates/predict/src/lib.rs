//! `predict`: a classifier ONNX (image batch NHWC in, probability `[N, 1]` out, as `finetune`
//! exports it) over a class-folder data set: one prediction per image, accuracy, per-class
//! accuracy, the confusion matrix and the loss.
//!
//! Images stream through the prefetching loader and predictions stream to disk, so memory does
//! not grow with the data set. Size, resize filter, preprocessing and class names default to
//! what the classifier's metadata (`sd_data::layout::classifier`) records from training.

pub mod cli;

use std::collections::BTreeMap;
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
use sd_train::metrics::{Tally, ratio};
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

/// Accuracy of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub samples: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub samples: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean binary cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7], as Keras does).
    pub loss: f64,
    pub per_class: BTreeMap<String, ClassMetrics>,
    /// Class names in label order: the rows (true) and columns (predicted) of `confusion_matrix`.
    pub classes: Vec<String>,
    pub confusion_matrix: Vec<Vec<usize>>,
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
    if model.output_shape.len() != 2 || !matches!(model.output_shape[1], 1 | -1) {
        bail!(
            "{path} gives output of shape {:?}; predict needs one probability per image [N, 1] (the classifier.onnx written by finetune)",
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
    if classes.len() != 2 {
        bail!(
            "{} has {} classes ({:?}); the classifier is binary: it needs exactly two class folders",
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
        writeln!(f, "file,label,probability,predicted").context("writing predictions.csv")?;
    }
    let bar = sd_cli::progress_bar(samples.len() as u64, "predict", config.show_progress);
    let mut tally = Tally::new(Loss::for_classes(classes.len()));
    for batch in Loader::in_order(samples.clone(), opts.loader(config.batch_size)) {
        let batch = batch?;
        let out = model.run(opts.tensor(&batch).view().into_dyn())?;
        if out.len() != batch.len() {
            bail!("{} returned {} values for a batch of {}", config.model.display(), out.len(), batch.len());
        }
        let probabilities = out.as_slice().context("model output is not contiguous")?;
        tally.add_probabilities(probabilities, &batch.labels);
        for ((&s, &label), &p) in batch.samples.iter().zip(&batch.labels).zip(probabilities) {
            let predicted = usize::from(p > 0.5);
            if let Some(f) = &mut csv {
                let file = csv_field(&relative[s]);
                writeln!(f, "{file},{},{p:.6},{}", classes[label as usize], classes[predicted])
                    .context("writing predictions.csv")?;
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    let n = samples.len();
    let confusion = tally.confusion().rows().to_vec();
    let per_class = classes
        .iter()
        .zip(tally.confusion().per_class())
        .map(|(c, r)| (c.clone(), ClassMetrics { samples: r.samples, correct: r.correct, accuracy: r.recall }))
        .collect();
    let metrics = Metrics {
        samples: n,
        correct: tally.correct(),
        accuracy: ratio(tally.correct(), n),
        loss: tally.loss(),
        per_class,
        classes,
        confusion_matrix: confusion,
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

/// The human summary: accuracy, loss, and the confusion matrix with per-class accuracy.
pub fn summary(m: &Metrics) -> String {
    let w = m.classes.iter().map(String::len).max().unwrap_or(0).max(6);
    let mut lines = vec![format!(
        "predict: accuracy {:.4} ({}/{}), loss {:.4}, {} images on {} in {:.1} s",
        m.accuracy, m.correct, m.samples, m.loss, m.samples, m.device, m.seconds
    )];
    let header: Vec<String> = m.classes.iter().map(|c| format!("{c:>w$}")).collect();
    lines.push(format!("  {:<w$}  {}  accuracy   (rows: true class, columns: predicted)", "", header.join(" ")));
    for (i, c) in m.classes.iter().enumerate() {
        let row: Vec<String> = m.confusion_matrix[i].iter().map(|v| format!("{v:>w$}")).collect();
        lines.push(format!("  {c:<w$}  {}  {:.4}", row.join(" "), m.per_class[c].accuracy));
    }
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
