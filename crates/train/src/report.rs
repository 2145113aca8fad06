//! What a training run leaves besides the weights, the same for both trainers: `history.csv`
//! and `curves.svg` (learning curves), the epoch part of `metrics.json`, and Keras-style
//! epoch lines for the log.

use std::path::Path;

use plotters::prelude::*;
use sd_data::artifact::{WriteError, write_bytes, write_lines};
use serde::Serialize;

use crate::history::{EpochStats, Fit};

pub const METRICS: &str = "metrics.json";
pub const HISTORY: &str = "history.csv";
pub const CURVES: &str = "curves.svg";

/// The epochs of a run in `metrics.json` (flattened into each trainer's own metrics).
#[derive(Debug, Clone, Serialize)]
pub struct EpochSummary {
    /// The last epoch.
    pub last: EpochStats,
    /// The epoch with the best validation accuracy (ties: lower validation loss).
    pub best: EpochStats,
    /// The epoch whose weights were written (`last`, or `best` with keep-best).
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
            best: h[fit.best],
            exported: h[fit.exported],
            epochs: h.len(),
            seconds: fit.seconds,
            seconds_per_epoch: fit.seconds / h.len() as f64,
        }
    }
}

/// Where a run's data came from.
#[derive(Debug, Clone, Serialize)]
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

/// Learning curves as SVG: loss (left) and accuracy (right), train and validation.
pub fn curves_svg(history: &[EpochStats]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((1, 2));
        let epochs = history.len().max(2) as f64;
        type Pick = fn(&EpochStats) -> f64;
        let series: [(&str, Pick, Pick); 2] =
            [("loss", |h| h.loss, |h| h.val_loss), ("accuracy", |h| h.acc, |h| h.val_acc)];
        for (area, (title, train, val)) in panels.iter().zip(series) {
            let values = history.iter().flat_map(|h| [train(h), val(h)]).filter(|v| v.is_finite());
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
            let pad = (hi - lo) * 0.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(1.0..epochs, (lo - pad)..(hi + pad))
                .map_err(|e| e.to_string())?;
            chart.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
            for (name, pick, color) in [("train", train, BLUE), ("validation", val, RED)] {
                chart
                    .draw_series(LineSeries::new(
                        history.iter().map(|h| (h.epoch as f64, pick(h))),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
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

/// Writes `history.csv` and `curves.svg` into `dir`, atomically.
pub fn write_history(dir: &Path, history: &[EpochStats]) -> Result<(), WriteError> {
    write_lines(dir.join(HISTORY), &history_csv(history))?;
    let svg =
        curves_svg(history).map_err(|e| WriteError { path: dir.join(CURVES), source: std::io::Error::other(e) })?;
    write_bytes(dir.join(CURVES), svg.as_bytes())
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
        let svg = curves_svg(&history()).unwrap();
        assert!(svg.starts_with("<svg"));
        for word in ["loss", "accuracy", "train", "validation", "epoch"] {
            assert!(svg.contains(word), "{word}");
        }
        assert!(svg.matches("<polyline").count() >= 4, "four curves");
        // A single epoch still plots.
        assert!(curves_svg(&history()[..1]).is_ok());
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_epoch() {
        let lines = history_csv(&history());
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], "epoch,loss,acc,val_loss,val_acc,lr,seconds");
        assert!(lines[1].starts_with("1,1.000000,0.580000,1.200000,0.570000,"));
    }
}
