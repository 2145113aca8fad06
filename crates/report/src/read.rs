//! What the report shows, read from the stages' folders: the trainers' `metrics.json` and
//! `history.csv`, `predict`'s `metrics.json` and `predictions.csv`, `pipeline.lock` and the runs
//! `pipeline` records.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sd_data::layout::pipeline::{Lock, StageLock, lock_path};
use sd_data::layout::predict;
use sd_data::layout::runs::{self, RunRecord, RunStatus};
use sd_train::EpochStats;
use sd_train::metrics::Evaluation;
use sd_train::summary::{EpochSummary, HISTORY, METRICS};
use serde::Deserialize;

/// A trainer's run (`train-head` or `finetune`): the parts of its `metrics.json` the report
/// shows, and its history.
#[derive(Debug, Clone, Deserialize)]
pub struct Training {
    #[serde(flatten)]
    pub epochs: EpochSummary,
    pub evaluation: Evaluation,
    /// finetune only: validation before the first epoch (the trained head on block 5 as prepared).
    #[serde(default)]
    pub initial: Option<Initial>,
    /// finetune only: where it ran.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(skip)]
    pub history: Vec<EpochStats>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Initial {
    pub val_loss: f64,
    pub val_acc: f64,
}

impl Training {
    /// Reads `dir/metrics.json` and `dir/history.csv`; `stage` names the stage that writes them.
    pub fn read(dir: &Path, stage: &str) -> Result<Training> {
        let hint = format!("run {stage} first (it writes {})", dir.display());
        let mut t: Training = sd_data::layout::read_json(&dir.join(METRICS), &hint)?;
        t.history = sd_train::summary::read_history(&dir.join(HISTORY)).map_err(anyhow::Error::msg)?;
        if t.history.is_empty() {
            bail!("{} has no epochs; {hint}", dir.join(HISTORY).display());
        }
        Ok(t)
    }
}

/// `predict --data --out`'s folder.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub evaluation: Evaluation,
    pub device: String,
    /// The split of the data set predict scored (`predict --data-root`): `test` or
    /// `validation`; `None` (read as validation) for `predict --data`.
    pub split: Option<String>,
    pub rows: Vec<Row>,
}

/// One line of `predictions.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Relative to the evaluated folder.
    pub file: String,
    pub label: String,
    pub predicted: String,
    pub confidence: f64,
}

#[derive(Deserialize)]
struct PredictMetrics {
    #[serde(flatten)]
    evaluation: Evaluation,
    device: String,
    #[serde(default)]
    split: Option<String>,
}

impl Prediction {
    pub fn read(dir: &Path) -> Result<Prediction> {
        let hint = format!("run predict --data DIR --out {} first", dir.display());
        let m: PredictMetrics = sd_data::layout::read_json(&dir.join(predict::METRICS), &hint)?;
        let path = dir.join(predict::PREDICTIONS);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}; {hint}", path.display()))?;
        let rows =
            parse_predictions(&text).with_context(|| format!("{} is not predict's predictions", path.display()))?;
        Ok(Prediction { evaluation: m.evaluation, device: m.device, split: m.split, rows })
    }

    /// The split scored: the held-out `test`, or the `validation` that also chose the model.
    pub fn split(&self) -> &str {
        self.split.as_deref().unwrap_or(sd_data::layout::split::VALIDATION)
    }

    /// Whether the score is on a held-out test split (an honest estimate).
    pub fn on_test(&self) -> bool {
        self.split() == sd_data::layout::split::TEST
    }

    /// The wrong predictions, the most confident first (ties by file name), at most `cap`.
    pub fn mistakes(&self, cap: usize) -> Vec<&Row> {
        let mut wrong: Vec<&Row> = self.rows.iter().filter(|r| r.label != r.predicted).collect();
        wrong.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then_with(|| a.file.cmp(&b.file)));
        wrong.truncate(cap);
        wrong
    }
}

/// `file,label,predicted,confidence,p_<class>...` (header first).
fn parse_predictions(text: &str) -> Result<Vec<Row>> {
    let records = sd_data::csv::records(text).context("a quoted field is not closed")?;
    let Some((header, rows)) = records.split_first() else { bail!("it is empty") };
    if header.get(..4) != Some(&predict::PREDICTION_FIELDS.map(String::from)[..]) {
        bail!("its header is not `file,label,predicted,confidence,...`");
    }
    rows.iter()
        .enumerate()
        .map(|(i, r)| match &r[..] {
            [file, label, predicted, confidence, ..] => Ok(Row {
                file: file.clone(),
                label: label.clone(),
                predicted: predicted.clone(),
                confidence: confidence
                    .parse()
                    .with_context(|| format!("record {}: confidence `{confidence}`", i + 2))?,
            }),
            _ => bail!("record {} has {} fields, expected at least 4", i + 2, r.len()),
        })
        .collect()
}

/// The pipeline run shown: its stages as `pipeline.lock` recorded them (in run order, but the
/// report's own, which is running), and every run recorded in `.pipeline/runs/`, the one running
/// now (this one, when `pipeline` runs the report) with its metrics so far.
pub struct Run {
    pub file: PathBuf,
    pub stages: Vec<(String, Option<StageLock>)>,
    pub runs: Vec<RunRecord>,
    /// The run in progress.
    pub current: Option<u64>,
}

impl Run {
    pub fn read(file: &Path) -> Result<Run> {
        let lock = Lock::load(&lock_path(file))?;
        let mut runs = runs::read_all(&runs::runs_dir(&sd_data::scratch::parent_dir(file)));
        let current = runs.iter_mut().rev().find(|r| r.status == RunStatus::Running);
        let mut order: Vec<String> =
            current.as_ref().map(|r| r.stages.iter().map(|s| s.stage.clone()).collect()).unwrap_or_default();
        if order.is_empty() {
            order = lock.stages.keys().cloned().collect();
        }
        let current = current.map(|r| {
            r.metrics =
                order.iter().map(|s| (s.clone(), lock.stage_metrics(s))).filter(|(_, m)| !m.is_empty()).collect();
            r.id
        });
        // The report's own stage is the one whose program is this executable.
        let me = std::env::current_exe().ok().and_then(|e| e.file_name().map(|n| n.to_os_string()));
        let program =
            |l: &StageLock| l.program.as_ref().and_then(|p| Path::new(&p.name).file_name().map(|n| n.to_os_string()));
        let stages = order
            .into_iter()
            .map(|name| {
                let entry = lock.stages.get(&name).cloned();
                (name, entry)
            })
            .filter(|(_, l)| l.as_ref().is_none_or(|l| program(l).is_none() || program(l) != me))
            .collect();
        Ok(Run { file: file.to_path_buf(), stages, runs, current })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_parse_and_mistakes_come_most_confident_first() {
        let text = "file,label,predicted,confidence,p_a,p_b\n\
                    a/1.jpg,a,a,0.9,0.9,0.1\n\
                    \"a/x,y.jpg\",a,b,0.7,0.3,0.7\n\
                    b/2.jpg,b,a,0.95,0.95,0.05\n\
                    b/3.jpg,b,a,0.7,0.7,0.3\n";
        let rows = parse_predictions(text).unwrap();
        assert_eq!(rows.len(), 4);
        let p = Prediction { evaluation: sample_evaluation(), device: "cpu".into(), split: None, rows };
        let files: Vec<&str> = p.mistakes(10).iter().map(|r| r.file.as_str()).collect();
        assert_eq!(files, ["b/2.jpg", "a/x,y.jpg", "b/3.jpg"]);
        assert_eq!(p.mistakes(1).len(), 1);
        let err = |t: &str| format!("{:#}", parse_predictions(t).unwrap_err());
        assert!(err("").contains("empty"));
        assert!(err("a,b\n").contains("header"));
        assert!(err("file,label,predicted,confidence\nx,a,b,high\n").contains("record 2: confidence `high`"));
        assert!(err("file,label,predicted,confidence\nx,a\n").contains("record 2 has 2 fields"));
    }

    fn sample_evaluation() -> Evaluation {
        let mut t = sd_train::metrics::Tally::new(sd_train::Loss::for_classes(2));
        t.add_probabilities(&[0.9, 0.2], &[1, 0]);
        t.report(&["a".into(), "b".into()])
    }
}
