//! The order training sees its samples in: a seeded permutation per epoch, and epochs of
//! batches on top of [`sd_data::loader`] (each epoch reshuffled and, when asked, transformed,
//! e.g. augmented), keeping the last partial batch and carrying labels.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sd_data::Sample;
use sd_data::loader::{Loader, LoaderConfig, Transform};

/// Part of the key of the shuffling stream, so that it never overlaps another stream keyed by
/// the same seed (sd-augment's per-image transforms use 1).
const SHUFFLE: u64 = 2;

/// The order of `n` samples in `epoch`: a uniform permutation (Fisher-Yates) from a ChaCha8
/// stream keyed by `(seed, epoch)` alone, so any epoch's order can be computed without the ones
/// before it.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut key = [0u8; 32];
    for (chunk, v) in key.chunks_exact_mut(8).zip([seed, SHUFFLE, epoch, 0]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// The image transform of an epoch (e.g. `sd_transform::Augmenter::transform`).
pub type EpochTransform = Arc<dyn Fn(u64) -> Transform + Send + Sync>;

/// Epochs of training batches: each epoch reshuffled (unless `shuffle` is off) and transformed,
/// decoded ahead of the consumer by [`sd_data::loader::Loader`]. Every sample comes exactly
/// once per epoch; the last batch may be smaller.
#[derive(Clone)]
pub struct Epochs {
    samples: Arc<[Sample]>,
    config: LoaderConfig,
    transform: Option<EpochTransform>,
    seed: u64,
    shuffle: bool,
}

impl Epochs {
    /// `config.transform` is replaced by each epoch's `transform` (none when `None`).
    pub fn new(samples: Arc<[Sample]>, config: LoaderConfig, transform: Option<EpochTransform>, seed: u64) -> Epochs {
        Epochs { samples, config, transform, seed, shuffle: true }
    }

    /// Keeps the stored order every epoch (e.g. for evaluation).
    pub fn without_shuffle(mut self) -> Epochs {
        self.shuffle = false;
        self
    }

    /// The batches of `epoch` (0-based).
    pub fn epoch(&self, epoch: u64) -> Loader {
        let mut config = self.config.clone();
        config.transform = self.transform.as_ref().map(|t| t(epoch));
        let order = if self.shuffle {
            epoch_order(self.samples.len(), self.seed, epoch)
        } else {
            (0..self.samples.len()).collect()
        };
        Loader::new(Arc::clone(&self.samples), order, config)
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.samples.len().div_ceil(self.config.batch_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(100, 5, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 5, 0));
        assert_ne!(a, epoch_order(100, 5, 1));
        assert_ne!(a, epoch_order(100, 6, 0));
        assert!(epoch_order(0, 1, 1).is_empty());
    }

    #[test]
    fn epochs_shuffle_transform_and_keep_every_sample_with_its_label() {
        let dir = tempfile::tempdir().unwrap();
        let samples = sd_data::testing::png_samples(dir.path(), 7);
        // Epoch e sets the third channel of every pixel of sample s to 10·e + s.
        let shift: EpochTransform = Arc::new(|epoch| {
            Arc::new(move |mut img: RgbImage, at: sd_data::loader::SampleRef| {
                img.pixels_mut().for_each(|p| p.0[2] = (epoch * 10 + at.sample as u64) as u8);
                img
            })
        });
        let epochs = Epochs::new(samples.clone(), LoaderConfig::new(8, 8, 3), Some(shift), 11);
        assert_eq!(epochs.batches_per_epoch(), 3);
        let collect = |e: u64| {
            let batches: Vec<_> = epochs.epoch(e).map(Result::unwrap).collect();
            assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), [3, 3, 1]);
            batches
        };
        let (e0, e1) = (collect(0), collect(1));
        let order = |bs: &[sd_data::loader::Batch]| bs.iter().flat_map(|b| b.samples.clone()).collect::<Vec<_>>();
        assert_eq!(order(&e0), epoch_order(7, 11, 0));
        assert_ne!(order(&e0), order(&e1));
        for (e, batches) in [(0, &e0), (1, &e1)] {
            for b in batches {
                for (i, &s) in b.samples.iter().enumerate() {
                    assert_eq!(b.labels[i], (s % 2) as u32);
                    let pixel = &b.image(i)[..3];
                    assert_eq!(pixel, [s as u8, 0, (e * 10 + s) as u8], "sample {s} in epoch {e}");
                }
            }
        }
        let plain: Vec<_> = Epochs::new(samples, LoaderConfig::new(8, 8, 4), None, 0)
            .without_shuffle()
            .epoch(3)
            .map(Result::unwrap)
            .flat_map(|b| b.samples)
            .collect();
        assert_eq!(plain, (0..7).collect::<Vec<_>>());
    }
}
