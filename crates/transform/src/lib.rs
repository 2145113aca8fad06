//! Keras `ImageDataGenerator`-style random augmentation in one pass per image.
//!
//! * [`AugmentConfig`]: the generator's parameters (rotation, shifts, shear in degrees, zoom,
//!   flips, fill mode), with [`Preset`]s from the blog post.
//! * [`TransformParams`]: one image's draw; [`TransformParams::matrix`] composes it (flips
//!   included) into one affine matrix centred on the image; [`warp::warp_rgb`] resamples once,
//!   bilinear, with scipy's boundary modes.
//! * [`Augmenter`]: config + seed. Each image's draw comes from its own ChaCha8 stream keyed by
//!   `(seed, round, sample)`, never from a shared generator consumed in thread order, so the
//!   same seed gives the same bytes on any number of threads.
//!
//! Batch order (a seeded permutation per epoch, and epochs of augmented batches) is
//! `sd_train::epochs`'.
//!
//! Rescaling (Keras' `rescale`, applied after the transform) is a pixel preprocessing step:
//! [`sd_data::Preprocess::Rescale`] for model input, or `augment rounds --rescale` for float
//! `.npy` output.

pub mod params;
pub mod warp;

use std::sync::Arc;

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sd_data::loader::{SampleRef, Transform};

pub use params::{AugmentConfig, ConfigError, Preset, TransformParams};
pub use warp::{Affine, FillMode};

/// What a random stream is for; part of its key so that streams never overlap.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Purpose {
    /// (2 is `sd_train::epochs`' shuffling.)
    Transform = 1,
}

/// A ChaCha8 generator keyed by all of its inputs (no state shared between images).
fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, v) in key.chunks_exact_mut(8).zip([seed, purpose as u64, a, b]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A seeded random augmentation.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: AugmentConfig,
    seed: u64,
}

impl Augmenter {
    pub fn new(config: AugmentConfig, seed: u64) -> Result<Augmenter, ConfigError> {
        config.validate()?;
        Ok(Augmenter { config, seed })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parameters of `sample` (an index into the data set) in `round` (an epoch, or a
    /// materialised round): a pure function of `(seed, round, sample, image size)`.
    pub fn params(&self, round: u64, sample: u64, height: usize, width: usize) -> TransformParams {
        self.config.draw(&mut stream(self.seed, Purpose::Transform, round, sample), height, width)
    }

    /// Augments one image.
    pub fn augment(&self, img: &RgbImage, round: u64, sample: u64) -> RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        apply(img, &self.params(round, sample, h, w), self.config.fill_mode, self.config.cval)
    }

    /// A loader [`Transform`] for one epoch: sample `s` gets [`Augmenter::params`]`(epoch, s)`,
    /// whatever its batch or position.
    pub fn transform(self: &Arc<Self>, epoch: u64) -> Transform {
        let me = Arc::clone(self);
        Arc::new(
            move |img: RgbImage, at: SampleRef| {
                if me.config.is_identity() { img } else { me.augment(&img, epoch, at.sample as u64) }
            },
        )
    }
}

/// Applies one transform (identity returns a copy without resampling).
pub fn apply(img: &RgbImage, params: &TransformParams, mode: FillMode, cval: u8) -> RgbImage {
    if params.is_identity() {
        return img.clone();
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0u8; w * h * 3];
    warp::warp_rgb(img.as_raw(), h, w, &params.matrix(h, w), mode, cval, &mut out);
    RgbImage::from_raw(img.width(), img.height(), out).expect("output has the input's size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use sd_data::loader::{Loader, LoaderConfig};

    /// A 3 x 3 image with distinct pixels; value = 10 * (row * 3 + col + 1) on every channel.
    fn grid3() -> RgbImage {
        RgbImage::from_fn(3, 3, |c, r| Rgb([(10 * (r * 3 + c + 1)) as u8; 3]))
    }

    fn values(img: &RgbImage) -> Vec<Vec<u8>> {
        (0..img.height()).map(|r| (0..img.width()).map(|c| img.get_pixel(c, r).0[0]).collect()).collect()
    }

    fn run(img: &RgbImage, p: TransformParams) -> Vec<Vec<u8>> {
        values(&apply(img, &p, FillMode::Constant, 0))
    }

    #[test]
    fn all_zero_parameters_are_the_identity() {
        let img = RgbImage::from_fn(7, 5, |c, r| Rgb([(c * 31 + r) as u8, (r * 50) as u8, (c ^ r) as u8]));
        let aug = Augmenter::new(AugmentConfig::default(), 3).unwrap();
        for s in 0..10 {
            assert_eq!(aug.augment(&img, 0, s), img);
        }
        // The resampling path itself is exact for the identity matrix too.
        let mut out = vec![0; img.as_raw().len()];
        warp::warp_rgb(img.as_raw(), 5, 7, &TransformParams::default().matrix(5, 7), FillMode::Nearest, 0, &mut out);
        assert_eq!(&out, img.as_raw());
    }

    #[test]
    fn horizontal_and_vertical_flips() {
        let p = TransformParams { flip_horizontal: true, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[30, 20, 10], [60, 50, 40], [90, 80, 70]]);
        let p = TransformParams { flip_vertical: true, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[70, 80, 90], [40, 50, 60], [10, 20, 30]]);
    }

    #[test]
    fn rotation_by_90_degrees_turns_clockwise() {
        // Keras' theta = 90 on (row, col): out(r, c) = in(n - 1 - c, r), i.e. np.rot90(x, -1).
        let p = TransformParams { theta: 90.0, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[70, 40, 10], [80, 50, 20], [90, 60, 30]]);
        let p = TransformParams { theta: -90.0, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[30, 60, 90], [20, 50, 80], [10, 40, 70]]);
        // Even size: the centre (1.5, 1.5) is between pixels, still an exact permutation.
        let img = RgbImage::from_fn(4, 4, |c, r| Rgb([(r * 4 + c) as u8; 3]));
        let p = TransformParams { theta: 90.0, ..Default::default() };
        let want: Vec<Vec<u8>> = (0..4).map(|r| (0..4).map(|c| ((3 - c) * 4 + r) as u8).collect()).collect();
        assert_eq!(run(&img, p), want);
    }

    #[test]
    fn whole_pixel_shifts_move_content_up_and_left() {
        // tx = +1 row: out(r, c) = in(r + 1, c); the last row comes from outside (cval 0).
        let p = TransformParams { tx: 1.0, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[40, 50, 60], [70, 80, 90], [0, 0, 0]]);
        // ty = -2 columns: out(r, c) = in(r, c - 2): content moves right by two.
        let p = TransformParams { ty: -2.0, ..Default::default() };
        assert_eq!(run(&grid3(), p), [[0, 0, 10], [0, 0, 40], [0, 0, 70]]);
        // With nearest fill the edge repeats instead.
        let p = TransformParams { tx: 1.0, ..Default::default() };
        assert_eq!(values(&apply(&grid3(), &p, FillMode::Nearest, 0)), [[40, 50, 60], [70, 80, 90], [70, 80, 90]]);
    }

    #[test]
    fn each_fill_mode_at_the_border() {
        // A one-row image shifted right by 2 columns (ty = -2), then 1.5 left.
        let row = RgbImage::from_fn(4, 1, |c, _| Rgb([(10 * (c + 1)) as u8; 3]));
        let at =
            |ty: f64, mode| values(&apply(&row, &TransformParams { ty, ..Default::default() }, mode, 99))[0].clone();
        assert_eq!(at(-2.0, FillMode::Constant), [99, 99, 10, 20]);
        assert_eq!(at(-2.0, FillMode::Nearest), [10, 10, 10, 20]);
        assert_eq!(at(-2.0, FillMode::Reflect), [20, 10, 10, 20]);
        // scipy's wrap has period n - 1 = 3: -2 -> 1, -1 -> 2.
        assert_eq!(at(-2.0, FillMode::Wrap), [20, 30, 10, 20]);
        assert_eq!(at(1.5, FillMode::Constant), [25, 35, 99, 99]);
        assert_eq!(at(1.5, FillMode::Nearest), [25, 35, 40, 40]);
        assert_eq!(at(1.5, FillMode::Reflect), [25, 35, 40, 35]);
        assert_eq!(at(1.5, FillMode::Wrap), [25, 35, 15, 25]);
    }

    #[test]
    fn zoom_above_one_shrinks_the_content() {
        // A 9 x 9 white square (rows and columns 6..=14) centred in 21 x 21 black. Zoom 2 maps
        // output r to input 10 + 2 (r - 10): only |r - 10| <= 2 lands inside the square, so it
        // shrinks to 5 x 5 (Keras: a factor > 1 zooms out).
        let img = RgbImage::from_fn(21, 21, |c, r| {
            Rgb([if (6..15).contains(&c) && (6..15).contains(&r) { 255 } else { 0 }; 3])
        });
        let count = |img: &RgbImage, v: u8| img.pixels().filter(|p| p.0[0] == v).count();
        let zoomed = |zx, zy| apply(&img, &TransformParams { zx, zy, ..Default::default() }, FillMode::Constant, 0);
        assert_eq!(count(&img, 255), 81);
        let out = zoomed(2.0, 2.0);
        assert_eq!((count(&out, 255), count(&out, 0)), (25, 21 * 21 - 25), "{:?}", values(&out));
        assert_eq!(out.get_pixel(10, 10).0, [255; 3], "the centre stays put");
        assert_eq!(out.get_pixel(12, 12).0, [255; 3]);
        assert_eq!(out.get_pixel(13, 10).0, [0; 3]);
        // zx acts on rows only: 5 rows of 9.
        assert_eq!(count(&zoomed(2.0, 1.0), 255), 5 * 9);
        // Zoom < 1 enlarges: 10 + (r - 10) / 2 in [6, 14] for |r - 10| <= 8.
        assert_eq!(count(&zoomed(0.5, 0.5), 255), 17 * 17);
    }

    #[test]
    fn draws_depend_on_seed_round_and_sample_only() {
        let aug = Augmenter::new(Preset::Tutorial.config(), 42).unwrap();
        assert_eq!(aug.params(1, 7, 150, 150), aug.params(1, 7, 150, 150));
        assert_ne!(aug.params(1, 7, 150, 150), aug.params(2, 7, 150, 150));
        assert_ne!(aug.params(1, 7, 150, 150), aug.params(1, 8, 150, 150));
        let other = Augmenter::new(Preset::Tutorial.config(), 43).unwrap();
        assert_ne!(aug.params(1, 7, 150, 150), other.params(1, 7, 150, 150));
    }

    #[test]
    fn same_bytes_on_one_and_two_threads() {
        let img = RgbImage::from_fn(40, 30, |c, r| Rgb([(c * 6) as u8, (r * 8) as u8, ((c + r) * 3) as u8]));
        let aug = Augmenter::new(Preset::Tutorial.config(), 9).unwrap();
        let on = |threads: usize| {
            use rayon::prelude::*;
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| (0..64u64).into_par_iter().map(|s| aug.augment(&img, 3, s).into_raw()).collect::<Vec<_>>())
        };
        let one = on(1);
        assert_eq!(one, on(2));
        assert!(one.iter().any(|o| o != img.as_raw()));
    }

    #[test]
    fn the_loader_transform_augments_each_sample_by_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let samples = sd_data::testing::png_samples(dir.path(), 7);
        let aug = Arc::new(Augmenter::new(Preset::Tutorial.config(), 1).unwrap());
        let mut config = LoaderConfig::new(8, 8, 3);
        config.transform = Some(aug.transform(2));
        let order = vec![4, 0, 6, 1, 5, 3, 2];
        for b in Loader::new(samples.clone(), order, config).map(Result::unwrap) {
            for (i, &s) in b.samples.iter().enumerate() {
                assert_eq!(b.labels[i], (s % 2) as u32);
                let original = image::open(&samples[s].path).unwrap().into_rgb8();
                assert_eq!(b.image(i), aug.augment(&original, 2, s as u64).as_raw().as_slice());
            }
        }
    }
}
