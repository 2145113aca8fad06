//! `train-head`: the dense classifier head of the Keras "very little data" recipe, trained by
//! hand on bottleneck features (ONNX Runtime has no training API).
//!
//! * [`data`]: reads and checks `features.npy` / `labels.npy` / `classes.json`.
//! * [`model`]: Flatten -> Dense(ReLU) -> Dropout -> ... -> Dense(1) -> sigmoid, forward and
//!   hand-derived backward passes, checked against finite differences.
//! * [`optim`]: RMSprop and SGD with momentum, Keras 3 semantics; weight decay and L2.
//! * [`train`]: the fit loop, presets, schedules, keep-best; reproducible from a seed.
//! * [`export`]: `.npy` weights in Keras layout, `head.json`, `head.onnx`.
//! * [`report`]: `metrics.json`, `history.csv`, `curves.svg`.

pub mod cli;
pub mod data;
pub mod export;
pub mod model;
pub mod optim;
pub mod report;
pub mod train;

pub use data::Split;
pub use model::Head;
pub use train::{Preset, TrainConfig, train};
