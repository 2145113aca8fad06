//! `bottleneck`'s output folder, what `train-head` reads (one per split, several for augmented
//! rounds):
//!
//! | file | contents |
//! |---|---|
//! | `features.npy` | float32 `[N, h, w, C]`, NHWC like Keras (`[N, 4, 4, 512]` at 150x150) |
//! | `labels.npy` | int64 `[N]`, class labels |
//! | `files.txt` | the image paths relative to the data folder, one per line, same order |
//! | `classes.json` | [`Classes`]: `{"cats": 0, "dogs": 1}` |
//! | `bottleneck.json` | [`FeatureMeta`]: how they were made |
//!
//! `augment rounds --format npy` writes `labels.npy`, `files.txt` and `classes.json` beside its
//! `images.npy` the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use super::{Classes, LayoutError, read_json};
use crate::Preprocess;
use crate::artifact::AtomicFile;
use crate::image::{ImageSize, ResizeFilter};
use crate::npy::NpyWriter;

pub const FEATURES: &str = "features.npy";
pub const LABELS: &str = "labels.npy";
pub const FILES: &str = "files.txt";
pub const CLASSES: &str = "classes.json";
pub const META: &str = "bottleneck.json";

/// `bottleneck.json`: the parameters that determine the features. Deterministic (no timings),
/// so that the same inputs give byte-identical outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub data: String,
    pub model: String,
    pub size: ImageSize,
    pub resize_filter: ResizeFilter,
    pub preprocess: Preprocess,
    pub batch_size: usize,
    pub classes: Vec<String>,
    /// Images in this output.
    pub count: usize,
    pub feature_shape: Vec<usize>,
    /// Present for one shard of a larger run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: usize,
    pub count: usize,
    /// Sample range of the whole data set that this shard holds.
    pub start: usize,
    pub end: usize,
    pub total: usize,
}

/// Reads `bottleneck.json` from a features folder.
pub fn read_meta(dir: &Path) -> Result<FeatureMeta, LayoutError> {
    read_json(&dir.join(META), &format!("is {} a bottleneck output?", dir.display()))
}

/// Reads `classes.json` from a labelled folder.
pub fn read_classes(dir: &Path) -> Result<Classes, LayoutError> {
    read_json(&dir.join(CLASSES), "expected the class map bottleneck writes, like {\"cats\": 0, \"dogs\": 1}")
}

/// Writes `classes.json` into `dir`.
pub fn write_classes(dir: &Path, classes: &Classes) -> Result<(), LayoutError> {
    Ok(crate::artifact::write_json(dir.join(CLASSES), classes)?)
}

/// Streams a features folder's rows (features, labels, file names) to disk; each file appears
/// only when complete and with exactly the declared number of rows.
pub struct FeatureWriter {
    dir: PathBuf,
    count: usize,
    features: Option<NpyWriter<f32>>,
    labels: NpyWriter<i64>,
    files: AtomicFile,
}

impl FeatureWriter {
    /// Starts a folder of `count` rows in `dir` (a staging folder).
    pub fn create(dir: &Path, count: usize) -> Result<FeatureWriter, LayoutError> {
        Ok(FeatureWriter {
            dir: dir.to_path_buf(),
            count,
            features: None,
            labels: NpyWriter::create(dir.join(LABELS), count, &[])?,
            files: AtomicFile::create(dir.join(FILES))?,
        })
    }

    /// Fixes the per-sample feature shape (known once the model has run); a no-op afterwards.
    pub fn set_shape(&mut self, feature_shape: &[usize]) -> Result<(), LayoutError> {
        if self.features.is_none() {
            self.features = Some(NpyWriter::create(self.dir.join(FEATURES), self.count, feature_shape)?);
        }
        Ok(())
    }

    /// Appends rows: their features (flat, C order), labels and file names.
    pub fn write(&mut self, features: &[f32], labels: &[u32], files: &[&str]) -> Result<(), LayoutError> {
        self.write_features(features)?;
        self.write_index(labels, files)
    }

    /// Appends features alone (whole rows); their labels and names follow with
    /// [`FeatureWriter::write_index`] (for copying large files piece by piece).
    pub fn write_features(&mut self, features: &[f32]) -> Result<(), LayoutError> {
        Ok(self.features.as_mut().expect("set_shape before write").write_rows(features)?)
    }

    /// Appends labels and file names.
    pub fn write_index(&mut self, labels: &[u32], files: &[&str]) -> Result<(), LayoutError> {
        assert_eq!(labels.len(), files.len(), "one label and one file name per row");
        self.labels.write_rows(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>())?;
        for f in files {
            writeln!(self.files, "{f}").map_err(|e| self.files.io_error(e))?;
        }
        Ok(())
    }

    /// Checks the row counts and writes `classes.json` and `bottleneck.json`.
    pub fn finish(self, classes: &Classes, meta: &FeatureMeta) -> Result<(), LayoutError> {
        self.features.expect("set_shape before finish").finish()?;
        self.labels.finish()?;
        self.files.commit()?;
        write_classes(&self.dir, classes)?;
        Ok(crate::artifact::write_json(self.dir.join(META), meta)?)
    }
}

/// A features folder read whole: what the head trains on.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub dir: PathBuf,
    /// `[N, ...]`, e.g. `[N, 4, 4, 512]`.
    pub features: ArrayD<f32>,
    /// `[N]`, each in `0..classes.len()`.
    pub labels: Vec<u32>,
    pub classes: Classes,
}

impl FeatureSet {
    /// Reads and checks a features folder; every error names the offending file.
    pub fn load(dir: impl AsRef<Path>) -> Result<FeatureSet, LayoutError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(LayoutError::Invalid {
                path: dir,
                reason: format!(
                    "not a folder; pass the output folder of `bottleneck` (with {FEATURES}, {LABELS}, {CLASSES})"
                ),
            });
        }
        let invalid = |file: &str, reason: String| LayoutError::Invalid { path: dir.join(file), reason };
        let features = crate::npy::read::<f32>(dir.join(FEATURES))?;
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
        let labels = crate::npy::read::<i64>(dir.join(LABELS))?;
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
        let classes = read_classes(&dir)?;
        let k = classes.len() as i64;
        if let Some((i, v)) = labels.iter().enumerate().find(|&(_, &v)| !(0..k).contains(&v)) {
            return Err(invalid(
                LABELS,
                format!("label {v} at index {i}, but {CLASSES} names {k} classes (labels 0..{})", k - 1),
            ));
        }
        let labels = labels.iter().map(|&v| v as u32).collect();
        Ok(FeatureSet { dir, features, labels, classes })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Per-sample feature shape, e.g. `[4, 4, 512]`.
    pub fn feature_shape(&self) -> &[usize] {
        &self.features.shape()[1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(count: usize) -> FeatureMeta {
        FeatureMeta {
            data: "d".into(),
            model: "m".into(),
            size: ImageSize::square(32),
            resize_filter: ResizeFilter::Bilinear,
            preprocess: Preprocess::Caffe,
            batch_size: 2,
            classes: vec!["a".into(), "b".into(), "c".into()],
            count,
            feature_shape: vec![2],
            shard: None,
        }
    }

    #[test]
    fn written_rows_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let classes = Classes::new(vec!["a".into(), "b".into(), "c".into()]);
        let mut w = FeatureWriter::create(dir.path(), 3).unwrap();
        w.set_shape(&[2]).unwrap();
        w.write(&[0.0, 1.0, 2.0, 3.0], &[2, 0], &["c/x.png", "a/y.png"]).unwrap();
        w.write(&[4.0, 5.0], &[1], &["b/z.png"]).unwrap();
        w.finish(&classes, &meta(3)).unwrap();
        let set = FeatureSet::load(dir.path()).unwrap();
        assert_eq!((set.feature_shape(), set.labels.as_slice()), (&[2][..], &[2, 0, 1][..]));
        assert_eq!(set.classes, classes);
        assert_eq!(std::fs::read_to_string(dir.path().join(FILES)).unwrap(), "c/x.png\na/y.png\nb/z.png\n");
        assert_eq!(read_meta(dir.path()).unwrap(), meta(3));
    }

    #[test]
    fn a_short_folder_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = FeatureWriter::create(dir.path(), 2).unwrap();
        w.set_shape(&[1]).unwrap();
        w.write(&[1.0], &[0], &["a"]).unwrap();
        assert!(w.finish(&Classes::new(vec!["a".into(), "b".into()]), &meta(2)).is_err());
        assert!(!dir.path().join(FEATURES).exists());
    }

    #[test]
    fn labels_out_of_range_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        crate::npy::write(dir.path().join(FEATURES), &ndarray::Array2::<f32>::zeros((2, 3))).unwrap();
        crate::npy::write(dir.path().join(LABELS), &ndarray::array![0i64, 3]).unwrap();
        std::fs::write(dir.path().join(CLASSES), r#"{"a": 0, "b": 1}"#).unwrap();
        let e = FeatureSet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("labels.npy") && e.contains("label 3") && e.contains("2 classes"), "{e}");
        std::fs::remove_file(dir.path().join(CLASSES)).unwrap();
        let e = FeatureSet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("classes.json") && e.contains("missing"), "{e}");
    }
}
