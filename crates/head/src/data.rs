//! Bottleneck features on disk, as `bottleneck` writes them: a folder with `features.npy`
//! (float32 `[N, ...]`, e.g. `[N, 4, 4, 512]` NHWC), `labels.npy` (int64 `[N]`, 0 or 1) and
//! `classes.json` (`{"cats": 0, "dogs": 1}`).
//!
//! Features are flattened per sample in C order, which is exactly Keras' `Flatten` on NHWC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};

pub const FEATURES: &str = "features.npy";
pub const LABELS: &str = "labels.npy";
pub const CLASSES: &str = "classes.json";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0} is not a folder; pass the output folder of `bottleneck` (with {FEATURES}, {LABELS}, {CLASSES})")]
    NotAFolder(PathBuf),
    #[error(transparent)]
    Npy(#[from] sd_data::npy::NpyError),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{a} and {b} {reason}; train and validation features must come from the same model and classes")]
    Mismatch { a: PathBuf, b: PathBuf, reason: String },
}

/// One split (train or validation) in memory.
#[derive(Debug, Clone)]
pub struct Split {
    pub dir: PathBuf,
    /// `[N, D]`, each row one sample's features flattened in C order.
    pub features: Array2<f32>,
    /// Per sample shape of the features before flattening (e.g. `[4, 4, 512]`).
    pub feature_shape: Vec<usize>,
    /// `[N]`, 0.0 or 1.0.
    pub labels: Array1<f32>,
    /// Class name to label.
    pub classes: BTreeMap<String, i64>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads and checks a split folder; every error names the offending file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Split, DataError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(DataError::NotAFolder(dir));
        }
        let invalid = |file: &str, reason: String| DataError::Invalid { path: dir.join(file), reason };

        let features = sd_data::npy::read::<f32>(dir.join(FEATURES))?;
        if features.ndim() < 2 || features.shape()[0] == 0 {
            return Err(invalid(
                FEATURES,
                format!("shape {:?}: expected [N, ...] with N > 0 samples, e.g. [N, 4, 4, 512]", features.shape()),
            ));
        }
        if let Some((i, v)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(invalid(FEATURES, format!("value {v} at flat index {i} is not finite")));
        }
        let n = features.shape()[0];
        let feature_shape = features.shape()[1..].to_vec();
        let d: usize = feature_shape.iter().product();
        let features = features
            .into_shape_with_order((n, d))
            .map_err(|e| invalid(FEATURES, format!("cannot flatten to [{n}, {d}]: {e}")))?;

        let labels = sd_data::npy::read::<i64>(dir.join(LABELS))?;
        if labels.ndim() != 1 || labels.len() != n {
            return Err(invalid(
                LABELS,
                format!(
                    "shape {:?}, but {} holds {n} samples; expected [{n}]",
                    labels.shape(),
                    dir.join(FEATURES).display()
                ),
            ));
        }
        if let Some((i, v)) = labels.iter().enumerate().find(|(_, v)| !matches!(v, 0 | 1)) {
            return Err(invalid(
                LABELS,
                format!("label {v} at index {i}; the head is a binary classifier (labels 0 or 1)"),
            ));
        }
        let labels = labels.iter().map(|&v| v as f32).collect::<Array1<f32>>();

        let classes_path = dir.join(CLASSES);
        let text = std::fs::read_to_string(&classes_path).map_err(|e| invalid(CLASSES, format!("cannot read: {e}")))?;
        let classes: BTreeMap<String, i64> = serde_json::from_str(&text).map_err(|e| {
            invalid(CLASSES, format!("expected a class-name to label map like {{\"cats\":0,\"dogs\":1}}: {e}"))
        })?;
        let mut values: Vec<i64> = classes.values().copied().collect();
        values.sort();
        if values != [0, 1] {
            return Err(invalid(
                CLASSES,
                format!("{classes:?}: a binary head needs exactly two classes labelled 0 and 1"),
            ));
        }

        Ok(Split { dir, features, feature_shape, labels, classes })
    }

    /// Joins several splits (e.g. the original images and augmented rounds) into one, after
    /// checking that they share feature shape and classes.
    pub fn concat(parts: Vec<Split>) -> Result<Split, DataError> {
        let mut parts = parts.into_iter();
        let mut all = parts.next().expect("at least one split");
        for part in parts {
            all.check_compatible(&part)?;
            all.features = ndarray::concatenate![ndarray::Axis(0), all.features, part.features];
            all.labels = ndarray::concatenate![ndarray::Axis(0), all.labels, part.labels];
        }
        Ok(all)
    }

    /// Checks that `validation` can be evaluated by a head trained on `self`.
    pub fn check_compatible(&self, validation: &Split) -> Result<(), DataError> {
        let mismatch = |file: &str, reason: String| DataError::Mismatch {
            a: self.dir.join(file),
            b: validation.dir.join(file),
            reason,
        };
        if self.feature_shape != validation.feature_shape {
            return Err(mismatch(
                FEATURES,
                format!("have per-sample shapes {:?} and {:?}", self.feature_shape, validation.feature_shape),
            ));
        }
        if self.classes != validation.classes {
            return Err(mismatch(CLASSES, format!("differ ({:?} vs {:?})", self.classes, validation.classes)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, array};

    fn write_split(dir: &Path, n: usize, shape: &[usize]) {
        let mut full = vec![n];
        full.extend_from_slice(shape);
        let features = Array::from_shape_fn(full, |i| i[0] as f32 + 0.5);
        sd_data::npy::write(dir.join(FEATURES), &features).unwrap();
        sd_data::npy::write(dir.join(LABELS), &Array1::from_shape_fn(n, |i| (i % 2) as i64)).unwrap();
        std::fs::write(dir.join(CLASSES), r#"{"cats": 0, "dogs": 1}"#).unwrap();
    }

    #[test]
    fn loads_and_flattens_in_c_order() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3, &[2, 2, 3]);
        let s = Split::load(dir.path()).unwrap();
        assert_eq!(s.features.dim(), (3, 12));
        assert_eq!(s.feature_shape, [2, 2, 3]);
        assert_eq!(s.labels, array![0.0, 1.0, 0.0]);
        assert!(s.features.row(2).iter().all(|&v| v == 2.5));
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3, &[2]);
        let err = |d: &Path| Split::load(d).unwrap_err().to_string();

        sd_data::npy::write(dir.path().join(LABELS), &array![0i64, 1]).unwrap();
        let e = err(dir.path());
        assert!(e.contains("labels.npy") && e.contains("3 samples"), "{e}");

        sd_data::npy::write(dir.path().join(LABELS), &array![0i64, 2, 1]).unwrap();
        let e = err(dir.path());
        assert!(e.contains("labels.npy") && e.contains("label 2"), "{e}");

        sd_data::npy::write(dir.path().join(LABELS), &array![0.0f32, 1.0, 1.0]).unwrap();
        let e = err(dir.path());
        assert!(e.contains("labels.npy") && e.contains("<i8"), "{e}");

        write_split(dir.path(), 3, &[2]);
        std::fs::write(dir.path().join(CLASSES), r#"{"a": 0, "b": 1, "c": 2}"#).unwrap();
        let e = err(dir.path());
        assert!(e.contains("classes.json") && e.contains("two classes"), "{e}");

        std::fs::remove_file(dir.path().join(FEATURES)).unwrap();
        let e = err(dir.path());
        assert!(e.contains("features.npy"), "{e}");

        let e = err(&dir.path().join("nope"));
        assert!(e.contains("nope") && e.contains("not a folder"), "{e}");
    }

    #[test]
    fn mismatched_splits_are_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_split(a.path(), 4, &[2, 3]);
        write_split(b.path(), 2, &[3, 2]);
        let (sa, sb) = (Split::load(a.path()).unwrap(), Split::load(b.path()).unwrap());
        let e = sa.check_compatible(&sb).unwrap_err().to_string();
        assert!(e.contains("features.npy") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        write_split(b.path(), 2, &[2, 3]);
        std::fs::write(b.path().join(CLASSES), r#"{"dogs": 0, "cats": 1}"#).unwrap();
        let e = sa.check_compatible(&Split::load(b.path()).unwrap()).unwrap_err().to_string();
        assert!(e.contains("classes.json"), "{e}");
    }
}
