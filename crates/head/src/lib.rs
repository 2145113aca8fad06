//! `train-head`: the dense classifier head of the Keras "very little data" recipe, trained by
//! hand on bottleneck features (ONNX Runtime has no training API).
//!
//! * [`data`]: `bottleneck`'s features as the head trains on them.
//! * [`pool`]: how the head reads a feature map: Flatten (the recipe) or its average.
//! * [`model`]: Dense(ReLU) -> Dropout -> ... -> Dense(outputs), forward and hand-derived
//!   backward passes, checked against finite differences.
//! * [`optim`]: the head's parameters under `sd-train`'s optimisers (RMSprop, SGD).
//! * [`train`]: the fit loop, presets, keep-best; reproducible from a seed.
//! * [`export`]: the head's folder: `.npy` weights in Keras layout, `head.json`, `head.onnx`.
//! * [`report`]: `metrics.json` (losses, schedules, history and curves are `sd-train`'s).

pub mod cli;
pub mod data;
pub mod export;
pub mod model;
pub mod optim;
pub mod pool;
pub mod report;
pub mod train;

pub use data::Split;
pub use model::Head;
pub use pool::Pool;
pub use train::{Preset, TrainConfig, train};
