//! The dense classifier head both trainers train (`train-head` on features, `finetune` on top
//! of block 5): its model, its parameters under the optimisers, how it reads a feature map, and
//! its folder (weights, `head.json`, `head.onnx`).
//!
//! It lives in sd-train rather than in the `train-head` stage so that `finetune` uses it
//! without depending on another stage.
//!
//! * [`pool`]: how the head reads a feature map: Flatten (the recipe) or its average.
//! * [`model`]: Dense(ReLU) -> Dropout -> ... -> Dense(outputs), forward and hand-derived
//!   backward passes, checked against finite differences.
//! * [`optim`]: the head's parameters under the optimisers (RMSprop, SGD).
//! * [`export`]: the head's folder: `.npy` weights in Keras layout, `head.json`, `head.onnx`.

pub mod export;
pub mod model;
pub mod optim;
pub mod pool;

pub use model::Head;
pub use pool::Pool;
