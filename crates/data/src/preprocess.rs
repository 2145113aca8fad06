//! Pixel preprocessing: 8-bit RGB images to the float32 NHWC input a VGG16 conv base expects.
//!
//! * [`Preprocess::Caffe`] (default): what the Keras/Caffe ImageNet weights were trained with.
//!   RGB -> BGR, then subtract the ImageNet channel means (B 103.939, G 116.779, R 123.68) from
//!   0..255 values; no scaling. Same as `keras.applications.vgg16.preprocess_input`.
//! * [`Preprocess::Rescale`]: the original blog post's `rescale=1/255` on RGB. It works, worse,
//!   because the weights never saw inputs in that range.
//! * [`Preprocess::Tf`]: RGB scaled to [-1, 1], `(x - 127.5) / 127.5`: what TensorFlow's
//!   EfficientNet-Lite (and Inception) weights expect; Keras' `preprocess_input` mode "tf".

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::image::{ImageSize, ResizeFilter, ResizeMode};
use crate::loader::{Batch, LoaderConfig};

/// ImageNet channel means in BGR order, on 0..255 pixel values.
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    #[default]
    Caffe,
    Rescale,
    Tf,
}

impl Preprocess {
    pub const NAMES: &'static [&'static str] = &["caffe", "rescale", "tf"];

    /// Maps one RGB pixel (0..255) to the three model input channels.
    #[inline]
    pub fn pixel(self, [r, g, b]: [u8; 3]) -> [f32; 3] {
        match self {
            Preprocess::Caffe => {
                [b as f32 - CAFFE_MEAN_BGR[0], g as f32 - CAFFE_MEAN_BGR[1], r as f32 - CAFFE_MEAN_BGR[2]]
            }
            Preprocess::Rescale => [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0],
            Preprocess::Tf => [(r as f32 - 127.5) / 127.5, (g as f32 - 127.5) / 127.5, (b as f32 - 127.5) / 127.5],
        }
    }

    /// Writes `img` as HWC float32 into `out` (`out.len() == h * w * 3`), row-major.
    pub fn write_hwc(self, img: &RgbImage, out: &mut [f32]) {
        assert_eq!(out.len(), img.as_raw().len(), "output slice must hold h*w*3 floats");
        for (dst, src) in out.chunks_exact_mut(3).zip(img.as_raw().chunks_exact(3)) {
            dst.copy_from_slice(&self.pixel([src[0], src[1], src[2]]));
        }
    }

    /// Same as [`Preprocess::write_hwc`] for interleaved RGB bytes (e.g. augmented images).
    pub fn write_hwc_bytes(self, rgb: &[u8], out: &mut [f32]) {
        assert_eq!(out.len(), rgb.len(), "output slice must hold as many floats as input bytes");
        for (dst, src) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
            dst.copy_from_slice(&self.pixel([src[0], src[1], src[2]]));
        }
    }
}

/// How an image becomes a model input: resized to `size` with `resize_filter` (squashed, or
/// cropped: `resize`), then `preprocess`ed. Training and inference must agree on all four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInput {
    pub size: ImageSize,
    pub resize_filter: ResizeFilter,
    pub preprocess: Preprocess,
    /// Absent in older files: squash.
    #[serde(default)]
    pub resize: ResizeMode,
}

impl ModelInput {
    /// The recipe's: 150x150, anti-aliased bilinear, Caffe preprocessing.
    pub const RECIPE: ModelInput = ModelInput {
        size: ImageSize::square(150),
        resize_filter: ResizeFilter::Bilinear,
        preprocess: Preprocess::Caffe,
        resize: ResizeMode::Squash,
    };

    /// A loader that decodes and resizes images to this input, `batch_size` at a time.
    pub fn loader(&self, batch_size: usize) -> LoaderConfig {
        let mut c = LoaderConfig::new(self.size.width, self.size.height, batch_size);
        c.filter = self.resize_filter;
        c.mode = self.resize;
        c
    }

    /// A batch of decoded images as the float32 NHWC tensor the model takes.
    pub fn tensor(&self, batch: &Batch) -> Array4<f32> {
        let (h, w) = (batch.height as usize, batch.width as usize);
        let mut input = Array4::<f32>::zeros((batch.len(), h, w, 3));
        self.preprocess.write_hwc_bytes(&batch.pixels, input.as_slice_mut().expect("standard layout"));
        input
    }
}

impl FromStr for Preprocess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "caffe" => Ok(Self::Caffe),
            "rescale" => Ok(Self::Rescale),
            "tf" => Ok(Self::Tf),
            _ => Err(format!("unknown preprocessing '{s}' (expected caffe, rescale or tf)")),
        }
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caffe_swaps_to_bgr_and_subtracts_means() {
        let img = RgbImage::from_raw(2, 1, vec![255, 0, 10, 123, 117, 104]).unwrap();
        let mut out = vec![0.0; 6];
        Preprocess::Caffe.write_hwc(&img, &mut out);
        let want = [10.0 - 103.939, 0.0 - 116.779, 255.0 - 123.68, 104.0 - 103.939, 117.0 - 116.779, 123.0 - 123.68];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{out:?}");
        }
    }

    #[test]
    fn rescale_keeps_rgb_and_divides() {
        let img = RgbImage::from_raw(1, 1, vec![255, 51, 0]).unwrap();
        let mut out = vec![0.0; 3];
        Preprocess::Rescale.write_hwc(&img, &mut out);
        assert_eq!(out, [1.0, 0.2, 0.0]);
    }

    #[test]
    fn tf_keeps_rgb_and_scales_to_plus_minus_one() {
        let img = RgbImage::from_raw(1, 1, vec![255, 0, 51]).unwrap();
        let mut out = vec![0.0; 3];
        Preprocess::Tf.write_hwc(&img, &mut out);
        assert_eq!(out, [1.0, -1.0, (51.0 - 127.5) / 127.5]);
        assert_eq!("tf".parse::<Preprocess>().unwrap().to_string(), "tf");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!("caffe".parse::<Preprocess>().unwrap(), Preprocess::Caffe);
        assert_eq!(Preprocess::Rescale.to_string(), "rescale");
        assert!("bgr".parse::<Preprocess>().is_err());
        assert_eq!(serde_json::to_string(&Preprocess::Caffe).unwrap(), "\"caffe\"");
    }
}
