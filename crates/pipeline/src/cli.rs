//! The `pipeline` command. Exit codes: 0 ok, 1 a stage failed (or another runtime error),
//! 2 a usage or configuration error (bad flags, pipeline.yaml, lock file, unknown stage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::dag::Dag;
use crate::hash::HashCache;
use crate::metrics;
use crate::runlock::RunLock;
use crate::runner::{self, RunOptions};
use crate::runs::Recorder;
use crate::spec::{ConfigError, Overrides, Pipeline};
use anyhow::Context as _;
use sd_data::layout::runs::{self, RunRecord, RunStatus, TableOptions};

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))
}
use crate::state::{self, Context};

/// The pipeline file looked for in the current folder.
pub const DEFAULT_FILE: &str = "pipeline.yaml";

/// Run the stages of pipeline.yaml whose command, params, program, deps or outs changed.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version)]
pub struct Args {
    /// The pipeline file; commands run in its folder, the lock is written next to it.
    #[arg(short, long, default_value = DEFAULT_FILE, global = true)]
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
    /// Write a pipeline file (--file) in the current folder for your own data: the recipe's
    /// stages with `data` set to --data and `weights` to the set-up's, found where the binaries
    /// find ONNX Runtime; then say what to run next.
    Init {
        /// Your images: DIR/<class>/<image> (the split stage holds some out), or already split
        /// into DIR/train/<class>/ and DIR/validation/<class>/.
        #[arg(long, value_name = "DIR", default_value = "data")]
        data: PathBuf,
        /// The network under the head: vgg16 (the recipe's), efficientnet-lite0 or
        /// efficientnet-lite2 (with the image input it expects).
        #[arg(long, default_value_t = sd_data::layout::model::Backbone::Vgg16)]
        backbone: sd_data::layout::model::Backbone,
        /// Its weights [default: the set-up's (models/vgg16-keras-imagenet.onnx,
        /// models/<backbone>.pth), found where the binaries find ONNX Runtime].
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// Replace an existing pipeline file.
        #[arg(long)]
        force: bool,
    },
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
        /// Run out-of-date stages even when the run cache (.pipeline/cache) has their outs.
        #[arg(long)]
        no_cache: bool,
    },
    /// The recorded runs as one table: a row per run, the params that differ, metrics as columns.
    Runs {
        #[command(flatten)]
        table: TableArgs,
    },
    /// Run every combination of the values given with `--set NAME=V1,V2,...` (repeatable), one
    /// after another, then show them as a table. A failed variant is recorded and the sweep goes on.
    Sweep {
        /// Run out-of-date stages even when the run cache has their outs.
        #[arg(long)]
        no_cache: bool,
        /// When another run holds the pipeline folder, wait for it.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        table: TableArgs,
    },
    /// Bring back the outs of a recorded run (see `pipeline runs`) from the run cache.
    Checkout {
        /// The run's number.
        run: u64,
        /// When another run holds the pipeline folder, wait for it.
        #[arg(long)]
        wait: bool,
    },
    /// Remove run-cache entries (the oldest first) and the files no remaining entry uses.
    Gc {
        /// Keep the N newest entries.
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Keep the newest entries whose distinct files fit in SIZE (e.g. 500M, 2G).
        #[arg(long, value_name = "SIZE", value_parser = crate::cache::parse_size)]
        max_size: Option<u64>,
        /// When another run holds the pipeline folder, wait for it.
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
        /// Graphviz DOT instead of text (`pipeline dag --dot | dot -Tsvg > dag.svg`).
        #[arg(long)]
        dot: bool,
    },
    /// The numeric values in the stages' metrics files.
    Metrics {
        /// Compare with the previous run.
        #[arg(long)]
        diff: bool,
        /// The values as JSON (with the previous run's).
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

/// How `runs` and `sweep` show the table.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// The records as JSON.
    #[arg(long, group = "format")]
    pub json: bool,
    /// CSV, numbers in full.
    #[arg(long, group = "format")]
    pub csv: bool,
    /// A Markdown table.
    #[arg(long, group = "format")]
    pub md: bool,
    /// Order by this metric (`stage:metric`, or a metric name only one stage has), highest first.
    #[arg(long, value_name = "METRIC")]
    pub sort: Option<String>,
    /// With --sort: lowest first (losses, errors).
    #[arg(long, requires = "sort")]
    pub ascending: bool,
    /// Show every param, not only those that differ between the runs.
    #[arg(long)]
    pub all_params: bool,
    /// Show every metric, not only each metrics file's top-level numbers.
    #[arg(long)]
    pub all_metrics: bool,
    /// Also show the metrics whose column name contains TEXT (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub metric: Vec<String>,
}

impl TableArgs {
    fn options(&self) -> TableOptions {
        TableOptions {
            all_params: self.all_params,
            all_metrics: self.all_metrics,
            metrics: self.metric.clone(),
            sort: self.sort.clone(),
            ascending: self.ascending,
            current: None,
        }
    }

    /// Prints `runs` in the chosen format.
    fn print(&self, p: &Pipeline, runs: &[RunRecord]) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(runs)?);
            return Ok(());
        }
        let table = runs::table(runs, &self.options()).map_err(|msg| usage(p, msg))?;
        print!(
            "{}",
            if self.csv {
                table.csv()
            } else if self.md {
                table.markdown()
            } else {
                table.text()
            }
        );
        Ok(())
    }
}

fn usage(p: &Pipeline, msg: impl Into<String>) -> ConfigError {
    ConfigError { file: p.file.clone(), loc: None, msg: msg.into() }
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
            let usage =
                err.downcast_ref::<ConfigError>().is_some() || err.chain().any(|c| c.is::<sd_cli::UsageError>());
            if usage { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    };
    if let Some(signal) = crate::runner::stopped_by() {
        sd_cli::die_of(signal);
    }
    code
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if let Cmd::Init { data, backbone, weights, force } = &args.command {
        let (file, data, weights) = (args.file.clone(), data.clone(), weights.clone());
        let init = crate::init::Init { file, data, backbone: *backbone, weights, force: *force };
        let line = crate::init::init(&init)?;
        sd_cli::summary(&args.log, line);
        return Ok(ExitCode::SUCCESS);
    }
    if let Cmd::Sweep { no_cache, wait, table } = &args.command {
        return sweep(args, *no_cache, *wait, table);
    }
    let overrides = Overrides { set: args.params.clone(), values: args.set.clone() };
    let p = Pipeline::load_with(&args.file, &overrides)?;
    let dag = Dag::build(&p)?;
    let open_cache = || HashCache::open(&p.dir);
    match &args.command {
        Cmd::Run { stages, force, downstream, dry_run, keep_going, jobs, wait, no_cache } => {
            state::check_sources(&p)?;
            crate::guard::check_all(&p)?;
            // Before reading the lock file: a run we waited for has just rewritten it.
            let _held = if *dry_run { None } else { Some(RunLock::acquire(&p, "run", *wait, args.log.quiet)?) };
            let mut lock = crate::lock::load(&p.lock_path())?;
            let recorder = (!*dry_run).then(|| Recorder::start(&p, args.params.clone()));
            let jobs = if *jobs == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { *jobs };
            let opts = RunOptions {
                targets: stages.clone(),
                force: *force,
                downstream: *downstream,
                dry_run: *dry_run,
                keep_going: *keep_going,
                jobs,
                quiet: args.log.quiet,
                no_cache: *no_cache,
            };
            let mut cx = Context::new(&p, open_cache());
            let summary = runner::run(&mut cx, &dag, &mut lock, &opts);
            cx.hashes.save(stages.is_empty())?;
            match (recorder, &summary) {
                (Some(r), Err(e)) if e.downcast_ref::<ConfigError>().is_some() => r.discard(),
                (Some(r), _) => drop(r.finish(summary.as_ref().ok(), &lock)),
                (None, _) => {}
            }
            let s = summary?;
            if !args.log.quiet {
                eprintln!("pipeline: {}", describe_summary(&s, *dry_run));
            }
            Ok(if s.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Runs { table } => {
            table.print(&p, &runs::read_all(&runs::runs_dir(&p.dir)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sweep { .. } | Cmd::Init { .. } => unreachable!("handled above"),
        Cmd::Checkout { run, wait } => {
            let records = runs::read_all(&runs::runs_dir(&p.dir));
            let Some(record) = records.iter().find(|r| r.id == *run) else {
                let known: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
                let known = if known.is_empty() { "none recorded yet".into() } else { known.join(", ") };
                return Err(usage(&p, format!("no run {run} (runs: {known}; see `pipeline runs`)")).into());
            };
            let _held = RunLock::acquire(&p, "checkout", *wait, args.log.quiet)?;
            let mut cx = Context::new(&p, open_cache());
            let restored = crate::runs::checkout(&mut cx, record);
            cx.hashes.save(false)?;
            let restored = restored?;
            if !args.log.quiet {
                eprintln!("pipeline: checked out run {run}: restored {} ({})", restored.len(), restored.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gc { keep_last, max_size, wait } => {
            let _held = RunLock::acquire(&p, "gc", *wait, args.log.quiet)?;
            let cache = crate::cache::Cache::of(&p);
            let s =
                cache.gc(*keep_last, *max_size).with_context(|| format!("cannot clean {}", cache.dir().display()))?;
            if !args.log.quiet {
                eprintln!(
                    "pipeline gc: kept {} entries ({}), removed {} entries and {} files ({})",
                    s.entries_kept,
                    mib(s.bytes_kept),
                    s.entries_removed,
                    s.objects_removed,
                    mib(s.bytes_removed)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            state::check_sources(&p)?;
            let lock = crate::lock::load(&p.lock_path())?;
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
                    let cached = if s.restore_from_cache { "; restore from cache" } else { "" };
                    let state =
                        if s.up_to_date { "up to date".into() } else { format!("changed: {}{cached}", why.join("; ")) };
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
            let lock = crate::lock::load(&p.lock_path())?;
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
            let lock = crate::lock::load(&p.lock_path()).unwrap_or_default();
            let cx = Context::new(&p, HashCache::in_memory());
            let opts = crate::snakefile::Options { shards: *shards as usize };
            print!("{}", crate::snakefile::render(&p, &dag, &lock, cx.bin_dir.as_deref(), opts));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `ran 2, restored 3 from cache, 4 up to date, ...` (`would run` in a dry run).
fn describe_summary(s: &runner::Summary, dry_run: bool) -> String {
    let (run, restore) = if dry_run { ("would run", "would restore") } else { ("ran", "restored") };
    let mut parts = vec![format!("{run} {}", s.ran.len())];
    if !s.restored.is_empty() {
        parts.push(format!("{restore} {} from cache", s.restored.len()));
    }
    parts.push(format!("{} up to date", s.up_to_date.len()));
    if !s.failed.is_empty() {
        parts.push(format!("{} failed ({})", s.failed.len(), s.failed.join(", ")));
    }
    if !s.not_run.is_empty() {
        parts.push(format!("{} not run ({})", s.not_run.len(), s.not_run.join(", ")));
    }
    parts.join(", ")
}

/// `pipeline sweep`: the grid of `--set NAME=V1,V2` values (the first name varies slowest), each
/// variant a recorded run, all under one hold of the run lock; then the table of its runs.
fn sweep(args: &Args, no_cache: bool, wait: bool, table: &TableArgs) -> anyhow::Result<ExitCode> {
    let base = Pipeline::load_with(&args.file, &Overrides { set: args.params.clone(), values: Vec::new() })?;
    if args.set.is_empty() {
        return Err(usage(&base, "sweep needs at least one `--set NAME=V1,V2,...`").into());
    }
    let mut grid: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (name, values) in &args.set {
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        grid = grid
            .into_iter()
            .flat_map(|v| values.iter().map(move |x| [v.clone(), vec![(name.clone(), x.to_string())]].concat()))
            .collect();
    }
    // Every variant must load before any runs.
    let variants = grid
        .into_iter()
        .map(|values| {
            let p = Pipeline::load_with(&args.file, &Overrides { set: args.params.clone(), values: values.clone() })?;
            let dag = Dag::build(&p)?;
            Ok((values, p, dag))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let say = |line: String| {
        if !args.log.quiet {
            eprintln!("{line}");
        }
    };
    let _held = RunLock::acquire(&base, "sweep", wait, args.log.quiet)?;
    let (n, mut records, mut failed) = (variants.len(), Vec::new(), 0);
    for (i, (values, p, dag)) in variants.iter().enumerate() {
        if runner::stopped_by().is_some() {
            say(format!("pipeline sweep: interrupted after {i} of {n} variants"));
            break;
        }
        let set: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        say(format!("pipeline sweep: variant {} of {n}: {}", i + 1, set.join(" ")));
        let mut lock = crate::lock::load(&p.lock_path())?;
        let recorder = Recorder::start(p, args.params.clone());
        let summary = state::check_sources(p)
            .map_err(anyhow::Error::new)
            .and_then(|()| crate::guard::check_all(p).map_err(anyhow::Error::new))
            .and_then(|()| {
                let opts = RunOptions { jobs: 1, quiet: args.log.quiet, no_cache, ..RunOptions::default() };
                let mut cx = Context::new(p, HashCache::open(&p.dir));
                let summary = runner::run(&mut cx, dag, &mut lock, &opts);
                cx.hashes.save(true)?;
                summary
            });
        let record = recorder.finish(summary.as_ref().ok(), &lock);
        match &summary {
            Ok(s) => say(format!("pipeline sweep: run {}: {}", record.id, describe_summary(s, false))),
            Err(e) => say(format!("pipeline sweep: run {} failed: {e:#}", record.id)),
        }
        failed += usize::from(record.status != RunStatus::Ok);
        records.push(record);
        if runner::stopped_by().is_some() {
            say(format!("pipeline sweep: interrupted during variant {} of {n}", i + 1));
            break;
        }
    }
    table.print(&base, &records)?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
                "restore_from_cache": st.restore_from_cache,
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
