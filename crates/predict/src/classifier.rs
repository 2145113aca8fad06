//! A classifier ONNX ready for batches of decoded images: how its input is made (from its
//! metadata, or flags), whether it takes raw uint8 images (preprocessing inside its graph, the
//! default export) or preprocessed float32 ones, its classes, and test-time augmentation.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ndarray::ArrayView4;
use sd_cli::args::InputArgs;
use sd_data::image::ImageSize;
use sd_data::layout::classifier::ClassifierMeta;
use sd_data::loader::{Batch, LoaderConfig};
use sd_data::{Classes, ModelInput};
use sd_runtime::{Element, Model, SessionConfig};
use sd_train::Loss;
use serde::Serialize;

/// Test-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// Each image once.
    #[default]
    None,
    /// The mean of the image's and its left-right mirror's probabilities.
    Flip,
}

pub struct Classifier {
    model: Model,
    pub path: PathBuf,
    pub input: ModelInput,
    /// The classes in label order, when the classifier records them (finetune's do).
    pub classes: Option<Classes>,
    /// Probabilities per image: 1 (of the class labelled 1, for two classes) or one per class;
    /// `None` when the graph leaves it dynamic.
    pub width: Option<usize>,
    pub tta: Tta,
}

impl Classifier {
    /// Loads `path`; `flags` override what the classifier recorded (with a warning or an error
    /// where that cannot work).
    pub fn load(path: &Path, flags: &InputArgs, session: &SessionConfig, tta: Tta) -> Result<Classifier> {
        let model = Model::load(path, session)?;
        let meta =
            ClassifierMeta::from_map(&model.metadata()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let shown = path.display();
        let declared = match model.input_shape[..] {
            [_, h, w, 3] if h > 0 && w > 0 => Some(ImageSize { width: w as u32, height: h as u32 }),
            [_, _, _, 3 | -1] => None,
            ref s => bail!(
                "{shown} takes input of shape {s:?}, not an image batch [N, H, W, 3]; pass the classifier.onnx written by finetune"
            ),
        };
        let width = match model.output_shape[..] {
            [_, w] => (w > 0).then_some(w as usize),
            ref s => bail!(
                "{shown} gives output of shape {s:?}; predict needs probabilities per image, [N, 1] or [N, classes] (the classifier.onnx written by finetune)"
            ),
        };
        let trained = meta.size.or(declared);
        let size = match (flags.resize.size, trained) {
            (Some(asked), Some(t)) if asked != t => {
                bail!("--size {asked} does not fit {shown}, which was built for {t} images; leave --size out")
            }
            (asked, t) => asked.or(t).unwrap_or(ModelInput::RECIPE.size),
        };
        let preprocess = match (flags.preprocess, meta.preprocess) {
            (Some(asked), _) if model.input_element == Element::U8 => {
                bail!("--preprocess {asked} does not apply: {shown} takes uint8 images and preprocesses them inside")
            }
            (Some(asked), Some(t)) if asked != t => {
                tracing::warn!("--preprocess {asked}, but {shown} was trained with {t}: predictions will be off");
                asked
            }
            (asked, t) => asked.or(t).unwrap_or_default(),
        };
        let resize_filter = flags.resize.resize_filter.or(meta.resize_filter).unwrap_or_default();
        let resize = flags.resize.resize.or(meta.resize).unwrap_or_default();
        let classifier = Classifier {
            model,
            path: path.into(),
            input: ModelInput { size, preprocess, resize_filter, resize },
            classes: meta.classes,
            width,
            tta,
        };
        if let Some(classes) = &classifier.classes {
            classifier.check_classes(classes, "its metadata")?;
        }
        Ok(classifier)
    }

    /// Checks that the classifier's output fits `classes` (named by `source`).
    pub fn check_classes(&self, classes: &Classes, source: &str) -> Result<()> {
        let want = Loss::for_classes(classes.len().max(2)).outputs();
        if classes.len() < 2 || self.width.is_some_and(|w| w != want) {
            bail!(
                "{} gives {} probabilities per image, but {source} has {} classes {} (a classifier for them gives {want}): \
                 pass the classifier trained on these classes",
                self.path.display(),
                self.width.map_or("a dynamic number of".into(), |w| w.to_string()),
                classes.len(),
                classes
            );
        }
        Ok(())
    }

    /// How to load images for it.
    pub fn loader(&self, batch_size: usize) -> LoaderConfig {
        self.input.loader(batch_size)
    }

    pub fn device(&self) -> sd_runtime::Device {
        self.model.device
    }

    /// Probabilities of a batch, `[n, width]` row-major (the mean with the mirrored images' under
    /// `Tta::Flip`).
    pub fn probabilities(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = self.run(batch)?;
        if self.tta == Tta::Flip {
            let mirrored = Batch { pixels: mirror(&batch.pixels, batch.width as usize), ..batch.clone() };
            for (p, q) in p.iter_mut().zip(self.run(&mirrored)?) {
                *p = (*p + q) / 2.0;
            }
        }
        Ok(p)
    }

    fn run(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        let out = match self.model.input_element {
            Element::U8 => {
                let (h, w) = (batch.height as usize, batch.width as usize);
                let view = ArrayView4::from_shape((batch.len(), h, w, 3), &batch.pixels).expect("batch of HWC images");
                self.model.run_u8(view.into_dyn())?
            }
            Element::F32 => self.model.run(self.input.tensor(batch).view().into_dyn())?,
        };
        if self.width.is_none() {
            self.width = Some(out.len() / batch.len());
        }
        if out.len() != batch.len() * self.width.expect("set above") {
            bail!("{} returned {} values for a batch of {}", self.path.display(), out.len(), batch.len());
        }
        Ok(out.as_standard_layout().iter().copied().collect())
    }
}

/// Every class's probability from one row of the classifier's output (for two classes the
/// output is the probability of the class labelled 1).
pub fn distribution(row: &[f32]) -> Vec<f32> {
    if let [p] = row { vec![1.0 - p, *p] } else { row.to_vec() }
}

/// The images of a batch (interleaved RGB rows of `width` pixels) mirrored left-right.
fn mirror(pixels: &[u8], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels.len());
    for row in pixels.chunks_exact(width * 3) {
        for px in row.chunks_exact(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_reverses_pixels_within_rows() {
        // Two rows of three pixels.
        let px: Vec<u8> = (0..18).collect();
        assert_eq!(mirror(&px, 3), [6, 7, 8, 3, 4, 5, 0, 1, 2, 15, 16, 17, 12, 13, 14, 9, 10, 11]);
        assert_eq!(mirror(&mirror(&px, 3), 3), px);
    }

    #[test]
    fn two_class_rows_expand_to_both_probabilities() {
        assert_eq!(distribution(&[0.75]), [0.25, 0.75]);
        assert_eq!(distribution(&[0.1, 0.2, 0.7]), [0.1, 0.2, 0.7]);
    }
}
