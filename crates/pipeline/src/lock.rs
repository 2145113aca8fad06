//! `pipeline.lock`: what each stage's last successful run saw and produced (JSON, rewritten
//! atomically after every successful stage). A stage is up to date when its fingerprint now
//! equals the one recorded here. The format has its home in `sd_data::layout::pipeline`, where
//! `report` reads it too.

use std::path::Path;

pub use sd_data::layout::pipeline::{Lock, LockError, Metrics, Program, StageLock};

use crate::spec::{ConfigError, Loc};

/// Reads the lock file (a missing file is an empty lock); a bad one is a configuration error
/// (exit code 2) that says to delete it.
pub fn load(path: &Path) -> Result<Lock, ConfigError> {
    Lock::load(path).map_err(|e| {
        let loc = match &e {
            LockError::Corrupt { line, column, .. } => Some(Loc { line: *line, col: *column }),
            _ => None,
        };
        let msg = e.to_string();
        // The message names the file (and position) already: keep only what follows.
        let prefix = match loc {
            Some(l) => format!("{}:{}:{}: ", path.display(), l.line, l.col),
            None => format!("{}: ", path.display()),
        };
        ConfigError { file: path.to_path_buf(), loc, msg: msg.strip_prefix(&prefix).unwrap_or(&msg).to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_lock_is_a_located_configuration_error() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("pipeline.lock");
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"stages\": [\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
        assert!(
            err.contains(": corrupt lock file: ") && err.ends_with("(delete it to run every stage again)"),
            "{err}"
        );
        assert_eq!(err.matches(&path.display().to_string()).count(), 1, "{err}");
    }
}
