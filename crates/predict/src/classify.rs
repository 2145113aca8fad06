//! `predict IMAGE...`: a classifier over images without labels, one row per image in the order
//! given: the predicted class, its probability and the top-k classes, as CSV or JSON lines, to a
//! file (written atomically) or standard output. Images stream through the loader and rows
//! stream out, so memory stays flat however many images there are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sd_data::Sample;
use sd_data::artifact::AtomicFile;
use sd_data::loader::Loader;
use serde_json::json;

use crate::classifier::{Classifier, distribution};
use crate::csv_field;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `file,predicted,probability,top2,top2_probability,...,error`.
    #[default]
    Csv,
    /// One JSON object per line: `{"file", "predicted", "probability", "top": [{"class",
    /// "probability"}]}`, or `{"file", "error"}`.
    Jsonl,
}

pub struct Options {
    /// Classes listed per image, best first (at most the number of classes).
    pub top_k: usize,
    pub format: Format,
    /// Log and list unreadable images instead of stopping at the first.
    pub skip_invalid: bool,
    pub batch_size: usize,
    pub show_progress: bool,
}

/// What a run did.
pub struct Summary {
    pub images: usize,
    pub skipped: usize,
    pub elapsed: Duration,
    pub device: String,
}

/// Where the rows go.
enum Sink {
    File(AtomicFile),
    Stdout(std::io::BufWriter<std::io::Stdout>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(f) => f,
            Sink::Stdout(s) => s,
        }
    }
}

/// Classifies `paths`, writing one row each to `out` (standard output if `None`).
pub fn classify(
    classifier: &mut Classifier,
    paths: Vec<PathBuf>,
    out: Option<&Path>,
    opts: &Options,
) -> Result<Summary> {
    let start = Instant::now();
    let names: Vec<String> = match &classifier.classes {
        Some(c) => c.names().to_vec(),
        None => {
            tracing::warn!("{} records no class names: rows name classes by label", classifier.path.display());
            Vec::new()
        }
    };
    let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let samples: Arc<[Sample]> = paths.into_iter().map(|path| Sample { path, label: 0 }).collect();
    let mut sink = match out {
        Some(path) => Sink::File(AtomicFile::create(path)?),
        None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut config = classifier.loader(opts.batch_size);
    config.skip_invalid = opts.skip_invalid;
    let bar = sd_cli::progress_bar(samples.len() as u64, "predict", opts.show_progress);
    let write_err = |e: std::io::Error| anyhow::Error::new(e).context("writing the predictions");
    let classes = if names.is_empty() { classifier.width.map_or(opts.top_k, |w| w.max(2)) } else { names.len() };
    let k = opts.top_k.clamp(1, classes.max(1));
    if opts.format == Format::Csv {
        let top: String = (2..=k).map(|i| format!("top{i},top{i}_probability,")).collect();
        writeln!(sink.writer(), "file,predicted,probability,{top}error").map_err(write_err)?;
    }
    let (mut images, mut skipped) = (0, 0);
    for batch in Loader::in_order(samples.clone(), config) {
        let batch = batch?;
        let probabilities = classifier.probabilities(&batch)?;
        let width = probabilities.len().checked_div(batch.len()).unwrap_or(1);
        // Rows in input order: the batch's images and the ones it skipped, merged by index.
        let mut rows: Vec<(usize, Row)> = batch
            .samples
            .iter()
            .zip(probabilities.chunks_exact(width.max(1)))
            .map(|(&s, p)| (s, Row::Classes(ranked(&distribution(p)))))
            .collect();
        rows.extend(batch.skipped.iter().map(|(s, e)| (*s, Row::Error(e.clone()))));
        rows.sort_by_key(|(s, _)| *s);
        for (s, row) in rows {
            if let Row::Error(e) = &row {
                tracing::warn!("skipped: {e}");
            }
            let line = match (&row, opts.format) {
                (Row::Classes(ranked), Format::Csv) => {
                    let cells: Vec<String> =
                        ranked.iter().take(k).map(|&(c, p)| format!("{},{p:.6}", csv_field(&name(c)))).collect();
                    format!("{},{},", csv_field(&shown[s]), cells.join(","))
                }
                (Row::Error(e), Format::Csv) => {
                    let empty = ",".repeat(2 * k);
                    format!("{}{empty},{}", csv_field(&shown[s]), csv_field(e))
                }
                (Row::Classes(ranked), Format::Jsonl) => {
                    let top: Vec<_> =
                        ranked.iter().take(k).map(|&(c, p)| json!({"class": name(c), "probability": p})).collect();
                    let (best, p) = ranked[0];
                    json!({"file": shown[s], "predicted": name(best), "probability": p, "top": top}).to_string()
                }
                (Row::Error(e), Format::Jsonl) => json!({"file": shown[s], "error": e}).to_string(),
            };
            writeln!(sink.writer(), "{line}").map_err(write_err)?;
            match row {
                Row::Classes(_) => images += 1,
                Row::Error(_) => skipped += 1,
            }
        }
        bar.inc((batch.len() + batch.skipped.len()) as u64);
    }
    bar.finish_and_clear();
    match sink {
        Sink::File(f) => f.commit()?,
        Sink::Stdout(mut s) => s.flush().context("writing the predictions")?,
    }
    Ok(Summary { images, skipped, elapsed: start.elapsed(), device: classifier.device().to_string() })
}

enum Row {
    /// (class, probability), best first.
    Classes(Vec<(usize, f32)>),
    Error(String),
}

/// Classes by probability, best first (ties: the lower label first).
fn ranked(p: &[f32]) -> Vec<(usize, f32)> {
    let mut r: Vec<(usize, f32)> = p.iter().copied().enumerate().collect();
    r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_rank_best_first_ties_by_label() {
        assert_eq!(ranked(&[0.2, 0.5, 0.3]), [(1, 0.5), (2, 0.3), (0, 0.2)]);
        assert_eq!(ranked(&[0.5, 0.5]), [(0, 0.5), (1, 0.5)]);
    }
}
