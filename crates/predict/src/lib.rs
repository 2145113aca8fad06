//! `predict`: a binary classifier ONNX (image batch NHWC in, probability `[N, 1]` out, as
//! `finetune` exports it) over a class-folder data set: one prediction per image, accuracy,
//! per-class accuracy, the confusion matrix and the loss.
//!
//! Images stream through the prefetching loader and predictions stream to disk, so memory does
//! not grow with the data set. Size, resize filter, preprocessing and class names default to
//! what the classifier's metadata ([`metadata`]) records from training.

pub mod cli;
pub mod metadata;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::Array4;
use sd_data::artifact::{AtomicFile, StagingDir};
use sd_data::image::{ImageSize, ResizeFilter};
use sd_data::loader::{Loader, LoaderConfig};
use sd_data::{Dataset, Preprocess};
use sd_runtime::{Model, SessionConfig};
use serde::Serialize;

pub use metadata::ClassifierMeta;

pub const PREDICTIONS: &str = "predictions.csv";
pub const METRICS: &str = "metrics.json";

/// What `predict` does; `None` options come from the classifier's metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    pub size: Option<ImageSize>,
    pub preprocess: Option<Preprocess>,
    pub resize_filter: Option<ResizeFilter>,
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

/// Options resolved against the classifier's metadata.
struct Resolved {
    size: ImageSize,
    preprocess: Preprocess,
    resize_filter: ResizeFilter,
}

fn resolve(config: &Config, meta: &ClassifierMeta, model: &Model) -> Result<Resolved> {
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
    let size = match (config.size, trained) {
        (Some(asked), Some(t)) if asked != t => {
            bail!("--size {asked} does not fit {path}, which was built for {t} images; leave --size out")
        }
        (asked, t) => asked.or(t).unwrap_or(ImageSize::square(150)),
    };
    let preprocess = match (config.preprocess, meta.preprocess) {
        (Some(asked), Some(t)) if asked != t => {
            tracing::warn!("--preprocess {asked}, but {path} was trained with {t}: predictions will be off");
            asked
        }
        (asked, t) => asked.or(t).unwrap_or_default(),
    };
    let resize_filter = config.resize_filter.or(meta.resize_filter).unwrap_or_default();
    Ok(Resolved { size, preprocess, resize_filter })
}

/// Binary cross-entropy of probability `p` for label `y`, clipped like Keras.
fn bce(p: f32, y: bool) -> f64 {
    let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
    -(if y { p.ln() } else { (1.0 - p).ln() })
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
        Some(map) => {
            let mut names: Vec<(i64, String)> = map.iter().map(|(k, &v)| (v, k.clone())).collect();
            names.sort();
            let names: Vec<String> = names.into_iter().map(|(_, n)| n).collect();
            dataset.expect_classes(&names, &format!("the classifier {}", config.model.display()))?;
            names
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
    let relative = dataset.relative_paths();
    let samples: Arc<[_]> = dataset.samples.clone().into();

    let staging = config.out.as_ref().map(StagingDir::create).transpose()?;
    let mut csv = staging.as_ref().map(|s| AtomicFile::create(s.path().join(PREDICTIONS))).transpose()?;
    if let Some(f) = &mut csv {
        writeln!(f, "file,label,probability,predicted").context("writing predictions.csv")?;
    }
    let (w, h) = (opts.size.width as usize, opts.size.height as usize);
    let mut loader_config = LoaderConfig::new(opts.size.width, opts.size.height, config.batch_size);
    loader_config.filter = opts.resize_filter;
    let bar = sd_cli::progress_bar(samples.len() as u64, "predict", config.show_progress);
    let mut confusion = vec![vec![0usize; 2]; 2];
    let mut loss = 0.0;
    for batch in Loader::in_order(samples.clone(), loader_config) {
        let batch = batch?;
        let mut input = Array4::<f32>::zeros((batch.len(), h, w, 3));
        opts.preprocess.write_hwc_bytes(&batch.pixels, input.as_slice_mut().expect("standard layout"));
        let out = model.run(input.view().into_dyn())?;
        if out.len() != batch.len() {
            bail!("{} returned {} values for a batch of {}", config.model.display(), out.len(), batch.len());
        }
        for ((&s, &label), &p) in batch.samples.iter().zip(&batch.labels).zip(out.iter()) {
            let predicted = usize::from(p > 0.5);
            confusion[label as usize][predicted] += 1;
            loss += bce(p, label == 1);
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
    let correct = confusion[0][0] + confusion[1][1];
    let per_class = classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let total: usize = confusion[i].iter().sum();
            let m = ClassMetrics { samples: total, correct: confusion[i][i], accuracy: ratio(confusion[i][i], total) };
            (c.clone(), m)
        })
        .collect();
    let metrics = Metrics {
        samples: n,
        correct,
        accuracy: ratio(correct, n),
        loss: loss / n as f64,
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

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
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

    #[test]
    fn loss_is_clipped_like_keras() {
        assert!((bce(0.9, true) - -(0.9f64.ln())).abs() < 1e-6);
        assert!(bce(0.0, true).is_finite() && bce(1.0, false).is_finite());
        assert!((bce(0.0, true) - -(1e-7f64.ln())).abs() < 1e-6);
    }
}
