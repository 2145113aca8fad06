//! What the two trainers (`train-head` on features, `finetune` on images) share, so that a loss,
//! an optimiser rule or a metric exists once:
//!
//! * [`real`]: the float types training runs in (`f32`; `f64` for gradient checks) and the SIMD
//!   dispatch of the hot loops.
//! * [`loss`]: cross-entropy from the logits (sigmoid for two classes, softmax for more).
//! * [`optim`]: RMSprop and SGD with momentum (Keras 3 semantics) over a list of parameter
//!   tensors, with L2 and decoupled weight decay.
//! * [`schedule`]: the learning rate over training.
//! * [`metrics`]: predictions, the confusion matrix, accuracy, precision, recall, F1.
//! * [`epochs`]: the order training sees its samples in, and epochs of batches of images.
//! * [`fit`]: the one training loop (resume, epochs, schedule, divergence, keep-best, early
//!   stopping) over a [`fit::Model`].
//! * [`head`]: the dense head both trainers train, and its folder.
//! * [`history`]: per-epoch stats and keeping the best epoch's weights.
//! * [`checkpoint`]: resumable training.
//! * [`summary`]: what a run leaves besides the weights: `history.csv`, `curves.svg`, the epoch
//!   summary of `metrics.json`, Keras-style epoch lines and evaluation tables for the console.

pub mod checkpoint;
pub mod epochs;
pub mod fit;
pub mod head;
pub mod history;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod real;
pub mod schedule;
pub mod summary;

pub use history::{EpochStats, History};
pub use loss::{ClassWeight, Loss, Objective};
pub use optim::{Optimizer, OptimizerState, Regularization};
pub use real::Real;
pub use schedule::Schedule;
