//! `predict`: a classifier ONNX (as `finetune` exports it: uint8 RGB images in, or float32
//! preprocessed ones; the probability `[N, 1]` of the class labelled 1 for two classes, or every
//! class's `[N, classes]`, out) over images:
//!
//! * [`evaluate`]: a labelled class-folder data set: accuracy, top-k, per-class
//!   precision/recall/F1, the confusion matrix, the loss, and every image's prediction;
//! * [`classify`]: images without labels (files, folders, a list): one row per image, CSV or
//!   JSON lines.
//!
//! Images stream through the prefetching loader and predictions stream to disk, so memory does
//! not grow with the data set. Size, resize filter, preprocessing and class names default to
//! what the classifier's metadata (`sd_data::layout::classifier`) records from training
//! ([`classifier`]); `--tta flip` averages each image with its mirror.

pub mod classifier;
pub mod classify;
pub mod cli;
pub mod evaluate;
pub mod inputs;

pub use classifier::{Classifier, Tta};
pub use evaluate::{Metrics, evaluate, summary};

/// CSV fields and records as every stage writes them (their home is `sd_data::csv`).
pub use sd_data::csv::{field as csv_field, records as csv_records};
