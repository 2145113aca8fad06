//! The `augment` stage: preview augmented copies of one image, or write K augmented rounds of a
//! class-folder data set for `bottleneck` (see [`cli`]).
//!
//! The augmentation itself (ImageDataGenerator's parameters, presets, the seeded per-sample
//! draw and the one-pass warp) is the base crate `sd-transform`, which `finetune` and `report`
//! use too.

pub mod cli;
