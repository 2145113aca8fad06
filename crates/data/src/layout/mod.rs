//! The artifact folders the stages hand each other, each described once: its file names, its
//! JSON documents as types, and the code that writes and reads them. A producer and its
//! consumers use the same description, so a file name or a field cannot drift apart.
//!
//! * [`model`]: `prepare-model`'s folder (conv base, frozen part, block 5's weights, `model.json`).
//! * [`features`]: `bottleneck`'s folder (`features.npy`, `labels.npy`, `files.txt`,
//!   `classes.json`, `bottleneck.json`); augment's `.npy` rounds share its label files.
//! * [`classifier`]: what a classifier ONNX records about itself in its metadata.
//! * [`Classes`]: the class map (`{"cats": 0, "dogs": 1}`) all of them carry.
//! * [`audit`]: `audit`'s folder (`duplicates.csv`, `suspects.csv`, `summary.json`).
//! * [`split`]: `split`'s folder (`train/`, `validation/`, `test/` class-folder sets, `split.json`).
//! * [`predict`]: `predict`'s folder (`metrics.json`, `predictions.csv`).
//! * [`pipeline`]: `pipeline.lock` and the metrics files' numbers; [`runs`]: the runs `pipeline`
//!   records (`.pipeline/runs/`), and their table.
//!
//! The head's folder (`train-head`'s weights and `head.json`) is described by `sd-head`, the
//! only crate that builds heads.

pub mod audit;
pub mod classes;
pub mod classifier;
pub mod features;
pub mod model;
pub mod pipeline;
pub mod predict;
pub mod runs;
pub mod split;

use std::path::{Path, PathBuf};

pub use classes::Classes;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    #[error(transparent)]
    Write(#[from] crate::artifact::WriteError),
}

/// Reads a JSON document of type `T`; errors name the file and, for a missing file, `hint`
/// (which stage writes it).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, hint: &str) -> Result<T, LayoutError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LayoutError::Invalid { path: path.into(), reason: format!("missing; {hint}") },
        _ => LayoutError::Read { path: path.into(), source },
    })?;
    serde_json::from_str(&text).map_err(|e| LayoutError::Invalid { path: path.into(), reason: e.to_string() })
}
