//! `finetune`: VGG16's block 5 trained together with the dense head, the last step of the
//! Keras "very little data" recipe, with the heavy work in ONNX Runtime.
//!
//! * [`graphs`]: block 5's forward and hand-derived backward passes as ONNX graphs (weights as
//!   inputs), built at start-up.
//! * [`block5`]: block 5's weights, its sessions, and its parameters for `sd-train`'s optimisers.
//! * [`conv_layout`]: ONNX `Conv` or ONNX Runtime's faster CPU NCHWc convolutions for block 5.
//! * [`features`]: the frozen part (`frozen_base.onnx`) per batch, and cached feature files.
//! * [`inputs`]: the model folder and the trained head, checked against each other.
//! * [`train`]: the training loop, exact (fresh augmentation every epoch) or on cached rounds.
//! * [`export`]: `classifier.onnx`, the whole model in one graph.
//! * [`outputs`]: `metrics.json`, `history.csv`, `curves.svg` and the other outputs.

pub mod block5;
pub mod cli;
pub mod conv_layout;
pub mod export;
pub mod features;
pub mod graphs;
pub mod inputs;
pub mod outputs;
pub mod train;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

pub use block5::{Block5, Block5Weights};
pub use train::{FinetuneConfig, Finetuned, Trainer, finetune};
