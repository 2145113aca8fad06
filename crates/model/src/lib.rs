//! `prepare-model`: finds VGG16 in an ONNX export by its structure, verifies the ImageNet
//! weights, and writes the conv base, the frozen part for fine-tuning and block 5's weights
//! (and, with `--quantize int8`, int8 copies of the first two: [`quantize`]). With `--backbone
//! efficientnet-lite0|efficientnet-lite2` it builds EfficientNet-Lite from its PyTorch weights
//! instead ([`efficientnet`], [`lite`]) into the same folder layout.

pub mod cli;
pub mod efficientnet;
pub mod fingerprint;
pub mod lite;
pub mod prepare;
pub mod quantize;
pub mod structure;
pub mod testing;

pub use prepare::{FingerprintCheck, prepare};
