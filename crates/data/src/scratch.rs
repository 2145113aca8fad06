//! Scratch space next to outputs: the hidden `.NAME.partial-PID-*` files and folders that become
//! artifacts on commit, and `.NAME.work-PID-*` caches. Each one is removed
//!
//! * by its owner's `Drop`, on success and on error;
//! * by [`interrupt`] on Ctrl-C, SIGTERM or SIGHUP (sd-cli's signal handler calls it), since a
//!   signal's default action ends the process without running destructors, which left a 1.8 GB
//!   feature cache behind a killed `finetune`;
//! * after a SIGKILL, OOM kill or power loss, by the next run that writes the same output
//!   ([`ScratchDir::next_to`]): the owner's pid is in the name, and a pid that no longer runs means the
//!   folder is garbage. A live owner's scratch (a concurrent run) is left alone.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Scratch paths that still exist, and the gate every commit passes.
struct Registry {
    paths: Mutex<Vec<PathBuf>>,
    /// Commits hold it shared; an interrupt takes it exclusively and never gives it back.
    commits: RwLock<()>,
}

/// This process's scratch, for [`interrupt`].
static LIVE: Registry = Registry::new();

/// A hidden folder next to an output (same file system, so it can be renamed into place) for
/// scratch of one kind: removed when dropped and on a signal. Creating one first sweeps what
/// killed runs left for the same output.
pub struct ScratchDir {
    dir: tempfile::TempDir,
    _tracked: Tracked,
}

impl ScratchDir {
    /// `.NAME.KIND-PID-*` beside `target` (`kind`: `partial` for outputs being built, `work` for
    /// caches); creates `target`'s parent folder if needed.
    pub fn next_to(target: &Path, kind: &str) -> std::io::Result<ScratchDir> {
        let parent = parent_dir(target);
        std::fs::create_dir_all(&parent)?;
        let name = file_name(target);
        sweep_stale(&parent, &name);
        let dir = tempfile::Builder::new().prefix(&prefix(&name, kind)).tempdir_in(&parent)?;
        let _tracked = track(dir.path());
        Ok(ScratchDir { dir, _tracked })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Hands the folder over (e.g. to be renamed into place): no longer removed.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// The folder `path` is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The temp-name prefix for scratch of `kind` (`partial`, `work`) belonging to output `name`.
pub(crate) fn prefix(name: &str, kind: &str) -> String {
    format!(".{name}.{kind}-{}-", std::process::id())
}

/// Registers `path` for removal on a signal until the returned guard drops (commit or drop of
/// its owner; the owner removes or renames the path itself).
pub(crate) fn track(path: &Path) -> Tracked {
    LIVE.track(path)
}

/// For signal handlers, before the process dies: waits for a commit in flight, stops every later
/// one (it blocks until the process is gone), then removes every tracked path. Best effort, no
/// panics. Without the gate, a commit racing the removal renamed a staging folder into place
/// while the removal, which works through the folder's handle, went on deleting files in it: a
/// committed `features/train` without its `features.npy` (found by the kill loop).
pub fn interrupt() {
    LIVE.interrupt()
}

/// Runs `commit`, the step that makes scratch an artifact (a rename into place), unless this
/// process is being interrupted: then it never returns (the process dies first).
pub(crate) fn committing<T>(commit: impl FnOnce() -> T) -> T {
    LIVE.committing(commit)
}

impl Registry {
    const fn new() -> Registry {
        Registry { paths: Mutex::new(Vec::new()), commits: RwLock::new(()) }
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // A panic while holding the lock leaves a valid Vec: keep going.
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn committing<T>(&self, commit: impl FnOnce() -> T) -> T {
        let _open = self.commits.read().unwrap_or_else(|e| e.into_inner());
        commit()
    }

    fn interrupt(&self) {
        std::mem::forget(self.commits.write().unwrap_or_else(|e| e.into_inner()));
        self.remove_all()
    }

    fn track(&'static self, path: &Path) -> Tracked {
        self.paths().push(path.to_path_buf());
        Tracked { path: path.to_path_buf(), registry: self }
    }

    /// A stage still writing into a folder may re-create a file in it, hence the retries.
    fn remove_all(&self) {
        let live = self.paths().clone();
        for path in live {
            for _ in 0..3 {
                if remove(&path).is_ok() || !path.exists() {
                    break;
                }
            }
        }
    }
}

/// Unregisters its path when dropped.
pub(crate) struct Tracked {
    path: PathBuf,
    registry: &'static Registry,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut live = self.registry.paths();
        if let Some(i) = live.iter().rposition(|p| *p == self.path) {
            live.swap_remove(i);
        }
    }
}

/// Removes the scratch of output `name` in `dir` (any kind) left by processes that no longer run.
/// Only where process liveness can be checked (`/proc`); elsewhere it does nothing.
fn sweep_stale(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let head = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&head)) else { continue };
        let Some(pid) = owner_pid(rest) else { continue };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        match remove(&path) {
            Ok(()) => tracing::info!(path = %path.display(), pid, "removed scratch left by an interrupted run"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove scratch left by an interrupted run")
            }
        }
    }
}

/// Removes a folder with its content, or a file (a symlink itself, not its target).
pub fn remove(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) }
}

/// Deletes an output (a stale one, before its stage runs again) so that it is never seen half
/// deleted under its own name: a folder is first renamed to this process's scratch beside it,
/// then removed; should the process die during the removal, what is left is scratch, swept by
/// the next run writing that output. A file is removed at once (atomic). NotFound when absent.
pub fn discard(path: &Path) -> std::io::Result<()> {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if !std::fs::symlink_metadata(path)?.is_dir() {
        return std::fs::remove_file(path);
    }
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = parent_dir(path).join(format!("{}discard{n}", prefix(&file_name(path), "partial")));
    std::fs::rename(path, &aside)?;
    let _tracked = track(&aside);
    std::fs::remove_dir_all(&aside)
}

/// `partial-PID-xxxx` or `work-PID-xxxx` -> PID.
fn owner_pid(rest: &str) -> Option<u32> {
    let (kind, tail) = rest.split_once('-')?;
    if kind != "partial" && kind != "work" {
        return None;
    }
    tail.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_paths_are_removed_until_their_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let removed = dir.path().join("removed");
        std::fs::create_dir_all(removed.join("sub")).unwrap();
        std::fs::write(removed.join("sub/f"), b"x").unwrap();
        std::fs::write(&kept, b"x").unwrap();
        // Not this process's registry: other tests' artifacts are being written concurrently.
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let done = registry.track(&kept);
        drop(done);
        let _live = registry.track(&removed);
        registry.remove_all();
        assert!(kept.exists(), "an untracked path was removed");
        assert!(!removed.exists(), "a tracked folder survived");
    }

    #[test]
    fn an_interrupt_waits_for_a_commit_in_flight_and_stops_later_ones() {
        use std::sync::mpsc;
        use std::time::Duration;
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let (started, in_flight) = mpsc::channel();
        let (finish, finished) = mpsc::channel::<()>();
        let first = std::thread::spawn(move || {
            registry.committing(|| {
                started.send(()).unwrap();
                finished.recv().unwrap();
            })
        });
        in_flight.recv().unwrap();
        let (interrupted, interrupt_done) = mpsc::channel();
        std::thread::spawn(move || {
            registry.interrupt();
            interrupted.send(()).unwrap();
        });
        assert!(
            interrupt_done.recv_timeout(Duration::from_millis(200)).is_err(),
            "the interrupt removed scratch while a commit was renaming it"
        );
        finish.send(()).unwrap();
        first.join().unwrap();
        interrupt_done.recv_timeout(Duration::from_secs(10)).expect("the interrupt never ran");
        let (landed, later) = mpsc::channel();
        std::thread::spawn(move || registry.committing(|| landed.send(()).unwrap()));
        assert!(later.recv_timeout(Duration::from_millis(200)).is_err(), "a commit ran after the interrupt");
    }

    #[test]
    fn sweep_removes_only_dead_owners_scratch_of_that_output() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22 on Linux: 999999999 never runs.
        let dead_dir = dir.path().join(".features.work-999999999-abc");
        let dead_file = dir.path().join(".features.partial-999999999-def");
        let ours = dir.path().join(format!("{}xyz", prefix("features", "partial")));
        let other_output = dir.path().join(".labels.partial-999999999-abc");
        let not_scratch = dir.path().join(".features.backup-999999999-abc");
        std::fs::create_dir_all(dead_dir.join("sub")).unwrap();
        for f in [&dead_file, &ours, &other_output, &not_scratch] {
            std::fs::write(f, b"x").unwrap();
        }
        sweep_stale(dir.path(), "features");
        if Path::new("/proc/self").exists() {
            assert!(!dead_dir.exists() && !dead_file.exists(), "a dead run's scratch survived");
        }
        assert!(ours.exists(), "a live run's scratch was removed");
        assert!(other_output.exists(), "another output's scratch was removed");
        assert!(not_scratch.exists(), "a file that is not scratch was removed");
    }

    #[test]
    fn a_discarded_folder_is_gone_from_its_name_before_its_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("augmented");
        std::fs::create_dir_all(out.join("cats")).unwrap();
        std::fs::write(out.join("cats/1.png"), b"x").unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        // Interrupted between the rename and the removal: what is left is swept scratch.
        let aside = dir.path().join(format!("{}discard9", prefix("augmented", "partial")));
        assert_eq!(
            owner_pid(aside.file_name().unwrap().to_str().unwrap().strip_prefix(".augmented.").unwrap()),
            Some(std::process::id())
        );
        discard(&out).unwrap();
        discard(&dir.path().join("file")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left, under any name");
        assert_eq!(discard(&out).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn owner_pid_parses_only_scratch_names() {
        assert_eq!(owner_pid("partial-42-aBc"), Some(42));
        assert_eq!(owner_pid("work-7-x-y"), Some(7));
        assert_eq!(owner_pid("work-x-7"), None);
        assert_eq!(owner_pid("npy"), None);
    }
}
