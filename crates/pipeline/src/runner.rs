//! `pipeline run`: brings the selected stages up to date, in dependency order, up to `jobs` at a
//! time. A stage is checked only once everything it depends on has finished, so a stage whose
//! upstream re-ran but produced identical outputs is skipped.
//!
//! Each stage runs as `sh -c CMD` in the pipeline's folder, with the `pipeline` executable's
//! folder first on `PATH`. Its outs are deleted before it starts and again if it fails, so stale
//! or half-written outputs never survive; the lock gets the stage's new fingerprint only after
//! it succeeded and wrote every out.
//!
//! An out-of-date stage whose signature is in the run cache ([`crate::cache`]) gets its outs back
//! from there instead of running (unless forced or `no_cache`); every stage that succeeds, and
//! every up-to-date stage not yet there, is stored in it.
//!
//! Each stage runs in a process group of its own, and a Ctrl-C, SIGTERM or SIGHUP sent to
//! `pipeline` is handed on to every running stage's group ([`stop_stages`]): the stages clean
//! their scratch and stop, and `pipeline` dies of the signal once they have exited, instead of
//! leaving them running on their own. A watchdog per stage ([`crate::watchdog`]) stops the
//! group when `pipeline` dies without a handler (`kill -9`), and whatever a finished stage left
//! running in it.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use sd_data::layout::runs::{StageRun, StageState};

use crate::cache::{self, Cache};
use crate::dag::Dag;
use crate::lock::{Lock, StageLock};
use crate::spec::{ConfigError, Stage};
use crate::state::{Context, Expect, Reason, compare, foresee};
use crate::watchdog::Watchdog;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stages to bring up to date (with what they depend on); empty: all.
    pub targets: Vec<String>,
    /// Run the targets (all stages if none) even when up to date.
    pub force: bool,
    /// Also run what depends on the targets.
    pub downstream: bool,
    /// Only say what would run and why.
    pub dry_run: bool,
    /// After a failure, go on with the stages that do not depend on it.
    pub keep_going: bool,
    /// Stages run at the same time (at least 1).
    pub jobs: usize,
    /// No progress lines.
    pub quiet: bool,
    /// Run out-of-date stages even when the run cache has their outs.
    pub no_cache: bool,
}

/// What happened to each selected stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Ran successfully (in a dry run: would run).
    pub ran: Vec<String>,
    /// Outs restored from the run cache (in a dry run: would be).
    pub restored: Vec<String>,
    pub up_to_date: Vec<String>,
    pub failed: Vec<String>,
    /// Not run because an upstream stage failed, or because the run stopped at a failure.
    pub not_run: Vec<String>,
    /// Every selected stage, in run order (for the run's record).
    pub stages: Vec<StageRun>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Ran,
    Restored,
    UpToDate,
    Failed,
    NotRun,
}

/// Runs the pipeline; writes the lock after each successful stage. Errors are for problems of
/// the pipeline itself (a bad target, an unreadable file); failed stages are in the summary.
pub fn run(cx: &mut Context, dag: &Dag, lock: &mut Lock, opts: &RunOptions) -> anyhow::Result<Summary> {
    let p = cx.pipeline;
    let n = p.stages.len();
    let mut targets = BTreeSet::new();
    for name in &opts.targets {
        let s = p.stage_index(name).ok_or_else(|| ConfigError {
            file: p.file.clone(),
            loc: None,
            msg: format!(
                "no stage named `{name}` (stages: {})",
                p.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        targets.insert(s);
    }
    if targets.is_empty() {
        targets = (0..n).collect();
    }
    if opts.downstream {
        targets = dag.with_downstream(targets);
    }
    let selected = dag.with_upstream(targets.iter().copied());
    let forced = if opts.force { targets } else { BTreeSet::new() };

    let say = |line: String| {
        if !opts.quiet {
            eprintln!("{line}");
        }
    };
    let prefix_output = opts.jobs > 1;
    let mut state: Vec<State> =
        (0..n).map(|s| if selected.contains(&s) { State::Waiting } else { State::UpToDate }).collect();
    let mut before: Vec<Option<StageLock>> = vec![None; n];
    let mut signatures: Vec<Option<String>> = vec![None; n];
    let mut seconds: Vec<Option<f64>> = vec![None; n];
    // What a dry run expects of each stage, for the stages after it.
    let mut expect = vec![Expect::Unchanged; n];
    let store = Cache::of(p);
    let (tx, rx) = mpsc::channel::<(usize, io::Result<ExitStatus>, Duration)>();
    let (mut running, mut stop) = (0, false);
    loop {
        // Start (or settle) every stage whose upstream is done, in order, until none can move.
        let mut moved = true;
        while moved {
            moved = false;
            for &s in &dag.order {
                if state[s] != State::Waiting {
                    continue;
                }
                let ups = || dag.upstream[s].iter().map(|&u| state[u]);
                if ups().any(|u| matches!(u, State::Failed | State::NotRun)) {
                    say(format!("not running {}: an upstream stage failed", p.stages[s].name));
                    (state[s], moved) = (State::NotRun, true);
                    continue;
                }
                if stop || running >= opts.jobs.max(1) || ups().any(|u| matches!(u, State::Waiting | State::Running)) {
                    continue;
                }
                moved = true;
                let stage = &p.stages[s];
                let mut now = cx.fingerprint(stage)?;
                // A dry run's upstream stages did not really run: their outs still hold the old
                // content, but for what they would restore from the cache.
                let unknown = if opts.dry_run { foresee(p, dag, s, &mut now, &expect) } else { Vec::new() };
                let mut reasons = compare(stage, &now, lock.stages.get(&stage.name));
                if forced.contains(&s) {
                    reasons.insert(0, Reason::Forced);
                }
                for &u in &unknown {
                    reasons.push(Reason::Upstream { stage: p.stages[u].name.clone() });
                }
                signatures[s] = cache::signature(stage, &now).filter(|_| unknown.is_empty());
                if reasons.is_empty() {
                    tracing::info!("{} is up to date", stage.name);
                    state[s] = State::UpToDate;
                    if let (false, Some(sig), Some(entry)) =
                        (opts.dry_run, &signatures[s], lock.stages.get(&stage.name))
                        && !store.has(sig)
                    {
                        // Up to date from before the cache (or a run with no_cache): stored now,
                        // so that the cache has every state a run has seen.
                        if let Err(e) = store.store(p, &mut cx.hashes, stage, sig, entry) {
                            tracing::warn!("cannot store {} in the run cache: {e:#}", stage.name);
                        }
                    }
                    continue;
                }
                let why = reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                let cached = match &signatures[s] {
                    Some(sig) if !opts.no_cache && !forced.contains(&s) => store.load(sig, &mut cx.hashes, &stage.name),
                    _ => None,
                };
                if opts.dry_run {
                    if let Some(entry) = cached {
                        println!("would restore {} from cache: {why}", stage.name);
                        (state[s], expect[s]) = (State::Restored, Expect::Restore(Box::new(entry)));
                    } else {
                        println!("would run {}: {why}", stage.name);
                        (state[s], expect[s]) = (State::Ran, Expect::Run);
                    }
                    continue;
                }
                if let Some(entry) = cached {
                    say(format!("restoring {} from cache: {why}", stage.name));
                    let start = Instant::now();
                    let restored = crate::guard::check(p, stage)
                        .map_err(anyhow::Error::new)
                        .and_then(|()| remove_outs(cx, stage).map_err(anyhow::Error::new))
                        .and_then(|()| store.restore(p, &mut cx.hashes, &entry))
                        .and_then(|()| record(cx, lock, stage, now, entry.lock.seconds).map(drop));
                    let took = start.elapsed().as_secs_f64();
                    seconds[s] = Some(took);
                    match restored {
                        Ok(()) => {
                            say(format!("restored {} from cache ({took:.1}s)", stage.name));
                            state[s] = State::Restored;
                        }
                        Err(e) => {
                            let _ = remove_outs(cx, stage);
                            say(format!("FAILED {}: cannot restore it from the run cache: {e:#}", stage.name));
                            state[s] = State::Failed;
                            stop |= !opts.keep_going;
                        }
                    }
                    continue;
                }
                say(format!("running {}: {why}", stage.name));
                tracing::debug!("{}: sh -c {:?}", stage.name, stage.cmd);
                // Checked again here: an earlier stage may have made a symlink on the way.
                let started = crate::guard::check(p, stage)
                    .map_err(io::Error::other)
                    .and_then(|()| remove_outs(cx, stage))
                    .and_then(|()| spawn(cx, s, prefix_output, tx.clone()));
                match started {
                    Ok(()) => {
                        (state[s], before[s]) = (State::Running, Some(now));
                        running += 1;
                    }
                    Err(e) => {
                        say(format!("FAILED {}: cannot start: {e}", stage.name));
                        state[s] = State::Failed;
                        stop |= !opts.keep_going;
                    }
                }
            }
        }
        if running == 0 {
            break;
        }
        let (s, status, took) = rx.recv().expect("a running stage reports back");
        running -= 1;
        let stage = &p.stages[s];
        seconds[s] = Some(took.as_secs_f64());
        let result = match status {
            Ok(st) if st.success() => {
                record(cx, lock, stage, before[s].take().expect("fingerprint"), Some(took.as_secs_f64()))
            }
            Ok(st) => Err(anyhow::anyhow!("{}", describe(st))),
            Err(e) => Err(anyhow::anyhow!("cannot wait for it: {e}")),
        };
        match result {
            Ok(entry) => {
                if let Some(sig) = &signatures[s]
                    && let Err(e) = store.store(p, &mut cx.hashes, stage, sig, &entry)
                {
                    tracing::warn!("cannot store {} in the run cache: {e:#}", stage.name);
                }
                say(format!("done {} ({:.1}s)", stage.name, took.as_secs_f64()));
                state[s] = State::Ran;
            }
            Err(e) => {
                let _ = remove_outs(cx, stage);
                say(format!("FAILED {} ({:.1}s): {e:#}", stage.name, took.as_secs_f64()));
                state[s] = State::Failed;
                stop |= !opts.keep_going;
            }
        }
    }

    let mut summary = Summary::default();
    for &s in dag.order.iter().filter(|s| selected.contains(s)) {
        let name = p.stages[s].name.clone();
        let list = match state[s] {
            State::Ran => &mut summary.ran,
            State::Restored => &mut summary.restored,
            State::UpToDate => &mut summary.up_to_date,
            State::Failed => &mut summary.failed,
            State::NotRun | State::Waiting | State::Running => &mut summary.not_run,
        };
        list.push(name.clone());
        let state = match state[s] {
            State::Ran => StageState::Ran,
            State::Restored => StageState::Restored,
            State::UpToDate => StageState::UpToDate,
            State::Failed => StageState::Failed,
            State::NotRun | State::Waiting | State::Running => StageState::NotRun,
        };
        let done = matches!(state, StageState::Ran | StageState::Restored | StageState::UpToDate);
        let signature = signatures[s].take().filter(|_| done);
        summary.stages.push(StageRun { stage: name, state, seconds: seconds[s], signature });
    }
    Ok(summary)
}

/// Records a successful run (or restore) in the lock (written at once): the deps as they were
/// when it started, the outs as they are now, the metrics they hold, and how long computing them
/// took. Returns the stage's new entry.
fn record(
    cx: &mut Context,
    lock: &mut Lock,
    stage: &Stage,
    before: StageLock,
    seconds: Option<f64>,
) -> anyhow::Result<StageLock> {
    for out in stage.written() {
        cx.hashes.forget(&cx.pipeline.resolve(&out.path));
    }
    let after = cx.fingerprint(stage)?;
    if let Some((path, _)) = after.outs.iter().find(|(_, d)| d.is_none()) {
        anyhow::bail!("it did not write its out {path}");
    }
    let mut metrics = std::collections::BTreeMap::new();
    for m in &stage.metrics {
        let path = cx.pipeline.resolve(&m.path);
        metrics.insert(m.path.to_string_lossy().into_owned(), crate::metrics::read(&path)?);
    }
    let previous_metrics = lock.stages.get(&stage.name).map(|old| old.metrics.clone()).unwrap_or_default();
    let entry = StageLock { outs: after.outs, metrics, previous_metrics, seconds, ..before };
    // Merge into the lock as it is on disk now, so that another `pipeline run` of other stages
    // of the same pipeline (e.g. one per shard, from a scheduler) does not lose its entries.
    let path = cx.pipeline.lock_path();
    if let Ok(on_disk) = crate::lock::load(&path) {
        *lock = on_disk;
    }
    lock.stages.insert(stage.name.clone(), entry.clone());
    lock.save(&path).with_context(|| format!("cannot write the lock file {}", path.display()))?;
    Ok(entry)
}

fn remove_outs(cx: &mut Context, stage: &Stage) -> io::Result<()> {
    for out in stage.written() {
        let path = cx.pipeline.resolve(&out.path);
        cx.hashes.forget(&path);
        // Renamed aside first: a run killed while deleting a large folder must not leave part
        // of it under its name (found by benches/reliability/kill-loop.sh).
        match sd_data::scratch::discard(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::new(e.kind(), format!("cannot remove {}: {e}", path.display())));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Starts `sh -c CMD`; a thread reports its exit on `done`. With `prefix`, every output line
/// is prefixed by the stage name (stages run in parallel).
fn spawn(
    cx: &Context,
    s: usize,
    prefix: bool,
    done: mpsc::Sender<(usize, io::Result<ExitStatus>, Duration)>,
) -> io::Result<()> {
    let stage = &cx.pipeline.stages[s];
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&stage.cmd).current_dir(&cx.pipeline.dir).env("PATH", cx.path_env()).stdin(Stdio::null());
    if prefix {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::watchdog::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut running = running_stages();
    if running.stopped_by.is_some() {
        return Err(io::Error::other("pipeline is being interrupted"));
    }
    let mut dog = Watchdog::start(crate::runlock::fd())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start its watchdog: {e}")))?;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            dog.finish();
            return Err(e);
        }
    };
    let pid = child.id();
    crate::runlock::stage_started(&stage.name, pid);
    if let Err(e) = dog.watch(pid) {
        tracing::warn!(
            "{}: the watchdog is gone ({e}): if pipeline is killed, the stage may go on running",
            stage.name
        );
    }
    running.pids.push(pid);
    drop(running);
    let (tag, name) = (format!("[{}] ", stage.name), stage.name.clone());
    std::thread::spawn(move || {
        let err = child.stderr.take().map(|e| {
            let tag = tag.clone();
            std::thread::spawn(move || copy_lines(e, &mut io::stderr(), &tag))
        });
        if let Some(out) = child.stdout.take() {
            copy_lines(out, &mut io::stdout(), &tag);
        }
        if let Some(t) = err {
            let _ = t.join();
        }
        let status = child.wait();
        // Done when nothing of the stage runs any more, not just its `sh`.
        dog.finish();
        crate::runlock::stage_ended(&name);
        running_stages().pids.retain(|&p| p != pid);
        let _ = done.send((s, status, start.elapsed()));
    });
    Ok(())
}

/// The stages running now, by process id (= process group id); once stopped by a signal, no
/// new ones.
struct Running {
    pids: Vec<u32>,
    stopped_by: Option<i32>,
}

fn running_stages() -> std::sync::MutexGuard<'static, Running> {
    static RUNNING: std::sync::Mutex<Running> = std::sync::Mutex::new(Running { pids: Vec::new(), stopped_by: None });
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The signal that stopped the run, if one did: `pipeline` then dies of it too, after its summary.
pub fn stopped_by() -> Option<i32> {
    running_stages().stopped_by
}

/// For `sd_cli::handle_signals`: starts no more stages, sends `signal` to every running stage's
/// process group (`sh` and the stage binary it started) and waits up to 30 s for them to exit.
pub fn stop_stages(signal: i32) {
    let mut running = running_stages();
    running.stopped_by = Some(signal);
    #[cfg(unix)]
    for &pid in &running.pids {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
        unsafe { libc::kill(-(pid as libc::pid_t), signal) };
    }
    #[cfg(not(unix))]
    let _ = signal;
    drop(running);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running_stages().pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn copy_lines(from: impl Read, to: &mut impl Write, tag: &str) {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    while from.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let mut buf = tag.as_bytes().to_vec();
        buf.extend_from_slice(&line);
        let _ = to.write_all(&buf);
        line.clear();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}
