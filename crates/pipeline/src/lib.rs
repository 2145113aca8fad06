//! `pipeline`: runs the stages declared in `pipeline.yaml` in dependency order, skipping each
//! stage whose command, params, program, deps and outs match what `pipeline.lock` recorded at its
//! last successful run (see README.md). It knows nothing about what the stages do.
//!
//! [`spec`] parses the file, [`dag`] orders the stages, [`hash`] fingerprints content (with a
//! stat cache), [`lock`] keeps the fingerprints, [`state`] compares them, [`runner`] runs the
//! stages, [`metrics`] and [`makefile`] serve the `metrics` and `makefile` commands.

pub mod cli;
pub mod dag;
pub mod hash;
pub mod lock;
pub mod makefile;
pub mod metrics;
pub mod runner;
pub mod spec;
pub mod state;

pub use dag::Dag;
pub use spec::{ConfigError, Pipeline};
