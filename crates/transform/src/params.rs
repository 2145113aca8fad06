//! The ImageDataGenerator parameter set ([`AugmentConfig`]), the per-image random draw
//! ([`TransformParams`], Keras' `get_random_transform`) and its single affine matrix (Keras'
//! `apply_affine_transform` + `transform_matrix_offset_center`, with the flips folded in).
//!
//! Axes follow Keras' matrices, which act on `(row, col)`: `tx` is the shift along rows (drawn
//! from `height_shift_range`), `ty` along columns (`width_shift_range`), `zx` zooms rows and `zy`
//! columns. This is keras-preprocessing 1.1.0 / Keras 2.2-2.4, where the names mean what they
//! say. Later ports (keras-preprocessing 1.1.2, tf.keras, Keras 3's legacy generator) transpose
//! the matrix for channels-last images, so there `height_shift_range` moves the image sideways
//! (reported as keras-team/keras#17398, tf-keras#310) and rotation and shear act mirrored; with
//! symmetric ranges and equal shifts, as in the tutorial, the distribution of square images is
//! the same.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::warp::{Affine, FillMode};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} must be a finite number >= 0, got {value}")]
    Negative { name: &'static str, value: f64 },
    #[error("zoom range [{0}, {1}] is invalid: need 0 < lo <= hi (a single z means [1 - z, 1 + z], so z < 1)")]
    Zoom(f64, f64),
    #[error("cannot parse '{text}' as {what}: {reason}")]
    Parse { text: String, what: &'static str, reason: String },
    #[error("unknown preset '{0}' (expected one of: {names})", names = Preset::NAMES.join(", "))]
    Preset(String),
}

/// Random augmentation settings, named and meant as Keras' `ImageDataGenerator` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Degrees; the angle is uniform in `[-r, r]`. Positive angles turn the content clockwise
    /// on screen.
    pub rotation_range: f64,
    /// Fraction of the width if < 1, else pixels; the shift is uniform in `[-s, s]`.
    pub width_shift_range: f64,
    /// Fraction of the height if < 1, else pixels.
    pub height_shift_range: f64,
    /// Shear angle in DEGREES, uniform in `[-s, s]` (Keras >= 2.2; Keras 1, which the 2016
    /// blog post ran, read radians: its `shear_range=0.2` was about 11.5 degrees).
    pub shear_range: f64,
    /// `[lo, hi]`; `zx` and `zy` are drawn independently. A factor > 1 samples a larger area,
    /// so the content shrinks (zooms out), as in Keras.
    pub zoom_range: [f64; 2],
    /// Flip columns with probability 1/2 (after the affine transform).
    pub horizontal_flip: bool,
    /// Flip rows with probability 1/2.
    pub vertical_flip: bool,
    pub fill_mode: FillMode,
    /// Fill value for [`FillMode::Constant`] (0..255, all channels).
    pub cval: u8,
}

impl Default for AugmentConfig {
    /// No augmentation: every draw is the identity.
    fn default() -> Self {
        AugmentConfig {
            rotation_range: 0.0,
            width_shift_range: 0.0,
            height_shift_range: 0.0,
            shear_range: 0.0,
            zoom_range: [1.0, 1.0],
            horizontal_flip: false,
            vertical_flip: false,
            fill_mode: FillMode::Nearest,
            cval: 0,
        }
    }
}

/// Named settings from the Keras blog post "Building powerful image classification models using
/// very little data".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The post's first generator (and preview): rotation 40, shifts 0.2, shear 0.2, zoom 0.2,
    /// horizontal flip, fill nearest.
    Tutorial,
    /// The fine-tuning script's training generator: shear 0.2, zoom 0.2, horizontal flip.
    Finetune,
}

impl Preset {
    pub const NAMES: &'static [&'static str] = &["tutorial", "finetune"];

    pub fn config(self) -> AugmentConfig {
        let base =
            AugmentConfig { shear_range: 0.2, zoom_range: zoom(0.2), horizontal_flip: true, ..Default::default() };
        match self {
            Preset::Tutorial => {
                AugmentConfig { rotation_range: 40.0, width_shift_range: 0.2, height_shift_range: 0.2, ..base }
            }
            Preset::Finetune => base,
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "tutorial" => Ok(Preset::Tutorial),
            "finetune" => Ok(Preset::Finetune),
            _ => Err(ConfigError::Preset(s.into())),
        }
    }
}

/// Keras' reading of a single zoom number: `[1 - z, 1 + z]`.
pub fn zoom(z: f64) -> [f64; 2] {
    [1.0 - z, 1.0 + z]
}

/// Parses a zoom range: `z` (meaning `[1 - z, 1 + z]`) or `lo,hi`.
pub fn parse_zoom(text: &str) -> Result<[f64; 2], ConfigError> {
    let bad = |reason: &str| ConfigError::Parse { text: text.into(), what: "a zoom range", reason: reason.into() };
    let nums: Vec<f64> = text
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|e| bad(&format!("{e} (expected z or lo,hi)"))))
        .collect::<Result<_, _>>()?;
    match nums[..] {
        [z] => Ok(zoom(z)),
        [lo, hi] => Ok([lo, hi]),
        _ => Err(bad("expected one number or two separated by a comma")),
    }
}

impl AugmentConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("rotation_range", self.rotation_range),
            ("width_shift_range", self.width_shift_range),
            ("height_shift_range", self.height_shift_range),
            ("shear_range", self.shear_range),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Negative { name, value });
            }
        }
        let [lo, hi] = self.zoom_range;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(ConfigError::Zoom(lo, hi));
        }
        Ok(())
    }

    /// Whether every draw is the identity (no geometric change, no flips).
    pub fn is_identity(&self) -> bool {
        *self == AugmentConfig { fill_mode: self.fill_mode, cval: self.cval, ..Default::default() }
    }

    /// Draws one image's parameters, in Keras' order, for an image of `height` x `width`.
    pub fn draw(&self, rng: &mut impl Rng, height: usize, width: usize) -> TransformParams {
        let mut uniform = |lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
        let theta = if self.rotation_range > 0.0 { uniform(-self.rotation_range, self.rotation_range) } else { 0.0 };
        let shift = |range: f64, size: usize, uniform: &mut dyn FnMut(f64, f64) -> f64| {
            if range > 0.0 {
                let s = uniform(-range, range);
                if range < 1.0 { s * size as f64 } else { s }
            } else {
                0.0
            }
        };
        let tx = shift(self.height_shift_range, height, &mut uniform);
        let ty = shift(self.width_shift_range, width, &mut uniform);
        let shear = if self.shear_range > 0.0 { uniform(-self.shear_range, self.shear_range) } else { 0.0 };
        let [lo, hi] = self.zoom_range;
        let (zx, zy) = if lo == 1.0 && hi == 1.0 { (1.0, 1.0) } else { (uniform(lo, hi), uniform(lo, hi)) };
        let flip_horizontal = self.horizontal_flip && rng.random::<f64>() < 0.5;
        let flip_vertical = self.vertical_flip && rng.random::<f64>() < 0.5;
        TransformParams { theta, tx, ty, shear, zx, zy, flip_horizontal, flip_vertical }
    }
}

/// One image's transform, as Keras' `get_random_transform` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TransformParams {
    /// Rotation, degrees.
    pub theta: f64,
    /// Shift along rows, pixels (positive moves the content up).
    pub tx: f64,
    /// Shift along columns, pixels (positive moves the content left).
    pub ty: f64,
    /// Shear, degrees.
    pub shear: f64,
    /// Zoom of rows and columns (> 1 shrinks the content).
    pub zx: f64,
    pub zy: f64,
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
}

impl Default for TransformParams {
    fn default() -> Self {
        TransformParams {
            theta: 0.0,
            tx: 0.0,
            ty: 0.0,
            shear: 0.0,
            zx: 1.0,
            zy: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
        }
    }
}

impl TransformParams {
    pub fn is_identity(&self) -> bool {
        *self == TransformParams::default()
    }

    /// The inverse map (output `(row, col)` -> input `(row, col)`) of an image `height` x
    /// `width`: Keras' `rotation * shift * shear * zoom`, centred on the image, followed by the
    /// flips (which Keras applies to the output; here they are folded into the same matrix, so
    /// the image is resampled once).
    pub fn matrix(&self, height: usize, width: usize) -> Affine {
        let mut m = Affine::IDENTITY;
        if self.theta != 0.0 {
            let (s, c) = self.theta.to_radians().sin_cos();
            m = m.then_before(Affine([[c, -s, 0.0], [s, c, 0.0]]));
        }
        if self.tx != 0.0 || self.ty != 0.0 {
            m = m.then_before(Affine::translation(self.tx, self.ty));
        }
        if self.shear != 0.0 {
            let (s, c) = self.shear.to_radians().sin_cos();
            m = m.then_before(Affine([[1.0, -s, 0.0], [0.0, c, 0.0]]));
        }
        if self.zx != 1.0 || self.zy != 1.0 {
            m = m.then_before(Affine([[self.zx, 0.0, 0.0], [0.0, self.zy, 0.0]]));
        }
        let (or, oc) = (height as f64 / 2.0 - 0.5, width as f64 / 2.0 - 0.5);
        m = Affine::translation(or, oc).then_before(m).then_before(Affine::translation(-or, -oc));
        if self.flip_vertical {
            m = m.then_before(Affine([[-1.0, 0.0, height as f64 - 1.0], [0.0, 1.0, 0.0]]));
        }
        if self.flip_horizontal {
            m = m.then_before(Affine([[1.0, 0.0, 0.0], [0.0, -1.0, width as f64 - 1.0]]));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn presets_hold_the_blog_settings() {
        let t = Preset::Tutorial.config();
        assert_eq!((t.rotation_range, t.width_shift_range, t.height_shift_range), (40.0, 0.2, 0.2));
        assert_eq!((t.shear_range, t.zoom_range, t.horizontal_flip), (0.2, [0.8, 1.2], true));
        assert_eq!(t.fill_mode, FillMode::Nearest);
        let f = Preset::Finetune.config();
        assert_eq!((f.rotation_range, f.width_shift_range, f.shear_range), (0.0, 0.0, 0.2));
        assert!("blog".parse::<Preset>().unwrap_err().to_string().contains("tutorial"));
    }

    #[test]
    fn zoom_parsing_and_validation() {
        assert_eq!(parse_zoom("0.2").unwrap(), [0.8, 1.2]);
        assert_eq!(parse_zoom("0.5, 1.5").unwrap(), [0.5, 1.5]);
        assert!(parse_zoom("a").unwrap_err().to_string().contains("zoom range"));
        assert!(parse_zoom("1,2,3").is_err());
        let bad = AugmentConfig { zoom_range: zoom(1.0), ..Default::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::Zoom(..))));
        let bad = AugmentConfig { rotation_range: -1.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("rotation_range"));
        assert!(Preset::Tutorial.config().validate().is_ok());
    }

    #[test]
    fn draws_stay_in_range_and_fractions_scale_by_size() {
        let cfg = Preset::Tutorial.config();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut flips = 0;
        for _ in 0..2000 {
            let p = cfg.draw(&mut rng, 100, 200);
            assert!(p.theta.abs() <= 40.0 && p.shear.abs() <= 0.2);
            assert!(p.tx.abs() <= 20.0 && p.ty.abs() <= 40.0, "{p:?}");
            assert!((0.8..=1.2).contains(&p.zx) && (0.8..=1.2).contains(&p.zy) && p.zx != p.zy);
            assert!(!p.flip_vertical);
            flips += p.flip_horizontal as u32;
        }
        assert!((850..1150).contains(&flips), "{flips}");
        // Pixels when >= 1.
        let px = AugmentConfig { width_shift_range: 3.0, ..Default::default() };
        assert!((0..100).map(|_| px.draw(&mut rng, 10, 1000).ty.abs()).all(|t| t <= 3.0));
        assert!(AugmentConfig::default().draw(&mut rng, 5, 5).is_identity());
    }

    #[test]
    fn matrix_matches_keras_composition() {
        // Keras: offset * (R * S * Sh * Z) * reset, for a 4 x 6 image (centre (1.5, 2.5)).
        let p = TransformParams { theta: 30.0, tx: 2.0, ty: -1.0, shear: 10.0, zx: 1.1, zy: 0.9, ..Default::default() };
        let m = p.matrix(4, 6);
        let (s, c) = 30f64.to_radians().sin_cos();
        let (ss, sc) = 10f64.to_radians().sin_cos();
        // Map the output centre + (1, 0) by hand: zoom -> (1.1, 0), shear -> (1.1, 0),
        // shift -> (3.1, -1), rotate -> (3.1c + s, 3.1s - c).
        let got = m.apply([2.5, 2.5]);
        let want = [1.5 + 3.1 * c + s, 2.5 + 3.1 * s - c];
        assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12, "{got:?} {want:?}");
        // (0, 1) from the centre: zoom -> (0, 0.9), shear -> (-0.9 ss, 0.9 sc), shift, rotate.
        let (a, b) = (-0.9 * ss + 2.0, 0.9 * sc - 1.0);
        let got = m.apply([1.5, 3.5]);
        let want = [1.5 + a * c - b * s, 2.5 + a * s + b * c];
        assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12, "{got:?} {want:?}");
    }

    #[test]
    fn flips_fold_into_the_matrix() {
        let p = TransformParams { flip_horizontal: true, flip_vertical: true, ..Default::default() };
        assert_eq!(p.matrix(3, 5).apply([0.0, 0.0]), [2.0, 4.0]);
        assert_eq!(p.matrix(3, 5).apply([2.0, 1.0]), [0.0, 3.0]);
    }
}
