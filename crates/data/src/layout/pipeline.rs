//! `pipeline`'s files that other programs read: `pipeline.lock` (what each stage's last
//! successful run saw and produced) and the numbers of the stages' metrics files, flattened.
//! `sd-pipeline` writes them; it and `report` read them. The runs it records are in [`super::runs`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LayoutError;

/// The folder next to the pipeline file that holds `pipeline`'s own state (run lock, hash cache,
/// run cache, runs).
pub const STATE_DIR: &str = ".pipeline";

/// The lock file that goes with a pipeline file: `pipeline.yaml` -> `pipeline.lock`.
pub fn lock_path(pipeline_file: &Path) -> PathBuf {
    pipeline_file.with_extension("lock")
}

/// The numeric values of a metrics file, flattened: `{"val": {"acc": 0.9}}` gives `val.acc`,
/// array items get their index (`curve.0`); booleans count as 0/1, strings are skipped.
pub type Metrics = BTreeMap<String, f64>;

/// The content of a file or folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub hash: String,
    /// Bytes (a folder: of all its files).
    pub size: u64,
    /// Number of files, for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
}

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
    /// How long computing its outs took, in seconds (for the report; not part of the fingerprint).
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

/// Why a lock file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: cannot read the lock file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: corrupt lock file: {msg} (delete it to run every stage again)", path.display())]
    Corrupt { path: PathBuf, line: usize, column: usize, msg: String },
    #[error("{}: lock file version {found} is not {LOCK_VERSION} (delete it to run every stage again)", path.display())]
    Version { path: PathBuf, found: u32 },
}

impl Lock {
    /// Reads the lock file; a missing file is an empty lock (nothing has run).
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(source) => return Err(LockError::Read { path: path.into(), source }),
        };
        let lock: Lock = serde_json::from_slice(&bytes).map_err(|e| LockError::Corrupt {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            msg: e.to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version { path: path.into(), found: lock.version });
        }
        Ok(lock)
    }

    /// The metrics a stage's last run recorded, its files' values together.
    pub fn stage_metrics(&self, stage: &str) -> Metrics {
        self.stages
            .get(stage)
            .into_iter()
            .flat_map(|l| l.metrics.values())
            .flatten()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Writes the lock file atomically.
    pub fn save(&mut self, path: &Path) -> Result<(), crate::artifact::WriteError> {
        self.version = LOCK_VERSION;
        crate::artifact::write_json(path, self)
    }
}

/// The flattened numeric values of a metrics file.
pub fn read_metrics(path: &Path) -> Result<Metrics, LayoutError> {
    let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Read { path: path.into(), source })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| LayoutError::Invalid { path: path.into(), reason: format!("not valid JSON: {e}") })?;
    let mut out = Metrics::new();
    flatten(&value, String::new(), &mut out);
    Ok(out)
}

fn flatten(value: &Value, key: String, out: &mut Metrics) {
    let join = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
    match value {
        Value::Number(n) => {
            out.insert(key, n.as_f64().unwrap_or(f64::NAN));
        }
        Value::Bool(b) => {
            out.insert(key, f64::from(u8::from(*b)));
        }
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(v, join(k), out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| flatten(v, join(&i.to_string()), out)),
        Value::String(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips_and_reports_corruption() {
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

    #[test]
    fn metrics_flatten_numbers_and_booleans() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("m.json");
        std::fs::write(&f, r#"{"acc": 0.5, "val": {"loss": 2, "ok": true, "name": "x"}, "curve": [1, 2.5]}"#).unwrap();
        let m = read_metrics(&f).unwrap();
        let got: Vec<(&str, f64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("acc", 0.5), ("curve.0", 1.0), ("curve.1", 2.5), ("val.loss", 2.0), ("val.ok", 1.0)]);
        std::fs::write(&f, "{").unwrap();
        assert!(read_metrics(&f).unwrap_err().to_string().contains("not valid JSON"));
    }
}
