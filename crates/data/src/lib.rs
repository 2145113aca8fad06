//! Data on disk, shared by every stage: class-folder data sets ([`dataset`]), image decoding
//! and resizing ([`image`]), VGG preprocessing ([`preprocess`]), crash-safe artifacts
//! ([`artifact`], [`npy`], [`csv`]) and the artifact folders the stages hand each other ([`layout`]).

pub mod artifact;
pub mod csv;
pub mod dataset;
pub mod image;
pub mod layout;
pub mod loader;
pub mod npy;
pub mod preprocess;
pub mod scratch;
pub mod testing;
pub mod tree;

pub use dataset::{Dataset, Sample};
pub use layout::Classes;
pub use preprocess::{ModelInput, Preprocess};
