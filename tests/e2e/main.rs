//! End-to-end tests of the binaries, one module per area, in one test binary: it builds and links
//! the workspace once instead of once per area.

mod common;

mod audit;
mod augment;
mod backbone;
mod bottleneck;
mod cli;
mod engines;
mod experiments;
mod finetune;
mod int8;
mod multiclass;
mod params;
mod pipeline;
mod predict;
mod prepare_model;
mod reliability;
mod report;
mod setup;
mod split;
mod train_head;
