//! What a training run leaves besides the weights, the same for both trainers: `history.csv`
//! and `curves.svg` (learning curves), the epoch part of `metrics.json`, and Keras-style
//! epoch lines for the log.

use std::path::Path;

use plotters::prelude::*;
use sd_data::artifact::{WriteError, write_bytes, write_lines};
use serde::{Deserialize, Serialize};

use crate::history::{EpochStats, Fit};
use crate::metrics::Evaluation;

pub const METRICS: &str = "metrics.json";
pub const HISTORY: &str = "history.csv";
pub const CURVES: &str = "curves.svg";

/// The epochs of a run in `metrics.json` (flattened into each trainer's own metrics).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochSummary {
    /// The last epoch.
    pub last: EpochStats,
    /// The epoch with the best validation accuracy (ties: lower validation loss).
    pub best: EpochStats,
    /// The epoch whose weights were written (`last`, or `best` with keep-best; epoch 0 is the
    /// model before training).
    pub exported: EpochStats,
    pub epochs: usize,
    /// Training and validation, all epochs.
    pub seconds: f64,
    pub seconds_per_epoch: f64,
}

impl EpochSummary {
    pub fn of<W>(fit: &Fit<W>) -> EpochSummary {
        let h = &fit.history;
        EpochSummary {
            last: *h.last().expect("at least one epoch"),
            best: fit.best,
            exported: fit.exported,
            epochs: h.len(),
            seconds: fit.seconds,
            seconds_per_epoch: fit.seconds / h.len() as f64,
        }
    }
}

/// Where a run's data came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub dir: String,
    pub samples: usize,
}

/// The history as CSV lines (header first).
pub fn history_csv(history: &[EpochStats]) -> Vec<String> {
    let mut lines = vec!["epoch,loss,acc,val_loss,val_acc,lr,seconds".to_string()];
    lines.extend(history.iter().map(|h| {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.4}",
            h.epoch, h.loss, h.acc, h.val_loss, h.val_acc, h.lr, h.seconds
        )
    }));
    lines
}

/// Keras-style epoch line: `Epoch 3/50 - 0.41s - loss: 0.2345 - acc: 0.9000 - val_loss: ...`.
pub fn epoch_line(h: &EpochStats, epochs: usize) -> String {
    format!(
        "Epoch {}/{epochs} - {:.2}s - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4}",
        h.epoch, h.seconds, h.loss, h.acc, h.val_loss, h.val_acc
    )
}

/// An evaluation for the console: accuracy (and macro-F1, top-k for more than two classes), then
/// the confusion matrix with class names and per-class recall, precision and F1. Up to 8
/// classes the columns carry the (shortened) names; up to 30 they are numbered like the rows;
/// past that a matrix no longer fits a terminal, and the most frequent confusions are listed.
pub fn evaluation_lines(e: &Evaluation) -> Vec<String> {
    let n = e.classes.len();
    let mut lines = vec![if n > 2 {
        format!(
            "accuracy {:.4} ({}/{}), macro-F1 {:.4}, top-{} accuracy {:.4}, loss {:.4}",
            e.accuracy, e.correct, e.samples, e.macro_f1, e.top_k.k, e.top_k.accuracy, e.loss
        )
    } else {
        format!("accuracy {:.4} ({}/{}), loss {:.4}", e.accuracy, e.correct, e.samples, e.loss)
    }];
    let rows = e.confusion_matrix.rows();
    let scores = |name: &str| {
        let c = &e.per_class[name];
        format!("{:>6.4} {:>9.4} {:>6.4}", c.recall, c.precision, c.f1)
    };
    if n > 30 {
        let mut pairs: Vec<(usize, usize, usize)> = (0..n)
            .flat_map(|t| (0..n).filter(move |&p| p != t).map(move |p| (rows[t][p], t, p)))
            .filter(|&(count, _, _)| count > 0)
            .collect();
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        lines.push(format!("  most frequent confusions (of {n} classes; the full matrix is in metrics.json):"));
        for (count, t, p) in pairs.into_iter().take(10) {
            lines.push(format!("  {count:>6}  {} predicted as {}", e.classes[t], e.classes[p]));
        }
        return lines;
    }
    let short = |s: &str, max: usize| -> String {
        if s.chars().count() <= max { s.to_string() } else { s.chars().take(max - 1).chain(['…']).collect() }
    };
    // Numbered columns when names would not fit or would not tell classes apart once shortened.
    let shortened: std::collections::BTreeSet<String> = e.classes.iter().map(|c| short(c, 10)).collect();
    let numbered = n > 8 || shortened.len() < n;
    let heads: Vec<String> = (0..n).map(|i| if numbered { i.to_string() } else { short(&e.classes[i], 10) }).collect();
    let digits = rows.iter().flatten().max().map_or(1, |m| m.to_string().len());
    let w = heads.iter().map(|h| h.chars().count()).max().unwrap_or(1).max(digits);
    let labels: Vec<String> = (0..n)
        .map(|i| if numbered { format!("{i:>2} {}", short(&e.classes[i], 20)) } else { short(&e.classes[i], 20) })
        .collect();
    let lw = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(6);
    let pad = |s: &str, width: usize| format!("{}{s}", " ".repeat(width.saturating_sub(s.chars().count())));
    let header: Vec<String> = heads.iter().map(|h| pad(h, w)).collect();
    lines.push(format!(
        "  {}  {}  recall precision     f1   (rows: true class, columns: predicted)",
        " ".repeat(lw),
        header.join(" ")
    ));
    for (i, label) in labels.iter().enumerate() {
        let cells: Vec<String> = rows[i].iter().map(|v| pad(&v.to_string(), w)).collect();
        let label = format!("{label}{}", " ".repeat(lw - label.chars().count()));
        lines.push(format!("  {label}  {}  {}", cells.join(" "), scores(&e.classes[i])));
    }
    lines
}

/// Learning curves as SVG: loss, accuracy (train and validation) and the learning rate per
/// epoch; `exported` (a 1-based epoch) is marked by a dashed vertical line in each panel.
pub fn curves_svg(history: &[EpochStats], exported: Option<usize>) -> Result<String, String> {
    type Pick = fn(&EpochStats) -> f64;
    type Series = Vec<(&'static str, Pick, RGBColor)>;
    let panels: [(&str, Series); 3] = [
        ("loss", vec![("train", |h| h.loss, BLUE), ("validation", |h| h.val_loss, RED)]),
        ("accuracy", vec![("train", |h| h.acc, BLUE), ("validation", |h| h.val_acc, RED)]),
        ("learning rate", vec![("lr", |h| h.lr, GREEN)]),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, 3));
        let epochs = history.len().max(2) as f64;
        // Epoch 0 (the model before training) is exported when no epoch beat it.
        let first = if exported == Some(0) { 0.0 } else { 1.0 };
        for (area, (title, series)) in areas.iter().zip(panels) {
            let values = history.iter().flat_map(|h| series.iter().map(|(_, pick, _)| pick(h)).collect::<Vec<_>>());
            let (lo, hi) = values
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let (lo, hi) = if !lo.is_finite() {
                (0.0, 1.0)
            } else if lo < hi {
                (lo, hi)
            } else {
                // A constant series (a constant learning rate): a band around it.
                let half = if lo == 0.0 { 0.5 } else { lo.abs() * 0.5 };
                (lo - half, lo + half)
            };
            let pad = (hi - lo) * 0.05;
            let (y0, y1) = (lo - pad, hi + pad);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d(first..epochs, y0..y1)
                .map_err(|e| e.to_string())?;
            let small = hi.abs().max(lo.abs()) < 0.01;
            let label = |v: &f64| if small { format!("{v:.1e}") } else { format!("{v:.2}") };
            chart.configure_mesh().x_desc("epoch").y_label_formatter(&label).draw().map_err(|e| e.to_string())?;
            for (name, pick, color) in series {
                chart
                    .draw_series(LineSeries::new(
                        history.iter().map(|h| (h.epoch as f64, pick(h))),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
            if let Some(e) = exported {
                let x = e as f64;
                let dashes = (0..20).map(|i| {
                    let at = |k: f64| y0 + (y1 - y0) * k / 40.0;
                    PathElement::new(vec![(x, at(2.0 * i as f64)), (x, at(2.0 * i as f64 + 1.0))], BLACK)
                });
                chart
                    .draw_series(dashes)
                    .map_err(|e| e.to_string())?
                    .label(format!("exported (epoch {e})"))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes `history.csv` and `curves.svg` (with the `exported` epoch marked) into `dir`, atomically.
pub fn write_history(dir: &Path, history: &[EpochStats], exported: Option<usize>) -> Result<(), WriteError> {
    write_lines(dir.join(HISTORY), &history_csv(history))?;
    let svg = curves_svg(history, exported)
        .map_err(|e| WriteError { path: dir.join(CURVES), source: std::io::Error::other(e) })?;
    write_bytes(dir.join(CURVES), svg.as_bytes())
}

/// Reads a `history.csv` written by [`write_history`] back (the report draws it again).
pub fn read_history(path: &Path) -> Result<Vec<EpochStats>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header = history_csv(&[]).remove(0);
    if lines.next() != Some(header.as_str()) {
        return Err(format!("{} does not start with `{header}`: not a trainer's history", path.display()));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let bad = || format!("{}:{}: expected 7 numbers, got `{line}`", path.display(), i + 2);
            let v: Vec<f64> = line.split(',').map(|f| f.parse::<f64>().map_err(|_| bad())).collect::<Result<_, _>>()?;
            let [epoch, loss, acc, val_loss, val_acc, lr, seconds] = v[..] else { return Err(bad()) };
            Ok(EpochStats { epoch: epoch as usize, loss, acc, val_loss, val_acc, lr, seconds })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<EpochStats> {
        (1..=5)
            .map(|e| EpochStats {
                epoch: e,
                loss: 1.0 / e as f64,
                acc: 0.5 + 0.08 * e as f64,
                val_loss: 1.2 / e as f64,
                val_acc: 0.5 + 0.07 * e as f64,
                lr: 1e-3,
                seconds: 0.1,
            })
            .collect()
    }

    #[test]
    fn svg_has_both_panels_and_all_series() {
        let svg = curves_svg(&history(), Some(3)).unwrap();
        assert!(svg.starts_with("<svg"));
        for word in ["loss", "accuracy", "learning rate", "train", "validation", "epoch", "exported (epoch 3)"] {
            assert!(svg.contains(word), "{word}");
        }
        assert!(svg.matches("<polyline").count() >= 5, "five curves");
        assert!(!curves_svg(&history(), None).unwrap().contains("exported"));
        // A single epoch still plots.
        assert!(curves_svg(&history()[..1], Some(1)).is_ok());
        // Epoch 0 (the start, exported when no epoch beat it) is marked too.
        assert!(curves_svg(&history(), Some(0)).unwrap().contains("exported (epoch 0)"));
    }

    fn evaluation(classes: usize, samples: usize) -> Evaluation {
        evaluation_named(classes, samples, |i| format!("class-with-a-long-name-{i}"))
    }

    fn evaluation_named(classes: usize, samples: usize, name: impl Fn(usize) -> String) -> Evaluation {
        use crate::{Loss, metrics::Tally};
        let loss = Loss::for_classes(classes);
        let mut t = Tally::new(loss);
        let logits: Vec<f32> = (0..samples * loss.outputs()).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let labels: Vec<u32> = (0..samples).map(|i| (i % classes) as u32).collect();
        t.add_logits(&logits, &labels);
        t.report(&(0..classes).map(name).collect::<Vec<_>>())
    }

    #[test]
    fn evaluation_lines_name_the_classes_for_2_20_and_40_classes() {
        let two = evaluation_lines(&evaluation_named(2, 10, |i| ["cats", "dogs"][i].into()));
        assert!(two[0].starts_with("accuracy") && !two[0].contains("macro"), "{two:?}");
        assert_eq!(two.len(), 4, "summary, header, two rows");
        assert!(two[1].contains("cats dogs") && two[2].starts_with("  cats  ") && two[3].starts_with("  dogs  "));
        // Names that shorten to the same text: numbered columns and rows instead.
        let long = evaluation_lines(&evaluation(2, 10));
        assert!(long[1].contains(" 0 1  recall") && long[2].starts_with("   0 class-with-a-long-n…"), "{long:?}");
        let twenty = evaluation_lines(&evaluation(20, 100));
        assert!(twenty[0].contains("macro-F1") && twenty[0].contains("top-5"), "{}", twenty[0]);
        assert_eq!(twenty.len(), 22);
        assert!(twenty[21].starts_with("  19 class-with"), "{}", twenty[21]);
        // Every row is as wide as the header: a readable table.
        let width = twenty[1].find("  recall").unwrap();
        assert!(twenty[2..].iter().all(|l| l.chars().count() >= width), "{twenty:#?}");
        let forty = evaluation_lines(&evaluation(40, 200));
        assert!(forty[1].contains("most frequent confusions") && forty.len() <= 12, "{forty:?}");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_epoch() {
        let lines = history_csv(&history());
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], "epoch,loss,acc,val_loss,val_acc,lr,seconds");
        assert!(lines[1].starts_with("1,1.000000,0.580000,1.200000,0.570000,"));
    }

    #[test]
    fn history_reads_back_what_was_written() {
        let t = tempfile::tempdir().unwrap();
        write_history(t.path(), &history(), Some(5)).unwrap();
        let back = read_history(&t.path().join(HISTORY)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!((back[2].epoch, back[2].acc, back[2].lr), (3, 0.74, 1e-3));
        std::fs::write(t.path().join("bad.csv"), "epoch,loss,acc,val_loss,val_acc,lr,seconds\n1,2\n").unwrap();
        let err = read_history(&t.path().join("bad.csv")).unwrap_err();
        assert!(err.ends_with("bad.csv:2: expected 7 numbers, got `1,2`"), "{err}");
        std::fs::write(t.path().join("other.csv"), "a,b\n").unwrap();
        assert!(read_history(&t.path().join("other.csv")).unwrap_err().contains("not a trainer's history"));
    }
}
