//! `train-head`: the dense classifier head of the Keras "very little data" recipe, trained by
//! hand on bottleneck features (ONNX Runtime has no training API). The head itself (its model,
//! optimiser state, pooling and folder) is `sd_train::head`, which `finetune` shares.
//!
//! * [`data`]: `bottleneck`'s features as the head trains on them.
//! * [`train`]: the head as a `sd_train::fit::Model`, presets, keep-best; reproducible from a seed.
//! * [`outputs`]: `metrics.json`, `history.csv` and `curves.svg` beside the head's folder.

pub mod cli;
pub mod data;
pub mod outputs;
pub mod train;

pub use data::Split;
pub use sd_train::head::{Head, Pool};
pub use train::{Preset, TrainConfig, train};
