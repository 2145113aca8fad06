//! A prefetching batch loader: decodes, resizes (and optionally transforms) images on the rayon
//! pool ahead of the consumer, through a bounded queue, so that image work overlaps inference or
//! training while memory stays bounded by `prefetch` batches.
//!
//! Batches come out in the order given, every sample exactly once: the last batch is simply
//! smaller (never dropped), and labels travel inside the batch with their images, so they line
//! up by construction.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};
use image::RgbImage;
use rayon::prelude::*;

use crate::dataset::Sample;
use crate::image::{ImageError, ResizeFilter, ResizeMode, load_fitted};

/// Where a sample sits, handed to a [`Transform`] so that it can derive a per-sample random
/// stream that does not depend on thread scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Index into the sample list.
    pub sample: usize,
    /// Position in this pass's order (0.. number of samples).
    pub position: usize,
}

/// A per-image transform applied after decode + resize (e.g. random augmentation).
pub type Transform = Arc<dyn Fn(RgbImage, SampleRef) -> RgbImage + Send + Sync>;

#[derive(Clone)]
pub struct LoaderConfig {
    pub width: u32,
    pub height: u32,
    pub filter: ResizeFilter,
    /// Squash (the default) or crop to the size.
    pub mode: ResizeMode,
    pub batch_size: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    pub transform: Option<Transform>,
    /// Leave images that cannot be read out of their batch (listed in [`Batch::skipped`])
    /// instead of ending the stream with the error.
    pub skip_invalid: bool,
}

impl LoaderConfig {
    pub fn new(width: u32, height: u32, batch_size: usize) -> Self {
        LoaderConfig {
            width,
            height,
            filter: ResizeFilter::default(),
            mode: ResizeMode::default(),
            batch_size,
            prefetch: 4,
            transform: None,
            skip_invalid: false,
        }
    }
}

/// A batch of images, interleaved RGB bytes, `len() * height * width * 3` of them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sample indices, in batch order.
    pub samples: Vec<usize>,
    pub labels: Vec<u32>,
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// With `skip_invalid`: the samples of this batch's slice that could not be read, with why
    /// (the error message, naming the file; in order; the batch may then hold fewer images, or
    /// none).
    pub skipped: Vec<(usize, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The RGB bytes of the `i`-th image.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = (self.width * self.height * 3) as usize;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Iterator over batches; stops after the first error (which names the file).
pub struct Loader {
    rx: Option<Receiver<Result<Batch, ImageError>>>,
    worker: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts loading `samples[order[0]], samples[order[1]], ...` in batches.
    pub fn new(samples: Arc<[Sample]>, order: Vec<usize>, config: LoaderConfig) -> Loader {
        assert!(config.batch_size > 0, "batch size must be positive");
        let (tx, rx) = bounded(config.prefetch.max(1));
        let worker = std::thread::spawn(move || {
            let image_len = (config.width * config.height * 3) as usize;
            for (chunk_index, chunk) in order.chunks(config.batch_size).enumerate() {
                let first = chunk_index * config.batch_size;
                let loaded: Vec<Result<RgbImage, ImageError>> = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        let img =
                            load_fitted(&samples[s].path, config.width, config.height, config.filter, config.mode)?;
                        Ok(match &config.transform {
                            Some(t) => t(img, SampleRef { sample: s, position: first + i }),
                            None => img,
                        })
                    })
                    .collect();
                let (mut kept, mut skipped) = (Vec::with_capacity(chunk.len()), Vec::new());
                let mut error = None;
                for (&s, result) in chunk.iter().zip(loaded) {
                    match result {
                        Ok(img) => kept.push((s, img)),
                        Err(e) if config.skip_invalid => skipped.push((s, e.to_string())),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                let batch = match error {
                    Some(e) => Err(e),
                    None => {
                        let mut pixels = Vec::with_capacity(image_len * kept.len());
                        for (_, img) in &kept {
                            debug_assert_eq!(img.as_raw().len(), image_len, "transform must keep the image size");
                            pixels.extend_from_slice(img.as_raw());
                        }
                        Ok(Batch {
                            labels: kept.iter().map(|&(s, _)| samples[s].label).collect(),
                            samples: kept.into_iter().map(|(s, _)| s).collect(),
                            pixels,
                            width: config.width,
                            height: config.height,
                            skipped,
                        })
                    }
                };
                let failed = batch.is_err();
                // A send error means the consumer hung up: stop early.
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Loader { rx: Some(rx), worker: Some(worker) }
    }

    /// Loads all samples in their stored order.
    pub fn in_order(samples: Arc<[Sample]>, config: LoaderConfig) -> Loader {
        let order = (0..samples.len()).collect();
        Loader::new(samples, order, config)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, ImageError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Hang up first so a blocked producer wakes, then wait for it.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn make_images(dir: &Path, n: usize) -> Arc<[Sample]> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                RgbImage::from_pixel(5 + i as u32, 4, image::Rgb([i as u8, 0, 0])).save(&path).unwrap();
                Sample { path, label: (i % 2) as u32 }
            })
            .collect()
    }

    #[test]
    fn every_sample_once_in_order_last_batch_partial() {
        let dir = tempfile::tempdir().unwrap();
        let samples = make_images(dir.path(), 7);
        let batches: Vec<Batch> = Loader::in_order(samples, LoaderConfig::new(3, 2, 3)).map(Result::unwrap).collect();
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), [3, 3, 1]);
        let all: Vec<usize> = batches.iter().flat_map(|b| b.samples.clone()).collect();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        for b in &batches {
            for (i, &s) in b.samples.iter().enumerate() {
                assert_eq!(b.labels[i], (s % 2) as u32);
                assert_eq!(b.image(i).len(), 3 * 2 * 3);
                assert_eq!(b.image(i)[0], s as u8, "pixels belong to their sample");
            }
        }
    }

    #[test]
    fn custom_order_and_transform_see_positions() {
        let dir = tempfile::tempdir().unwrap();
        let samples = make_images(dir.path(), 4);
        let mut cfg = LoaderConfig::new(2, 2, 3);
        cfg.transform = Some(Arc::new(|mut img: RgbImage, r: SampleRef| {
            img.get_pixel_mut(0, 0).0[1] = r.position as u8;
            img
        }));
        let batches: Vec<Batch> = Loader::new(samples, vec![3, 1, 0, 2], cfg).map(Result::unwrap).collect();
        assert_eq!(batches[0].samples, [3, 1, 0]);
        assert_eq!(batches[1].samples, [2]);
        assert_eq!(batches[0].image(2)[1], 2);
        assert_eq!(batches[1].image(0)[1], 3);
    }

    #[test]
    fn a_corrupt_image_ends_the_stream_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let samples = make_images(dir.path(), 5);
        std::fs::write(&samples[3].path, b"garbage").unwrap();
        let results: Vec<_> = Loader::in_order(samples, LoaderConfig::new(2, 2, 2)).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("3.png"), "{err}");
    }

    #[test]
    fn skip_invalid_keeps_going_and_lists_what_it_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let samples = make_images(dir.path(), 5);
        std::fs::write(&samples[1].path, b"garbage").unwrap();
        std::fs::write(&samples[2].path, b"").unwrap();
        let mut cfg = LoaderConfig::new(2, 2, 2);
        cfg.skip_invalid = true;
        let batches: Vec<Batch> = Loader::in_order(samples, cfg).map(Result::unwrap).collect();
        assert_eq!(batches.iter().map(|b| b.samples.clone()).collect::<Vec<_>>(), [vec![0], vec![3], vec![4]]);
        let skipped: Vec<usize> = batches.iter().flat_map(|b| b.skipped.iter().map(|(s, _)| *s)).collect();
        assert_eq!(skipped, [1, 2]);
        assert!(batches[0].skipped[0].1.contains("1.png"));
        assert_eq!(batches[1].image(0)[0], 3, "pixels still belong to their sample");
    }

    #[test]
    fn dropping_the_loader_early_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let samples = make_images(dir.path(), 20);
        let mut cfg = LoaderConfig::new(2, 2, 1);
        cfg.prefetch = 1;
        let mut loader = Loader::in_order(samples, cfg);
        assert!(loader.next().unwrap().is_ok());
        drop(loader);
    }
}
