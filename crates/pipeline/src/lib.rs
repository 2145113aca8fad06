//! `pipeline`: runs the stages declared in `pipeline.yaml` in dependency order, skipping each
//! stage whose command, params, program, deps and outs match what `pipeline.lock` recorded at its
//! last successful run (see README.md). It knows nothing about what the stages do.
//!
//! [`spec`] parses the file, [`dag`] orders the stages, [`hash`] fingerprints content (with a
//! stat cache), [`lock`] keeps the fingerprints, [`state`] compares them, [`runner`] runs the
//! stages, [`metrics`] serves `pipeline metrics`, and [`makefile`] and [`snakefile`] the exports to
//! make and Snakemake ([`fanout`] shards bottleneck stages). [`guard`] keeps outs inside the
//! pipeline folder, [`runlock`] keeps runs apart, [`watchdog`] keeps stages from outliving a run.
//! [`cache`] is the run cache (outs by stage signature), [`runs`] records runs and checks them out.

pub mod cache;
pub mod cli;
pub mod dag;
pub mod fanout;
pub mod guard;
pub mod hash;
pub mod init;
pub mod lock;
pub mod makefile;
pub mod metrics;
pub mod runlock;
pub mod runner;
pub mod runs;
pub mod shell;
pub mod snakefile;
pub mod spec;
pub mod state;
pub mod typed;
pub mod watchdog;

pub use dag::Dag;
pub use spec::{ConfigError, Pipeline};
