//! Crash-safe artifact writing: everything goes to a temporary file in the destination folder
//! and is renamed into place only once complete (make's `.DELETE_ON_ERROR`, done by
//! construction). A crash or kill leaves at most a hidden `.NAME.partial-*` file or folder, never
//! a truncated file under the real name; [`crate::scratch`] removes those on a signal and after a
//! SIGKILL.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::scratch::{self, ScratchDir};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A file being written; becomes visible under its final name on [`AtomicFile::commit`].
/// Dropping it without commit deletes the temporary file.
pub struct AtomicFile {
    path: PathBuf,
    writer: BufWriter<tempfile::NamedTempFile>,
    _scratch: scratch::Tracked,
}

impl AtomicFile {
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile, WriteError> {
        let path = path.as_ref().to_path_buf();
        let dir = scratch::parent_dir(&path);
        let err = |source| WriteError { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = tempfile::Builder::new()
            .prefix(&scratch::prefix(&scratch::file_name(&path), "partial"))
            .tempfile_in(&dir)
            .map_err(err)?;
        let _scratch = scratch::track(tmp.path());
        Ok(AtomicFile { writer: BufWriter::with_capacity(1 << 20, tmp), path, _scratch })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(self) -> Result<(), WriteError> {
        let AtomicFile { path, writer, _scratch } = self;
        let err = |source| WriteError { path: path.clone(), source };
        let tmp = writer.into_inner().map_err(|e| err(e.into_error()))?;
        set_mode(tmp.path(), 0o644).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        scratch::committing(|| tmp.persist(&path)).map_err(|e| err(e.error))?;
        Ok(())
    }

    pub(crate) fn io_error(&self, source: std::io::Error) -> WriteError {
        WriteError { path: self.path.clone(), source }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// A folder of outputs built under a temporary name next to its destination and renamed into
/// place on [`StagingDir::commit`], replacing an older version. Until then readers see either
/// the old folder or none, never a half-filled one; dropping it uncommitted deletes it.
pub struct StagingDir {
    target: PathBuf,
    staged: ScratchDir,
}

impl StagingDir {
    pub fn create(target: impl AsRef<Path>) -> Result<StagingDir, WriteError> {
        let target = target.as_ref().to_path_buf();
        let staged =
            ScratchDir::next_to(&target, "partial").map_err(|source| WriteError { path: target.clone(), source })?;
        Ok(StagingDir { target, staged })
    }

    /// Where to write the files now.
    pub fn path(&self) -> &Path {
        self.staged.path()
    }

    /// The final folder.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Replaces the target folder (or file) with the staged one.
    pub fn commit(self) -> Result<(), WriteError> {
        let StagingDir { target, staged } = self;
        let err = |source| WriteError { path: target.clone(), source };
        set_mode(staged.path(), 0o755).map_err(err)?;
        scratch::committing(|| {
            let staged = staged.keep();
            replace(&staged, &target).map_err(|e| {
                let _ = std::fs::remove_dir_all(&staged);
                err(e)
            })
        })
    }
}

/// Renames `new` over `dest` (a folder, a file or nothing). The old one is moved aside first
/// (under a scratch name, so a crash here still leaves nothing that looks complete) and put
/// back if the rename fails.
fn replace(new: &Path, dest: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dest).is_err() {
        return std::fs::rename(new, dest);
    }
    let mut old = new.as_os_str().to_owned();
    old.push("-old");
    let old = PathBuf::from(old);
    std::fs::rename(dest, &old)?;
    if let Err(e) = std::fs::rename(new, dest) {
        let _ = std::fs::rename(&old, dest);
        return Err(e);
    }
    scratch::remove(&old)
}

/// Temporary files are created private (0600/0700); artifacts are shared like any output
/// (the process umask is not consulted: outputs of a pipeline are meant to be read by others).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| f.io_error(e))?;
    f.commit()
}

/// Writes pretty JSON (with a trailing newline) to `path` atomically.
pub fn write_json(path: impl AsRef<Path>, value: &impl serde::Serialize) -> Result<(), WriteError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| WriteError { path: path.as_ref().to_path_buf(), source: std::io::Error::other(e) })?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

/// Writes lines (each followed by `\n`) to `path` atomically.
pub fn write_lines<S: AsRef<str>>(path: impl AsRef<Path>, lines: &[S]) -> Result<(), WriteError> {
    let mut text = String::new();
    for l in lines {
        text.push_str(l.as_ref());
        text.push('\n');
    }
    write_bytes(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half").unwrap();
            // dropped: as if the stage failed half way
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn staging_dir_replaces_old_folder_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        write_bytes(target.join("old.txt"), b"old").unwrap();
        {
            let s = StagingDir::create(&target).unwrap();
            write_bytes(s.path().join("new.txt"), b"new").unwrap();
            // dropped: failed stage
        }
        assert!(target.join("old.txt").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let s = StagingDir::create(&target).unwrap();
        write_bytes(s.path().join("new.txt"), b"new").unwrap();
        s.commit().unwrap();
        assert!(!target.join("old.txt").exists());
        assert_eq!(std::fs::read(target.join("new.txt")).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn commit_replaces_existing_file_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.json");
        write_json(&path, &serde_json::json!({"x": 1})).unwrap();
        write_json(&path, &serde_json::json!({"x": 2})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"x\": 2\n}\n");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
