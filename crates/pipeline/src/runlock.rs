//! The run lock, `.pipeline/run.lock`: one `pipeline run` at a time per pipeline folder. Two runs
//! at once would both run every out-of-date stage, interleave their writes and record the mixed
//! outputs as up to date.
//!
//! The lock is a `flock` on the file, so the kernel drops it when its holders exit, however they
//! die. The stage watchdogs ([`crate::watchdog`]) inherit it: after a `kill -9` of `pipeline`
//! the folder stays locked until they have stopped the orphaned stages. The file names the
//! holder's pid and its running stages' process groups, for the message a second run prints,
//! and so that a run after one whose watchdogs were killed too can see a stage still running.
//! Read-only commands (`status`, `dag`, `metrics`, exports, `run --dry-run`) do not take it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::spec::{ConfigError, Pipeline};
use crate::watchdog::{group_alive, process_alive};

/// What the lock file says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    /// What holds it: `run`, `sweep`, `checkout`, `gc`.
    #[serde(default = "run")]
    command: String,
    /// Unix time, seconds.
    since: u64,
    /// Running stages by name: their process group.
    #[serde(default)]
    stages: BTreeMap<String, u32>,
}

struct Held {
    file: File,
    holder: Holder,
}

fn run() -> String {
    "run".into()
}

/// The lock this process holds, if any (the stage threads record their stages in it).
fn held() -> MutexGuard<'static, Option<Held>> {
    static HELD: Mutex<Option<Held>> = Mutex::new(None);
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds the run lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _private: (),
}

/// The run lock's path for pipeline `p`.
pub fn path(p: &Pipeline) -> PathBuf {
    p.state_dir().join("run.lock")
}

impl RunLock {
    /// Takes the lock of `p`'s folder for `command` (`run`, `sweep`, ...). When another run
    /// holds it, or a stage of an earlier killed run still runs: an error naming it (exit 2), or
    /// with `wait`, waits for it.
    pub fn acquire(p: &Pipeline, command: &str, wait: bool, quiet: bool) -> Result<RunLock, ConfigError> {
        let path = path(p);
        let busy = |msg: String| ConfigError { file: path.clone(), loc: None, msg };
        let io = |what: &str, e: std::io::Error| busy(format!("cannot {what}: {e} (is the folder writable?)"));
        std::fs::create_dir_all(p.state_dir()).map_err(|e| io("create its folder", e))?;
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open the run lock", e))?;
        let say = |line: String| {
            if !quiet {
                eprintln!("pipeline: {line}");
            }
        };
        if !flock(&file, false).map_err(|e| io("lock it", e))? {
            let who = describe_holder(&read(&path));
            if !wait {
                return Err(busy(format!(
                    "{who} holds this pipeline folder; wait for it to finish, or use `pipeline {command} --wait`"
                )));
            }
            say(format!("waiting for {who}"));
            flock(&file, true).map_err(|e| io("lock it", e))?;
        }
        // Our lock: whatever the file says is from a run that has ended. Its stages should have
        // ended too, unless its watchdogs were killed with it.
        let mut told = false;
        loop {
            let earlier = read(&path);
            let Some((stage, group)) = earlier.stages.iter().find(|&(_, &g)| group_alive(g)) else { break };
            let msg = format!(
                "stage `{stage}` of an earlier `pipeline run` (pid {}) still runs as process group {group}; wait for \
                 it to end, or stop it (see `pgrep -a -g {group}`, then `kill -TERM -- -{group}`)",
                earlier.pid
            );
            if !wait {
                return Err(busy(msg));
            }
            if !std::mem::replace(&mut told, true) {
                say(format!("waiting: {msg}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let holder = Holder { pid: std::process::id(), command: command.into(), since, stages: BTreeMap::new() };
        let mut slot = held();
        *slot = Some(Held { file, holder });
        write(slot.as_ref().expect("just set"));
        Ok(RunLock { _private: () })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // A clean end leaves an empty file; closing it releases the lock (once the watchdogs,
        // which share it, have exited).
        if let Some(h) = held().take() {
            let _ = h.file.set_len(0);
        }
    }
}

/// Records a stage that started, with its process group.
pub fn stage_started(name: &str, group: u32) {
    if let Some(h) = held().as_mut() {
        h.holder.stages.insert(name.to_string(), group);
        write(h);
    }
}

/// Records that a stage and everything it started have exited.
pub fn stage_ended(name: &str) {
    if let Some(h) = held().as_mut() {
        h.holder.stages.remove(name);
        write(h);
    }
}

/// The lock's file descriptor, for processes that must hold the lock as long as they live.
pub fn fd() -> Option<RawFd> {
    held().as_ref().map(|h| h.file.as_raw_fd())
}

fn write(h: &Held) {
    let text = serde_json::to_string(&h.holder).expect("serialisable") + "\n";
    // In place (one write): a rename would put a new, unlocked file at the path.
    if let Err(e) = h.file.set_len(0).and_then(|()| h.file.write_all_at(text.as_bytes(), 0)) {
        tracing::warn!("cannot update the run lock: {e}");
    }
}

/// What the lock file says; empty or unreadable: a default holder (pid 0).
fn read(path: &Path) -> Holder {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn describe_holder(h: &Holder) -> String {
    if h.pid == 0 {
        return "another `pipeline run`".into();
    }
    let groups = || h.stages.iter().map(|(s, g)| format!("`{s}` (process group {g})")).collect::<Vec<_>>().join(", ");
    if !process_alive(h.pid) {
        return if h.stages.is_empty() {
            format!("what `pipeline run` (pid {}, no longer running) started", h.pid)
        } else {
            format!("the stopping of the stages of `pipeline run` pid {}, which was killed: {}", h.pid, groups())
        };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let running = if h.stages.is_empty() { String::new() } else { format!(", running {}", groups()) };
    format!("`pipeline {}` (pid {}, for {} s{running})", h.command, h.pid, now.saturating_sub(h.since))
}

/// `flock(LOCK_EX)`, blocking or not; `Ok(false)`: another holds it.
fn flock(file: &File, block: bool) -> std::io::Result<bool> {
    let op = if block { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    loop {
        // SAFETY: flock(2) on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_stage_left_running_by_a_killed_run_is_noticed() {
        let t = tempfile::tempdir().unwrap();
        let p = Pipeline::parse(&t.path().join("pipeline.yaml"), "stages:\n  a:\n    cmd: x\n").unwrap();
        // A stage of a killed run whose watchdog died with it: its group still runs.
        let mut orphan = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let group = orphan.id();
        let earlier =
            Holder { pid: 999_999_999, command: run(), since: 0, stages: BTreeMap::from([("slow".into(), group)]) };
        std::fs::create_dir_all(p.state_dir()).unwrap();
        std::fs::write(path(&p), serde_json::to_vec(&earlier).unwrap()).unwrap();
        let err = RunLock::acquire(&p, "run", false, true).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                ".pipeline/run.lock: stage `slow` of an earlier `pipeline run` (pid 999999999) still runs as process \
                 group {group}; wait for it to end, or stop it (see `pgrep -a -g {group}`, then `kill -TERM -- \
                 -{group}`)"
            )),
            "{err}"
        );
        orphan.kill().unwrap();
        orphan.wait().unwrap();

        // Gone: the lock is taken and names this process; dropping it empties the file. (`wait`:
        // a process another test forks while the first attempt's file was open shares its lock
        // until that child execs.)
        let lock = RunLock::acquire(&p, "run", true, true).unwrap();
        stage_started("b", 42);
        let now = read(&path(&p));
        assert_eq!((now.pid, now.stages), (std::process::id(), BTreeMap::from([("b".into(), 42)])));
        stage_ended("b");
        assert!(read(&path(&p)).stages.is_empty());
        drop(lock);
        assert_eq!(std::fs::read(path(&p)).unwrap(), b"");
    }

    #[test]
    fn holders_are_described_by_pid_and_stages() {
        let me = std::process::id();
        let h = Holder { pid: me, command: run(), since: 0, stages: BTreeMap::from([("a".into(), 7)]) };
        assert!(describe_holder(&h).starts_with(&format!("`pipeline run` (pid {me}, for ")), "{}", describe_holder(&h));
        assert!(describe_holder(&h).ends_with(" s, running `a` (process group 7))"));
        let dead = Holder { pid: 999_999_999, ..h };
        assert_eq!(
            describe_holder(&dead),
            "the stopping of the stages of `pipeline run` pid 999999999, which was killed: `a` (process group 7)"
        );
        assert_eq!(describe_holder(&Holder::default()), "another `pipeline run`");
    }
}
