//! `pipeline.lock`: what each stage's last successful run saw and produced (JSON, rewritten
//! atomically after every successful stage). A stage is up to date when its fingerprint now
//! equals the one recorded here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::Digest;
use crate::spec::ConfigError;

pub type Metrics = BTreeMap<String, f64>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    pub stages: BTreeMap<String, StageLock>,
}

/// A stage's fingerprint, plus the metrics its run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLock {
    /// The command as run (params substituted).
    pub cmd: String,
    /// The params the stage lists, with their values.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The program the command starts (its first word), if it is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    /// Deps and outs by path; `None` for a path that does not exist.
    pub deps: BTreeMap<String, Option<Digest>>,
    pub outs: BTreeMap<String, Option<Digest>>,
    /// Numeric values of each metrics file, flattened, as of this run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, Metrics>,
    /// The same, as of the run before (for `pipeline metrics --diff`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous_metrics: BTreeMap<String, Metrics>,
    /// How long its last run took, in seconds (for the report; not part of the fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// The first word of the command.
    pub name: String,
    pub hash: String,
}

const LOCK_VERSION: u32 = 1;

impl Lock {
    /// Reads the lock file; a missing file is an empty lock (nothing has run).
    pub fn load(path: &Path) -> Result<Lock, ConfigError> {
        let bad = |msg: String| ConfigError { file: path.to_path_buf(), loc: None, msg };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(e) => return Err(bad(format!("cannot read the lock file: {e}"))),
        };
        let lock: Lock = serde_json::from_slice(&bytes).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            loc: Some(crate::spec::Loc { line: e.line(), col: e.column() }),
            msg: format!("corrupt lock file: {e} (delete it to run every stage again)"),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(bad(format!(
                "lock file version {} is not {LOCK_VERSION} (delete it to run every stage again)",
                lock.version
            )));
        }
        Ok(lock)
    }

    pub fn save(&mut self, path: &PathBuf) -> Result<(), sd_data::artifact::WriteError> {
        self.version = LOCK_VERSION;
        sd_data::artifact::write_json(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("pipeline.lock");
        assert!(Lock::load(&path).unwrap().stages.is_empty());
        let mut lock = Lock::default();
        let digest = Digest { hash: "ab".into(), size: 3, files: Some(2) };
        lock.stages.insert(
            "s".into(),
            StageLock {
                cmd: "x".into(),
                deps: BTreeMap::from([("d".into(), Some(digest)), ("gone".into(), None)]),
                ..Default::default()
            },
        );
        lock.save(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap().stages, lock.stages);
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"stages\": [\n").unwrap();
        let err = Lock::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
        assert!(err.contains("delete it"), "{err}");
    }
}
