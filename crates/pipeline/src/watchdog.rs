//! A stage must not outlive its `pipeline`. A `kill -9` of `pipeline` runs no handler, and the
//! stage (its own process group: `sh -c CMD` and whatever that started) would go on writing
//! outputs that a new run then races with. Two guards:
//!
//! * the stage's `sh` gets SIGTERM when `pipeline` dies (`PR_SET_PDEATHSIG`). That reaches
//!   only `sh` itself (or the program it execs): the setting does not pass to its children;
//! * a watchdog per stage: `pipeline` itself, started again as `pipeline __watchdog`, outside
//!   the stage's group, reading a pipe that only `pipeline` writes to. When the pipe closes
//!   (the stage's `sh` exited, or `pipeline` died however it died), it sends SIGTERM to the
//!   stage's whole group, then SIGKILL after [`GRACE`] if anything is left. It inherits the run
//!   lock ([`crate::runlock`]), so the folder stays locked until the stage's processes are gone.

use std::io::{BufRead, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long a stage gets to clean up after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

/// The hidden first argument that makes `pipeline` a watchdog. A watchdog is the running
/// executable started again, so a program that runs stages ([`crate::runner::run`]) must hand
/// this argument to [`main`], as [`crate::cli::main`] does.
pub const ARG: &str = "__watchdog";

/// Makes the stage command's `sh` get SIGTERM when this thread's process dies. The stage must
/// be started from a thread that lives as long as the stage (the run loop, in `pipeline`'s main
/// thread): the kernel sends the signal when the thread that forked it exits.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: prctl, getppid and _exit are async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody is left to signal us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            })
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// A started watchdog; it guards a process group once told which.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts a watchdog (before the stage, so that no stage runs unwatched) that holds the
    /// run lock's descriptor `lock_fd` as long as it lives.
    pub fn start(lock_fd: Option<i32>) -> std::io::Result<Watchdog> {
        use std::os::unix::process::CommandExt;
        // /proc/self/exe still runs if the binary was rebuilt (replaced) during the run.
        let exe = if cfg!(target_os = "linux") { "/proc/self/exe".into() } else { std::env::current_exe()? };
        let mut cmd = Command::new(exe);
        cmd.arg(ARG).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        // Not in `pipeline`'s group: a Ctrl-C on the terminal must not end it before its job.
        cmd.process_group(0);
        if let Some(fd) = lock_fd {
            // SAFETY: fcntl on an open descriptor, in the child before exec (async-signal-safe).
            unsafe {
                cmd.pre_exec(move || match libc::fcntl(fd, libc::F_SETFD, 0) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                })
            };
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Tells the watchdog which process group to guard.
    pub fn watch(&mut self, group: u32) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("watch before finish");
        writeln!(stdin, "{group}")?;
        stdin.flush()
    }

    /// The stage's `sh` has exited: stops what it left running in its group and waits until
    /// the group is gone.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `pipeline __watchdog`: reads the group to guard, waits for the end of its input, stops the group.
pub fn main() -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if stdin.read_line(&mut line).unwrap_or(0) == 0 {
        return ExitCode::SUCCESS; // the stage never started
    }
    let Ok(group) = line.trim().parse::<u32>() else {
        eprintln!("error: pipeline {ARG}: expected a process group on stdin, got {line:?}");
        return ExitCode::from(2);
    };
    let _ = std::io::copy(&mut stdin.by_ref(), &mut std::io::sink());
    stop_group(group, GRACE);
    ExitCode::SUCCESS
}

/// SIGTERM to every process of `group`, SIGKILL after `grace` to what is left; returns once
/// none runs (or a second after SIGKILL).
pub fn stop_group(group: u32, grace: Duration) {
    let signal = |sig| {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
        unsafe { libc::kill(-(group as libc::pid_t), sig) };
    };
    if !group_alive(group) {
        return;
    }
    tracing::info!("stopping process group {group}");
    signal(libc::SIGTERM);
    let start = Instant::now();
    let mut killed = false;
    while group_alive(group) {
        let waited = start.elapsed();
        if !killed && waited > grace {
            signal(libc::SIGKILL);
            killed = true;
        } else if waited > grace + Duration::from_secs(1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process of `group` still runs. Zombies do not count: they write nothing, and in a
/// container whose init does not reap them they never go away.
pub fn group_alive(group: u32) -> bool {
    #[cfg(target_os = "linux")]
    if let Ok(dir) = std::fs::read_dir("/proc") {
        return dir
            .flatten()
            .any(|e| proc_stat(&e.file_name().to_string_lossy()).is_some_and(|(_, pgrp)| pgrp == group));
    }
    // SAFETY: kill(2) with signal 0 only checks that the group exists.
    unsafe { libc::kill(-(group as libc::pid_t), 0) == 0 }
}

/// Whether process `pid` runs (exists and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/proc/self/stat").exists() {
        return proc_stat(&pid.to_string()).is_some();
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// State and process group of a live (not zombie) process, from `/proc/PID/stat`.
#[cfg(target_os = "linux")]
fn proc_stat(pid: &str) -> Option<(char, u32)> {
    if !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    (!matches!(state, 'Z' | 'X')).then_some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stopping_a_group_ends_what_its_sh_left_behind_and_ignores_zombies() {
        // A stage whose `sh` has exited but left a process behind in its group.
        let stage = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null & echo $!"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let group = stage.id();
        let out = stage.wait_with_output().unwrap();
        let left: u32 = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
        assert!(process_alive(left) && group_alive(group));
        let start = Instant::now();
        stop_group(group, GRACE);
        assert!(start.elapsed() < GRACE, "SIGTERM was enough");
        // `sleep` was reparented to init: it may stay a zombie, which counts as gone.
        assert!(!group_alive(group) && !process_alive(left));
    }

    #[test]
    fn what_ignores_sigterm_gets_sigkill_after_the_grace_period() {
        let mut stage = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = stage.id();
        std::thread::sleep(Duration::from_millis(100)); // let it install the trap
        let start = Instant::now();
        stop_group(group, Duration::from_millis(300));
        let took = start.elapsed();
        assert!(!group_alive(group), "still running after SIGKILL");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
        stage.wait().unwrap();
    }
}
