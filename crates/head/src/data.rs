//! Bottleneck features as the head trains on them: `bottleneck`'s folders
//! (`sd_data::layout::features`), each sample's features flattened in C order, which is exactly
//! Keras' `Flatten` on NHWC.

use std::path::PathBuf;

use ndarray::Array2;
use sd_data::Classes;
use sd_data::layout::LayoutError;
use sd_data::layout::features::{CLASSES, FEATURES, FeatureSet};

use sd_train::head::Pool;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{a} and {b} {reason}; train and validation features must come from the same model and classes")]
    Mismatch { a: PathBuf, b: PathBuf, reason: String },
}

/// One split (train or validation) in memory.
#[derive(Debug, Clone)]
pub struct Split {
    pub dir: PathBuf,
    /// `[N, D]`, each row one sample's features flattened in C order (or pooled, see
    /// [`Split::pooled`]).
    pub features: Array2<f32>,
    /// Per sample shape of the features before flattening or pooling (e.g. `[4, 4, 512]`).
    pub feature_shape: Vec<usize>,
    /// `[N]`, class labels.
    pub labels: Vec<u32>,
    pub classes: Classes,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads and checks a split folder; every error names the offending file.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Split, DataError> {
        let set = FeatureSet::load(dir.into())?;
        if set.classes.len() < 2 {
            return Err(DataError::Invalid {
                path: set.dir.join(CLASSES),
                reason: format!("{}: a classifier needs at least two classes", set.classes),
            });
        }
        let (n, feature_shape) = (set.len(), set.feature_shape().to_vec());
        let d: usize = feature_shape.iter().product();
        let features = set.features.into_shape_with_order((n, d)).map_err(|e| DataError::Invalid {
            path: set.dir.join(FEATURES),
            reason: format!("cannot flatten to [{n}, {d}]: {e}"),
        })?;
        Ok(Split { dir: set.dir, features, feature_shape, labels: set.labels, classes: set.classes })
    }

    /// Joins several splits (e.g. the original images and augmented rounds) into one, after
    /// checking that they share feature shape and classes.
    pub fn concat(parts: Vec<Split>) -> Result<Split, DataError> {
        let mut parts = parts.into_iter();
        let mut all = parts.next().expect("at least one split");
        for part in parts {
            all.check_compatible(&part)?;
            all.features = ndarray::concatenate![ndarray::Axis(0), all.features, part.features];
            all.labels.extend(part.labels);
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
            return Err(mismatch(CLASSES, format!("differ ({} vs {})", self.classes, validation.classes)));
        }
        Ok(())
    }

    /// The rows as the head's first layer reads them (`pool` is applied once here, not every
    /// epoch); `feature_shape` stays the map's, which the exported head takes.
    pub fn pooled(self, pool: Pool) -> Result<Split, DataError> {
        pool.check(&self.feature_shape)
            .map_err(|reason| DataError::Invalid { path: self.dir.join(FEATURES), reason })?;
        if pool.is_flatten() {
            return Ok(self);
        }
        let features = pool.forward(self.features.view(), &self.feature_shape).into_owned();
        Ok(Split { features, ..self })
    }

    /// Samples per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array1, array};
    use sd_data::layout::features::LABELS;
    use std::path::Path;

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
        assert_eq!(s.labels, [0, 1, 0]);
        assert_eq!(s.class_counts(), [2, 1]);
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
        sd_data::npy::write(dir.path().join(LABELS), &array![0i64, 0, 0]).unwrap();
        std::fs::write(dir.path().join(CLASSES), r#"{"a": 0}"#).unwrap();
        let e = err(dir.path());
        assert!(e.contains("classes.json") && e.contains("at least two classes"), "{e}");
        std::fs::write(dir.path().join(CLASSES), r#"{"a": 0, "b": 2}"#).unwrap();
        let e = err(dir.path());
        assert!(e.contains("classes.json") && e.contains("each used once"), "{e}");

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
