//! The `pipeline` command. Exit codes: 0 ok, 1 a stage failed (or another runtime error),
//! 2 a usage or configuration error (bad flags, pipeline.yaml, lock file, unknown stage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::dag::Dag;
use crate::hash::HashCache;
use crate::lock::Lock;
use crate::metrics;
use crate::runlock::RunLock;
use crate::runner::{self, RunOptions};
use crate::spec::{ConfigError, Overrides, Pipeline};

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))
}
use crate::state::{self, Context};

/// Run the stages of pipeline.yaml whose command, params, program, deps or outs changed.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version)]
pub struct Args {
    /// The pipeline file; commands run in its folder, the lock is written next to it.
    #[arg(short, long, default_value = "pipeline.yaml", global = true)]
    pub file: PathBuf,
    /// Use the param set NAME from the file's `param_sets` (e.g. the full recipe) over its
    /// `params`.
    #[arg(long, value_name = "NAME", global = true)]
    pub params: Option<String>,
    /// Set one param, over the file and --params (repeatable): --set size=224.
    #[arg(long, value_name = "NAME=VALUE", global = true, value_parser = parse_setting)]
    pub set: Vec<(String, String)>,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Bring stages up to date (all, or the named ones and what they depend on).
    Run {
        /// Stages to run; their upstream stages are brought up to date first.
        stages: Vec<String>,
        /// Run the named stages (all if none) even if up to date.
        #[arg(long)]
        force: bool,
        /// Also run every stage downstream of the named ones.
        #[arg(long)]
        downstream: bool,
        /// Print what would run and why; run nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// After a failure, finish the stages that do not depend on it.
        #[arg(short, long)]
        keep_going: bool,
        /// Run up to N independent stages at once (0: one per CPU).
        #[arg(short, long, default_value_t = 1)]
        jobs: usize,
        /// When another run holds the pipeline folder (.pipeline/run.lock), wait for it
        /// instead of stopping with exit code 2.
        #[arg(long)]
        wait: bool,
    },
    /// Which stages are up to date, and why the others are not.
    Status {
        /// One JSON document on stdout (for schedulers).
        #[arg(long)]
        json: bool,
    },
    /// The stage graph, as text or Graphviz DOT.
    Dag {
        #[arg(long)]
        dot: bool,
    },
    /// The numeric values in the stages' metrics files.
    Metrics {
        /// Compare with the previous run.
        #[arg(long)]
        diff: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a Makefile that runs the same stage commands (`make -j`); same as `export make`.
    Makefile,
    /// Print the pipeline for another workflow engine, running the same stage commands.
    Export {
        #[command(subcommand)]
        engine: Engine,
    },
}

#[derive(Debug, Subcommand)]
pub enum Engine {
    /// A GNU Makefile: `pipeline export make > Makefile && make -j4`.
    Make,
    /// A Snakefile: `pipeline export snakemake > Snakefile && snakemake --cores 4`.
    Snakemake {
        /// Slices each bottleneck stage is cut into: `bottleneck --shard i/N` jobs and a
        /// `bottleneck --merge` job (1: one job).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        shards: u32,
    },
}

pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == crate::watchdog::ARG) {
        return crate::watchdog::main();
    }
    sd_cli::restore_sigpipe();
    let args = Args::parse();
    args.log.init();
    sd_cli::handle_signals(crate::runner::stop_stages);
    let code = match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<ConfigError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    };
    if let Some(signal) = crate::runner::stopped_by() {
        sd_cli::die_of(signal);
    }
    code
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let overrides = Overrides { set: args.params.clone(), values: args.set.clone() };
    let p = Pipeline::load_with(&args.file, &overrides)?;
    let dag = Dag::build(&p)?;
    let open_cache = || HashCache::open(&p.dir);
    match &args.command {
        Cmd::Run { stages, force, downstream, dry_run, keep_going, jobs, wait } => {
            state::check_sources(&p)?;
            crate::guard::check_all(&p)?;
            // Before reading the lock file: a run we waited for has just rewritten it.
            let _held = if *dry_run { None } else { Some(RunLock::acquire(&p, *wait, args.log.quiet)?) };
            let mut lock = Lock::load(&p.lock_path())?;
            let jobs = if *jobs == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { *jobs };
            let opts = RunOptions {
                targets: stages.clone(),
                force: *force,
                downstream: *downstream,
                dry_run: *dry_run,
                keep_going: *keep_going,
                jobs,
                quiet: args.log.quiet,
            };
            let mut cx = Context::new(&p, open_cache());
            let summary = runner::run(&mut cx, &dag, &mut lock, &opts);
            cx.hashes.save(stages.is_empty())?;
            let s = summary?;
            if !args.log.quiet {
                let verb = if *dry_run { "would run" } else { "ran" };
                let mut parts = vec![format!("{verb} {}", s.ran.len()), format!("{} up to date", s.up_to_date.len())];
                if !s.failed.is_empty() {
                    parts.push(format!("{} failed ({})", s.failed.len(), s.failed.join(", ")));
                }
                if !s.not_run.is_empty() {
                    parts.push(format!("{} not run ({})", s.not_run.len(), s.not_run.join(", ")));
                }
                eprintln!("pipeline: {}", parts.join(", "));
            }
            Ok(if s.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Status { json } => {
            state::check_sources(&p)?;
            let lock = Lock::load(&p.lock_path())?;
            let mut cx = Context::new(&p, open_cache());
            let stages = state::status(&mut cx, &dag, &lock);
            cx.hashes.save(true)?;
            let stages = stages?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&status_json(&p, &dag, &stages))?);
            } else {
                let width = stages.iter().map(|s| s.stage.len()).max().unwrap_or(0);
                for s in &stages {
                    let why: Vec<String> = s.reasons.iter().map(ToString::to_string).collect();
                    let state = if s.up_to_date { "up to date".into() } else { format!("changed: {}", why.join("; ")) };
                    println!("{:<width$}  {state}", s.stage);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dag { dot } => {
            if *dot {
                println!("digraph pipeline {{\n  rankdir=LR;\n  node [shape=box];");
                for &s in &dag.order {
                    println!("  \"{}\";", p.stages[s].name);
                    for &d in &dag.downstream[s] {
                        println!("  \"{}\" -> \"{}\";", p.stages[s].name, p.stages[d].name);
                    }
                }
                println!("}}");
            } else {
                for &s in &dag.order {
                    let ups: Vec<&str> = dag.upstream[s].iter().map(|&u| p.stages[u].name.as_str()).collect();
                    let after = if ups.is_empty() { String::new() } else { format!(" <- {}", ups.join(", ")) };
                    println!("{}{after}", p.stages[s].name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Metrics { diff, json } => {
            let lock = Lock::load(&p.lock_path())?;
            let rows = metrics::rows(&p, &lock);
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if *diff {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let (old, new) = (r.previous, r.value);
                        vec![
                            r.file.clone(),
                            r.metric.clone(),
                            metrics::show(old),
                            metrics::show(new),
                            metrics::change(old, new),
                        ]
                    })
                    .collect();
                print!("{}", metrics::table(&["file", "metric", "previous", "now", "change"], &cells));
            } else {
                let cells: Vec<Vec<String>> =
                    rows.iter().map(|r| vec![r.file.clone(), r.metric.clone(), metrics::show(r.value)]).collect();
                print!("{}", metrics::table(&["file", "metric", "value"], &cells));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Makefile | Cmd::Export { engine: Engine::Make } => {
            crate::guard::check_all(&p)?;
            let cx = Context::new(&p, HashCache::in_memory());
            print!("{}", crate::makefile::render(&p, &dag, cx.bin_dir.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export { engine: Engine::Snakemake { shards } } => {
            crate::guard::check_all(&p)?;
            // Only a hint for which outs are folders: a broken lock does not stop an export.
            let lock = Lock::load(&p.lock_path()).unwrap_or_default();
            let cx = Context::new(&p, HashCache::in_memory());
            let opts = crate::snakefile::Options { shards: *shards as usize };
            print!("{}", crate::snakefile::render(&p, &dag, &lock, cx.bin_dir.as_deref(), opts));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `status --json`: per stage (in run order) whether it is up to date, why not, and what a
/// scheduler needs to run it itself: the command (run in the pipeline's folder), its upstream
/// stages, deps and outs.
fn status_json(p: &Pipeline, dag: &Dag, stages: &[state::StageStatus]) -> serde_json::Value {
    let paths = |l: &mut dyn Iterator<Item = &crate::spec::PathSpec>| -> Vec<String> {
        l.map(|d| d.path.to_string_lossy().into_owned()).collect()
    };
    let stages: Vec<_> = stages
        .iter()
        .map(|st| {
            let reasons: Vec<_> = st
                .reasons
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).expect("serialisable");
                    v["message"] = r.to_string().into();
                    v
                })
                .collect();
            let stage = &p.stages[st.index];
            let upstream: Vec<&str> = dag.upstream[st.index].iter().map(|&u| p.stages[u].name.as_str()).collect();
            json!({
                "stage": stage.name,
                "up_to_date": st.up_to_date,
                "reasons": reasons,
                "cmd": stage.cmd,
                "upstream": upstream,
                "deps": paths(&mut stage.deps.iter()),
                "outs": paths(&mut stage.written()),
            })
        })
        .collect();
    let all = stages.iter().all(|s| s["up_to_date"] == true);
    json!({"up_to_date": all, "stages": stages})
}
