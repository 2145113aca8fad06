//! The frozen part's output (`block4_pool`): computed batch by batch through ONNX Runtime, and,
//! where it does not change (validation images; cached augmented rounds), streamed to an `.npy`
//! file once and read back by rows, so memory does not grow with the data set.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ndarray::{Array4, ArrayView2, CowArray, Ix2};
use sd_data::loader::{Batch, Loader, LoaderConfig};
use sd_data::npy::NpyWriter;
use sd_data::{ModelInput, Sample};
use sd_runtime::Model;

/// `frozen_base.onnx` with the preprocessing in front of it.
pub struct Frozen {
    pub model: Model,
    pub input: ModelInput,
    /// Expected per-sample output `[h, w, C]`, checked on every batch.
    pub output: [usize; 3],
}

impl Frozen {
    /// `block4_pool` (NHWC) of a batch of RGB images.
    pub fn run(&mut self, batch: &Batch) -> Result<Array4<f32>> {
        let (h, w) = (batch.height as usize, batch.width as usize);
        let out = self.model.run(self.input.tensor(batch).view().into_dyn())?;
        let want = [batch.len(), self.output[0], self.output[1], self.output[2]];
        if out.shape() != want {
            bail!(
                "{} gave {:?} for a batch of {w}x{h} images, expected {want:?} (the block 5 weights' input channels at this size)",
                self.model.path().display(),
                out.shape()
            );
        }
        Ok(out.into_dimensionality().expect("checked shape"))
    }

    /// `block4_pool` of a few samples, in memory (for calibration).
    pub fn maps(&mut self, samples: Arc<[Sample]>, config: LoaderConfig) -> Result<Array4<f32>> {
        let mut parts = Vec::new();
        for batch in Loader::in_order(samples, config) {
            parts.push(self.run(&batch?)?);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        Ok(ndarray::concatenate(ndarray::Axis(0), &views)?)
    }

    /// Streams `block4_pool` of every sample, in stored order, into `path` (float32
    /// `[n, h, w, C]`). `config.transform` augments (e.g. one cached round).
    pub fn write_all(
        &mut self,
        samples: Arc<[Sample]>,
        config: LoaderConfig,
        path: &Path,
        mut progress: impl FnMut(usize),
    ) -> Result<()> {
        let mut writer = NpyWriter::<f32>::create(path, samples.len(), &self.output)?;
        for batch in Loader::in_order(samples, config) {
            let batch = batch?;
            let features = self.run(&batch)?;
            writer.write_rows(features.as_slice().expect("standard layout"))?;
            progress(batch.len());
        }
        writer.finish()?;
        Ok(())
    }
}

/// A float32 `.npy` of `[n, ...row]`, read by rows without loading it.
pub struct FeatureFile {
    path: PathBuf,
    file: File,
    offset: u64,
    rows: usize,
    row_shape: Vec<usize>,
    row_len: usize,
}

impl FeatureFile {
    pub fn open(path: &Path) -> Result<FeatureFile> {
        let header = sd_data::npy::read_header(path)?;
        if header.descr != "<f4" || header.shape.is_empty() {
            bail!("{}: expected a float32 array [n, ...], found {} {:?}", path.display(), header.descr, header.shape);
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let row_shape = header.shape[1..].to_vec();
        Ok(FeatureFile {
            path: path.into(),
            file,
            offset: header.data_offset,
            rows: header.shape[0],
            row_len: row_shape.iter().product(),
            row_shape,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows `indices`, in that order, as `[indices.len(), h, w, C]`.
    pub fn read(&self, indices: &[usize]) -> Result<Array4<f32>> {
        let [h, w, c] = self.row_shape[..] else {
            bail!("{}: rows of shape {:?}, expected [h, w, C]", self.path.display(), self.row_shape);
        };
        let mut out = Array4::<f32>::zeros((indices.len(), h, w, c));
        let row_bytes = self.row_len * 4;
        let mut bytes = vec![0u8; row_bytes];
        let slice = out.as_slice_mut().expect("standard layout");
        for (dst, &i) in slice.chunks_exact_mut(self.row_len).zip(indices) {
            if i >= self.rows {
                bail!("{}: row {i} of {}", self.path.display(), self.rows);
            }
            self.file
                .read_exact_at(&mut bytes, self.offset + (i * row_bytes) as u64)
                .with_context(|| format!("reading {}", self.path.display()))?;
            for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(out)
    }
}

/// Flattens a batch of NHWC maps to `[n, h·w·C]` in C order (Keras' Flatten on channels-last).
fn flatten(x: &Array4<f32>) -> ArrayView2<'_, f32> {
    let n = x.shape()[0];
    x.view().into_shape_with_order((n, x.len() / n.max(1))).expect("standard layout")
}

/// What the head's first layer reads from a batch of block 5's NHWC maps: the maps flattened, or
/// pooled (`train-head --pool`).
pub fn head_input(pool: sd_train::head::Pool, x: &Array4<f32>) -> CowArray<'_, f32, Ix2> {
    pool.forward(flatten(x), &x.shape()[1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn reads_rows_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let a = Array::from_shape_fn((5, 2, 1, 3), |(i, j, _, k)| (i * 100 + j * 10 + k) as f32);
        sd_data::npy::write(&path, &a).unwrap();
        let f = FeatureFile::open(&path).unwrap();
        assert_eq!(f.rows(), 5);
        let got = f.read(&[3, 0, 3]).unwrap();
        assert_eq!(got.shape(), [3, 2, 1, 3]);
        assert_eq!(got.index_axis(ndarray::Axis(0), 0), a.index_axis(ndarray::Axis(0), 3));
        assert_eq!(got.index_axis(ndarray::Axis(0), 1), a.index_axis(ndarray::Axis(0), 0));
        let e = f.read(&[5]).unwrap_err().to_string();
        assert!(e.contains("f.npy") && e.contains("row 5 of 5"), "{e}");
        assert_eq!(
            flatten(&got).row(1).to_vec(),
            a.index_axis(ndarray::Axis(0), 0).iter().copied().collect::<Vec<_>>()
        );
    }
}
