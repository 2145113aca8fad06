//! `pipeline`: runs the stages declared in `pipeline.yaml` in dependency order, skipping each
//! stage whose command, params, program, deps and outs match what `pipeline.lock` recorded at its
//! last successful run (see README.md). Also the `split` stage (the tutorial's data split).
//!
//! [`spec`] parses the file, [`dag`] orders the stages, [`hash`] fingerprints content (with a
//! stat cache), [`lock`] keeps the fingerprints, [`state`] compares them, [`runner`] runs the
//! stages, [`metrics`] and [`makefile`] serve the `metrics` and `makefile` commands.

pub mod cli;
pub mod dag;
pub mod guard;
pub mod hash;
pub mod lock;
pub mod makefile;
pub mod metrics;
pub mod runlock;
pub mod runner;
pub mod spec;
pub mod split;
pub mod state;
pub mod watchdog;

pub use dag::Dag;
pub use spec::{ConfigError, Pipeline};
