//! Metrics files: JSON whose numeric leaves are shown flattened (`{"val": {"acc": 0.9}}` gives
//! `val.acc`, array items get their index: `curve.0`). Booleans count as 0/1; strings are skipped.

use std::path::Path;

use serde::Serialize;

use crate::lock::{Lock, Metrics};
use crate::spec::Pipeline;

/// The flattened numeric values of a metrics file (`sd_data::layout::pipeline::read_metrics`).
pub fn read(path: &Path) -> anyhow::Result<Metrics> {
    Ok(sd_data::layout::pipeline::read_metrics(path)?)
}

/// One metric of one file: its value now and, for a diff, at the previous run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub stage: String,
    pub file: String,
    pub metric: String,
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<f64>,
}

/// Every metric of every stage's metrics files. `previous` is the value at the previous run:
/// what the lock recorded for the run before the last one, or, when the file changed since the
/// last run was recorded (a stage run by hand), the value at that last run.
pub fn rows(p: &Pipeline, lock: &Lock) -> Vec<Row> {
    let mut rows = Vec::new();
    for stage in &p.stages {
        let entry = lock.stages.get(&stage.name);
        for m in &stage.metrics {
            let file = m.path.to_string_lossy().into_owned();
            let now = match read(&p.resolve(&m.path)) {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!("{e:#}");
                    Metrics::new()
                }
            };
            let recorded = entry.and_then(|e| e.metrics.get(&file));
            let previous = match recorded {
                Some(r) if same(r, &now) => entry.and_then(|e| e.previous_metrics.get(&file)),
                r => r,
            };
            let mut keys: Vec<&String> = now.keys().chain(previous.into_iter().flat_map(|p| p.keys())).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                rows.push(Row {
                    stage: stage.name.clone(),
                    file: file.clone(),
                    metric: key.clone(),
                    value: now.get(key).copied(),
                    previous: previous.and_then(|p| p.get(key).copied()),
                });
            }
        }
    }
    rows
}

/// The same metrics: the same keys, values equal up to the last bits (the lock's JSON does not
/// read every float back bit for bit: 0.9591836734693876 may come back ...877).
fn same(a: &Metrics, b: &Metrics) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb && (va == vb || (va - vb).abs() <= 1e-12 * va.abs().max(vb.abs()) || (va.is_nan() && vb.is_nan()))
        })
}

/// A table with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn show(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// `new - old` with a sign, `-` when either is missing.
pub fn change(old: Option<f64>, new: Option<f64>) -> String {
    match (old, new) {
        (Some(o), Some(n)) => {
            let d = n - o;
            // Round away float noise like 0.1 + 0.2 - 0.3 for display.
            let d = (d * 1e12).round() / 1e12;
            if d > 0.0 { format!("+{d}") } else { d.to_string() }
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_read_back_with_float_noise_are_the_same() {
        let m = |v: f64| Metrics::from([("f1".to_string(), v), ("n".to_string(), f64::NAN)]);
        assert!(same(&m(0.9591836734693876), &m(0.9591836734693877)));
        assert!(same(&m(9.37893334839256e-18), &m(9.378933348392559e-18)));
        assert!(!same(&m(0.95), &m(0.96)));
        assert!(!same(&m(0.95), &Metrics::from([("f1".to_string(), 0.95)])));
    }

    #[test]
    fn formats_changes_and_tables() {
        assert_eq!(change(Some(0.1), Some(0.3)), "+0.2");
        assert_eq!(change(Some(3.0), Some(1.0)), "-2");
        assert_eq!(change(None, Some(1.0)), "-");
        assert_eq!(table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]), "a    bb\nxxx  y\n");
    }
}
