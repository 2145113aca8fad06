//! `index.html`: one section per question (what data, what ran, how training went, how good the
//! model is, what it gets wrong, what changed), everything inline but the thumbnails.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use sd_data::Dataset;
use sd_data::image::load_resized;
use sd_train::metrics::Evaluation;

use sd_data::layout::runs::{self, TableOptions};

use crate::html::{escape, number, table};
use crate::read::{Prediction, Run, Training};
use crate::{Inputs, Options, thumbs};

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { margin: 24px 0 4px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
h3 { margin: 16px 0 6px; font-size: 1.05em; }
.summary { font-size: 1.15em; } .summary strong { font-size: 1.4em; }
nav a { margin-right: 14px; } .muted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0 16px; }
/* A wide table (the runs table holds every metric) scrolls inside its section, never the page. */
section { overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
tr.current td { background: #fff6d5; font-weight: 600; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-end; }
.strip img, figure img { height: 96px; width: auto; border-radius: 3px; display: block; }
figure { margin: 0; } figcaption { font-size: 0.8em; max-width: 160px; overflow-wrap: anywhere; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
.curves svg { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.chip { display: inline-block; background: #eef3fb; border-radius: 3px; padding: 0 5px; margin: 1px; font-size: 0.85em; }
table.stages td:last-child, table.stages th:last-child { text-align: left; max-width: 560px; }
table.runs td:nth-child(2), table.runs th:nth-child(2) { white-space: nowrap; }
"#;

pub struct Page<'a> {
    pub inputs: &'a Inputs,
    pub options: &'a Options,
    pub head: &'a Training,
    pub finetune: &'a Training,
    pub predicted: &'a Prediction,
    pub run: Option<&'a Run>,
    /// What `audit` found (its section is left out without it).
    pub audit: Option<&'a sd_data::layout::audit::Audit>,
    pub train: &'a Dataset,
    pub validation: &'a Dataset,
    /// The held-out test split, when the data set has one.
    pub test: Option<&'a Dataset>,
    /// train-head's and finetune's curves (SVG).
    pub curves: [&'a str; 2],
    pub heat_map: &'a str,
}

impl Page<'_> {
    /// The page, and the number of thumbnails written into `dir` for it.
    pub fn render(&self, dir: &Path) -> Result<(String, usize)> {
        let e = &self.predicted.evaluation;
        let mut thumbnails = 0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Report: {}</title><style>{STYLE}</style></head><body>"#,
            escape(&self.inputs.data.display().to_string())
        );
        let _ = write!(s, "<h1>Run report</h1>{}", self.headline());
        let _ = write!(
            s,
            r##"<nav><a href="#data">Data</a>{}<a href="#stages">Stages</a><a href="#training">Training</a><a href="#evaluation">Evaluation</a><a href="#mistakes">Mistakes</a><a href="#runs">Runs</a></nav>"##,
            if self.audit.is_some() { r##"<a href="#audit">Data audit</a>"## } else { "" }
        );
        s.push_str(&self.data(dir, &mut thumbnails)?);
        if let Some(audit) = self.audit {
            s.push_str(&crate::audit::section(audit, dir, self.options.mistakes, &mut thumbnails));
        }
        s.push_str(&self.stages());
        s.push_str(&self.training());
        s.push_str(&evaluation(e, self.predicted.split(), self.heat_map));
        s.push_str(&self.mistakes(dir, &mut thumbnails)?);
        s.push_str(&runs_section(self.run));
        let _ = write!(
            s,
            r#"<footer class="muted"><p>Also in this folder: <a href="{c1}">{c1}</a>, <a href="{c2}">{c2}</a>, <a href="{m}">{m}</a>, <a href="{h1}">{h1}</a>, <a href="{h2}">{h2}</a>. Written by <code>report</code>.</p></footer></body></html>"#,
            c1 = crate::curves_file("train-head"),
            c2 = crate::curves_file("finetune"),
            m = crate::CONFUSION,
            h1 = crate::history_file("train-head"),
            h2 = crate::history_file("finetune"),
        );
        s.push('\n');
        Ok((s, thumbnails))
    }

    /// The number that says how good the model is, and what it is: the test score, with the
    /// validation score that chose the model beside it, or, without a test split, the
    /// validation score said to be the one that selected the model.
    fn headline(&self) -> String {
        let (e, p) = (&self.predicted.evaluation, self.predicted);
        let of = format!(
            "{}/{} {} images, {} classes; <code>predict</code> on {}",
            e.correct,
            e.samples,
            if p.on_test() { "held-out test" } else { "validation" },
            e.classes.len(),
            escape(&p.device)
        );
        let strong = format!(r#"<strong id="accuracy" data-value="{}">{:.4}</strong>"#, e.accuracy, e.accuracy);
        if p.on_test() {
            let v = self.finetune.evaluation.accuracy;
            format!(
                r#"<p class="summary">Test accuracy {strong} ({of})</p><p>The test split is held out: nothing was chosen with it, and it is scored once, on the final classifier. Validation accuracy <b id="validation-accuracy" data-value="{v}">{v:.4}</b> is what chose the model (finetune's exported epoch) and flatters it.</p>"#
            )
        } else {
            format!(
                r#"<p class="summary">Validation accuracy {strong} ({of})</p><p>No test split: this is the validation score that also selected the model (its epochs and settings), so it flatters it. Split your photos with a test share (<code>split --from PHOTOS</code>, the pipeline's default for class folders) for an honest number.</p>"#
            )
        }
    }

    fn data(&self, dir: &Path, thumbnails: &mut usize) -> Result<String> {
        let splits: Vec<&Dataset> = [self.train, self.validation].into_iter().chain(self.test).collect();
        let counts: Vec<Vec<usize>> = splits.iter().map(|d| d.class_counts()).collect();
        let names = self.train.classes.names();
        let mut rows: Vec<Vec<String>> = names
            .iter()
            .map(|c| {
                let n = splits.iter().zip(&counts).map(|(d, n)| d.classes.label(c).map_or(0, |l| n[l as usize]));
                std::iter::once(escape(c)).chain(n.map(|n| n.to_string())).collect()
            })
            .collect();
        rows.push(std::iter::once("<b>all</b>".into()).chain(splits.iter().map(|d| d.len().to_string())).collect());
        let header = ["class", "train", "validation", "test (held out)"];
        let mut s = format!(
            "<section id=\"data\"><h2>Data</h2><p><code>{}</code>: {} classes.</p>{}",
            escape(&self.inputs.data.display().to_string()),
            names.len(),
            table("counts", &header[..1 + splits.len()], &rows)
        );
        let _ = write!(s, "<h3>Training images, the first {} of each class</h3>", self.options.thumbnails);
        for (label, class) in names.iter().enumerate() {
            let _ = write!(s, r#"<div class="class"><p class="muted">{}</p><div class="strip">"#, escape(class));
            let samples = self.train.samples.iter().filter(|x| x.label as usize == label).take(self.options.thumbnails);
            for (i, sample) in samples.enumerate() {
                let src = thumbs::of_file(dir, &format!("train-{label}-{i}"), &sample.path)?;
                *thumbnails += 1;
                let name = escape(&file_name(&sample.path));
                let _ = write!(s, r#"<img src="{src}" alt="{name}" title="{name}">"#);
            }
            s.push_str("</div></div>");
        }
        if let Some(first) = self.train.samples.first() {
            let o = self.options;
            let img = load_resized(&first.path, o.size.width, o.size.height, o.resize_filter)?;
            let _ = write!(
                s,
                r#"<h3>Augmented copies of one training image</h3><p class="muted">{} at {}, then rounds 0 to {} of the augmenter (seed {}): what <code>augment rounds</code> with the same settings draws for this image</p><div class="strip">"#,
                escape(&file_name(&first.path)),
                o.size,
                o.previews.saturating_sub(1),
                o.augmenter.seed()
            );
            let src = thumbs::write(dir, "augment-original", &thumbs::fit(img.clone(), thumbs::SIDE)?)?;
            let _ = write!(s, r#"<figure><img src="{src}" alt="original"><figcaption>original</figcaption></figure>"#);
            for round in 0..o.previews {
                let copy = o.augmenter.augment(&img, round as u64, 0);
                let src = thumbs::write(dir, &format!("augment-{round}"), &thumbs::fit(copy, thumbs::SIDE)?)?;
                let _ = write!(
                    s,
                    r#"<figure><img src="{src}" alt="round {round}"><figcaption>round {round}</figcaption></figure>"#
                );
            }
            *thumbnails += o.previews + 1;
            s.push_str("</div>");
        }
        s.push_str("</section>");
        Ok(s)
    }

    fn stages(&self) -> String {
        let mut s = String::from(r#"<section id="stages"><h2>Stages</h2>"#);
        let Some(run) = self.run else {
            s.push_str("<p>Not run through <code>pipeline</code> (pass <code>--pipeline FILE</code> to show its stages).</p></section>");
            return s;
        };
        let mut total = 0.0;
        let mut rows = Vec::new();
        for (name, lock) in &run.stages {
            let Some(lock) = lock else {
                rows.push(vec![escape(name), "not run yet".into(), String::new(), String::new()]);
                continue;
            };
            total += lock.seconds.unwrap_or(0.0);
            let params: String = lock
                .params
                .iter()
                .map(|(k, v)| format!(r#"<span class="chip">{}={}</span>"#, escape(k), escape(v)))
                .collect();
            let program = lock.program.as_ref().map(|p| p.name.as_str());
            let ran_on = match program {
                Some("finetune") => self.finetune.device.as_deref(),
                Some("predict") => Some(self.predicted.device.as_str()),
                _ => None,
            };
            let device = match (lock.params.get("device"), ran_on) {
                (Some(asked), Some(ran)) if asked != ran => format!("{} → {}", escape(asked), escape(ran)),
                (_, Some(ran)) => escape(ran),
                (Some(asked), None) => escape(asked),
                (None, None) => String::new(),
            };
            let time = lock.seconds.map_or_else(|| "–".into(), |t| format!("{t:.1} s"));
            rows.push(vec![
                format!("<details><summary>{}</summary><code>{}</code></details>", escape(name), escape(&lock.cmd)),
                time,
                device,
                params,
            ]);
        }
        rows.push(vec!["<b>total</b>".into(), format!("<b>{total:.1} s</b>"), String::new(), String::new()]);
        let _ = write!(
            s,
            "<p>As <code>{}</code> recorded each stage's last successful run (click a stage for its command); the report's own stage is not listed.</p>{}</section>",
            escape(&run.file.with_extension("lock").display().to_string()),
            table("stages", &["stage", "time", "device", "params"], &rows)
        );
        s
    }

    fn training(&self) -> String {
        let (h, f) = (self.head, self.finetune);
        let mut rows = vec![vec![
            format!("train-head, exported epoch {} of {}", h.epochs.exported.epoch, h.epochs.epochs),
            number(Some(h.evaluation.accuracy)),
            number(Some(h.evaluation.loss)),
        ]];
        if let Some(i) = f.initial {
            rows.push(vec![
                "finetune, before the first epoch".into(),
                number(Some(i.val_acc)),
                number(Some(i.val_loss)),
            ]);
        }
        rows.push(vec![
            format!("finetune, exported epoch {} of {}", f.epochs.exported.epoch, f.epochs.epochs),
            number(Some(f.evaluation.accuracy)),
            number(Some(f.evaluation.loss)),
        ]);
        let on_test = self.predicted.on_test();
        rows.push(vec![
            format!(
                "predict (classifier.onnx) on the {}",
                if on_test { "held-out test split" } else { "validation split" }
            ),
            number(Some(self.predicted.evaluation.accuracy)),
            number(Some(self.predicted.evaluation.loss)),
        ]);
        let mut s = format!(
            r#"<section id="training"><h2>Training</h2><h3>Validation before and after fine-tuning{}</h3>{}"#,
            if on_test { ", and the test" } else { "" },
            table("validation", &["", "accuracy", "loss"], &rows)
        );
        for ((stage, t), svg) in [("train-head", h), ("finetune", f)].into_iter().zip(self.curves) {
            let _ = write!(
                s,
                r#"<h3>{stage}: learning curves</h3><p class="muted">{} epochs in {:.1} s; best validation accuracy {:.4} at epoch {}; the dashed line marks the exported epoch ({}).</p><div class="curves">{}</div>"#,
                t.epochs.epochs,
                t.epochs.seconds,
                t.epochs.best.val_acc,
                t.epochs.best.epoch,
                t.epochs.exported.epoch,
                svg
            );
        }
        s.push_str("</section>");
        s
    }

    fn mistakes(&self, dir: &Path, thumbnails: &mut usize) -> Result<String> {
        let wrong = self.predicted.mistakes(self.options.mistakes);
        let total = self.predicted.rows.iter().filter(|r| r.label != r.predicted).count();
        let mut s = format!(
            r#"<section id="mistakes"><h2>Mistakes</h2><p>{total} of {} {} images are predicted wrongly{}; the most confident mistakes first.</p><div class="grid">"#,
            self.predicted.rows.len(),
            self.predicted.split(),
            if total > wrong.len() { format!(" (showing {})", wrong.len()) } else { String::new() }
        );
        for (i, row) in wrong.iter().enumerate() {
            let src = thumbs::of_file(
                dir,
                &format!("mistake-{i}"),
                &self.inputs.data.join(self.predicted.split()).join(&row.file),
            )?;
            *thumbnails += 1;
            let file = escape(&row.file);
            let _ = write!(
                s,
                r#"<figure><img src="{src}" alt="{file}" title="{file}"><figcaption><b>{}</b> predicted as <b>{}</b>, p {:.3}<br><span class="muted">{file}</span></figcaption></figure>"#,
                escape(&row.label),
                escape(&row.predicted),
                row.confidence
            );
        }
        s.push_str("</div></section>");
        Ok(s)
    }
}

/// The runs table: every recorded run, best first, the current one marked.
fn runs_section(run: Option<&Run>) -> String {
    let mut s = String::from(r#"<section id="runs"><h2>Runs</h2>"#);
    let Some(run) = run.filter(|r| !r.runs.is_empty()) else {
        s.push_str(
            "<p>No runs recorded: run the pipeline with <code>pipeline run</code> to compare runs here.</p></section>",
        );
        return s;
    };
    // Best first by predict's accuracy, with the trainers' validation accuracy beside it.
    let opts = TableOptions {
        sort: Some("accuracy".into()),
        metrics: vec!["evaluation.accuracy".into()],
        current: run.current,
        ..TableOptions::default()
    };
    let table = runs::table(&run.runs, &opts).or_else(|_| runs::table(&run.runs, &TableOptions { sort: None, ..opts }));
    let Ok(t) = table else { return s + "</section>" };
    let mut html = String::from(r#"<table class="runs"><thead><tr>"#);
    for h in &t.header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>");
    for (id, row) in t.ids.iter().zip(&t.rows) {
        html.push_str(if Some(*id) == run.current { r#"<tr class="current">"# } else { "<tr>" });
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    let _ = write!(
        s,
        "<p>Every run of this pipeline recorded in <code>.pipeline/runs</code>, the best validation accuracy first{}, \
         with the params that differ between them (<em>restored</em>: stages whose outputs came from the run cache). \
         The same table as <code>pipeline runs --sort accuracy</code>; <code>pipeline checkout RUN</code> brings a \
         run's outputs back.</p>{html}</section>",
        if run.current.is_some() { " (this run highlighted, marked *)" } else { "" }
    );
    s
}

fn evaluation(e: &Evaluation, split: &str, heat_map: &str) -> String {
    let rows: Vec<Vec<String>> = e
        .classes
        .iter()
        .map(|c| {
            let r = &e.per_class[c];
            vec![
                escape(c),
                number(Some(r.precision)),
                number(Some(r.recall)),
                number(Some(r.f1)),
                r.samples.to_string(),
            ]
        })
        .collect();
    let mut extra = format!("macro-F1 {:.4}", e.macro_f1);
    if e.classes.len() > 2 {
        let _ = write!(extra, ", top-{} accuracy {:.4}", e.top_k.k, e.top_k.accuracy);
    }
    format!(
        r#"<section id="evaluation"><h2>Evaluation</h2><p><code>predict</code> on the {split} images: accuracy {:.4}, {extra}, loss {:.4}.</p><div class="grid"><div><h3>Confusion matrix</h3><p class="muted">Rows: true class; columns: predicted. Shade: share of the row.</p>{heat_map}</div><div><h3>Per class</h3>{}</div></div></section>"#,
        e.accuracy,
        e.loss,
        table("per-class", &["class", "precision", "recall", "F1", "images"], &rows)
    )
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sd_data::layout::pipeline::{Lock, StageLock};
    use sd_data::layout::runs::{RunRecord, RunStatus, StageRun, StageState};
    use std::collections::BTreeMap;

    #[test]
    fn the_runs_table_puts_the_best_first_and_marks_the_run_in_progress() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("pipeline.yaml");
        let metrics = |acc: f64| {
            BTreeMap::from([(
                "artifacts/predict/metrics.json".to_string(),
                BTreeMap::from([("accuracy".to_string(), acc)]),
            )])
        };
        let mut lock = Lock::default();
        lock.stages.insert("predict".into(), StageLock { metrics: metrics(0.85), ..Default::default() });
        lock.save(&sd_data::layout::pipeline::lock_path(&file)).unwrap();
        let dir = runs::runs_dir(t.path());
        for (id, acc, size) in [(1, Some(0.8), "150"), (2, Some(0.9), "224"), (3, None, "299")] {
            RunRecord {
                id,
                pid: std::process::id(),
                started: 0,
                seconds: 1.0,
                status: if acc.is_some() { RunStatus::Ok } else { RunStatus::Running },
                param_set: None,
                params: BTreeMap::from([("size".to_string(), size.to_string())]),
                stages: vec![StageRun {
                    stage: "predict".into(),
                    state: StageState::Ran,
                    seconds: None,
                    signature: None,
                }],
                metrics: acc
                    .map(|a| BTreeMap::from([("predict".to_string(), BTreeMap::from([("accuracy".to_string(), a)]))]))
                    .unwrap_or_default(),
            }
            .write(&dir)
            .unwrap();
        }
        let run = Run::read(&file).unwrap();
        assert_eq!(run.current, Some(3));
        assert_eq!(run.stages.len(), 1);
        let html = runs_section(Some(&run));
        let at = |cell: &str| html.find(cell).unwrap_or_else(|| panic!("{cell} in {html}"));
        assert!(at("<th>size</th>") < at("<th>predict:accuracy</th>"));
        // 0.9, then this run's 0.85 (from the lock: it is running), then 0.8.
        assert!(
            at("<tr><td>2</td>") < at(r#"<tr class="current"><td>3 *</td>"#)
                && at("<td>0.8500</td>") < at("<tr><td>1</td>"),
            "{html}"
        );
        assert!(runs_section(None).contains("No runs recorded"));
    }
}
