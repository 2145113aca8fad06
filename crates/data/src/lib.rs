//! Data on disk, shared by every stage: class-folder data sets ([`dataset`]), image decoding
//! and resizing ([`image`]), VGG preprocessing ([`preprocess`]) and crash-safe artifacts
//! ([`artifact`], [`npy`]).

pub mod artifact;
pub mod dataset;
pub mod image;
pub mod loader;
pub mod npy;
pub mod preprocess;
pub mod scratch;

pub use dataset::{Dataset, Sample};
pub use preprocess::Preprocess;
