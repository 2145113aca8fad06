//! `predict --out`'s folder: `metrics.json` (the evaluation, where it ran, which split it scored)
//! and `predictions.csv` (a header `file,label,predicted,confidence,p_<class>...`, then one RFC 4180
//! record per image, written with [`crate::csv`]). `predict` writes them; `report` reads them.

/// The evaluation as JSON.
pub const METRICS: &str = "metrics.json";

/// One record per image.
pub const PREDICTIONS: &str = "predictions.csv";

/// The first fields of `predictions.csv`'s header (a probability column per class follows).
pub const PREDICTION_FIELDS: [&str; 4] = ["file", "label", "predicted", "confidence"];
