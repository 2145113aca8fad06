//! Image decoding to 8-bit RGB and resizing.
//!
//! Decoding guesses the format from the file's bytes, not its extension. Every colour type
//! becomes RGB the way PIL's `convert("RGB")` (which Keras uses) does it: grey is replicated,
//! alpha is dropped (not composited), 16-bit channels are scaled to 8 bits, CMYK JPEGs are
//! converted by the decoder.
//!
//! Resizing squashes to the exact target size, as Keras' `target_size` does, unless told to
//! crop ([`ResizeMode::Crop`]: keep the aspect ratio, cut out the centre). The default filter is [`ResizeFilter::Bilinear`]: a convolution with a
//! triangle kernel whose support widens with the scale factor (PIL's `BILINEAR` on
//! `Image.resize`), which anti-aliases when shrinking. Keras' own default is `nearest`, which
//! aliases badly on 500-pixel photos shrunk to 150; it is available for exact tutorial parity.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fast_image_resize as fr;
use image::RgbImage;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot decode image {path}: {reason}; the file is corrupt or not an image: replace or remove it")]
    Decode { path: PathBuf, reason: String },
    #[error("image {path} is empty (0 pixels); replace or remove it")]
    Empty { path: PathBuf },
    #[error(
        "image {path} is {width}x{height} pixels ({pixels} in all), over the limit of {limit} pixels that keeps a small file from taking gigabytes of memory when decoded: resize it (e.g. `convert IMAGE -resize 4096x4096\\> IMAGE`), or raise the limit with the environment variable {MAX_PIXELS_VAR}={pixels}",
        pixels = *width as u64 * *height as u64
    )]
    TooLarge { path: PathBuf, width: u32, height: u32, limit: u64 },
    #[error("{MAX_PIXELS_VAR}={0:?} is not a number of pixels; set it to a whole number such as {DEFAULT_MAX_PIXELS}")]
    BadLimit(String),
    #[error("resizing failed: {0}")]
    Resize(String),
}

/// A target image size, parsed from `150` (square) or `WxH` such as `224x160`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

impl ImageSize {
    pub const fn square(side: u32) -> Self {
        ImageSize { width: side, height: side }
    }
}

impl FromStr for ImageSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |v: &str| v.trim().parse::<u32>().ok().filter(|&v| v >= 32);
        let size = match s.split_once(['x', 'X']) {
            Some((w, h)) => parse(w).zip(parse(h)).map(|(width, height)| ImageSize { width, height }),
            None => parse(s).map(ImageSize::square),
        };
        size.ok_or_else(|| {
            format!("bad image size '{s}': expected N or WxH with sides of at least 32 pixels, e.g. 150 or 224x160")
        })
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Resampling filter for [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// Nearest neighbour (Keras' default; aliases when shrinking).
    Nearest,
    /// Anti-aliased bilinear (PIL `BILINEAR`); the default.
    #[default]
    Bilinear,
    /// Anti-aliased bicubic (PIL `BICUBIC`).
    Bicubic,
    /// Anti-aliased Lanczos-3 (PIL `LANCZOS`).
    Lanczos3,
}

impl ResizeFilter {
    pub const NAMES: &'static [&'static str] = &["nearest", "bilinear", "bicubic", "lanczos3"];
}

impl FromStr for ResizeFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            "lanczos3" => Ok(Self::Lanczos3),
            _ => Err(format!("unknown resize filter '{s}' (expected one of: {})", Self::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for ResizeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = *self as usize;
        f.write_str(Self::NAMES[i])
    }
}

/// The most pixels (width x height) an image may have to be decoded, unless
/// [`MAX_PIXELS_VAR`] says otherwise: PIL's default decompression-bomb limit (a 40000x40000 PNG
/// of one colour is 1.5 MB on disk and 4.8 GB decoded).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// The environment variable that sets the pixel limit (a whole number of pixels).
pub const MAX_PIXELS_VAR: &str = "SMALLDATA_MAX_IMAGE_PIXELS";

/// The pixel limit in force: [`MAX_PIXELS_VAR`] if set, else [`DEFAULT_MAX_PIXELS`].
pub fn max_pixels() -> Result<u64, ImageError> {
    match std::env::var(MAX_PIXELS_VAR) {
        Ok(v) => v.trim().parse().map_err(|_| ImageError::BadLimit(v)),
        Err(_) => Ok(DEFAULT_MAX_PIXELS),
    }
}

/// Decodes an image file to 8-bit RGB; an image over [`max_pixels`] is refused from its header,
/// before its pixels take any memory.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageError> {
    load_rgb_limited(path, max_pixels()?)
}

/// [`load_rgb`] with an explicit pixel limit.
pub fn load_rgb_limited(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.into(), source })?;
    decode_rgb(&bytes, max_pixels).map_err(|reason| match reason {
        DecodeFailure::Empty => ImageError::Empty { path: path.into() },
        DecodeFailure::TooLarge { width, height } => {
            ImageError::TooLarge { path: path.into(), width, height, limit: max_pixels }
        }
        DecodeFailure::Other(reason) => ImageError::Decode { path: path.into(), reason },
    })
}

enum DecodeFailure {
    Empty,
    TooLarge { width: u32, height: u32 },
    Other(String),
}

fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeFailure> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeFailure::Other(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeFailure::Other("unrecognised file format".into()));
    }
    // The JPEG decoder fills what is missing with grey (as browsers do) instead of failing, so
    // a photo cut short would pass as a different picture: check that the data is all there.
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        jpeg_is_complete(bytes).map_err(DecodeFailure::Other)?;
    }
    // The size comes from the header; the pixel limit is checked before decoding, and the
    // decoder's own allocations are held to what that many pixels of the widest type take.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| DecodeFailure::Other(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeFailure::TooLarge { width, height });
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
    decoder.set_limits(limits).map_err(|e| DecodeFailure::Other(e.to_string()))?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => DecodeFailure::TooLarge { width, height },
        e => DecodeFailure::Other(e.to_string()),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(DecodeFailure::Empty);
    }
    Ok(img.into_rgb8())
}

/// Walks a JPEG's segments (skipping each by its length, so an embedded EXIF thumbnail's
/// markers do not count) and its entropy-coded scans up to the end-of-image marker: an error when
/// the data ends before it. What libjpeg calls "premature end of JPEG file", which makes PIL
/// refuse the image. Bytes after the end marker are ignored, as every decoder does. Linear in
/// the file's size, a small fraction of decoding it.
fn jpeg_is_complete(b: &[u8]) -> Result<(), String> {
    let truncated = || Err("the JPEG data ends before its end-of-image marker: the file is truncated".to_string());
    let mut i = 2; // after SOI (the format guess saw it)
    loop {
        // Bytes between segments are tolerated (libjpeg warns and skips them); so are fill bytes.
        match b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) {
            Some(p) => i += p,
            None => return truncated(),
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else { return truncated() };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length: TEM, restarts, and a stray stuffed zero.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
            return truncated();
        };
        i += len;
        if len < 2 || i > b.len() {
            return truncated();
        }
        if marker == 0xDA {
            // Entropy-coded data follows start-of-scan up to the next marker other than a
            // stuffed 0xFF00 or a restart marker.
            loop {
                match b.get(i..).and_then(|rest| rest.iter().position(|&x| x == 0xFF)) {
                    Some(p) => i += p,
                    None => return truncated(),
                }
                match b.get(i + 1) {
                    None => return truncated(),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

/// How an image's shape becomes the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Squash to the exact size, the aspect ratio not kept (Keras' `target_size`; the recipe's).
    #[default]
    Squash,
    /// Keep the aspect ratio: scale so that the target covers [`CROP_FRACTION`] of the shorter
    /// side and cut out the centre (ImageNet evaluation: shorter side to 256, centre 224x224;
    /// what EfficientNet-Lite was measured with).
    Crop,
}

/// The share of the shorter side that [`ResizeMode::Crop`] keeps (224 of 256).
pub const CROP_FRACTION: f64 = 0.875;

impl ResizeMode {
    pub const NAMES: &'static [&'static str] = &["squash", "crop"];
}

impl FromStr for ResizeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "squash" => Ok(Self::Squash),
            "crop" => Ok(Self::Crop),
            _ => Err(format!("unknown resize mode '{s}' (expected squash or crop)")),
        }
    }
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

/// Resizes to exactly `width` x `height` (aspect ratio not kept). Returns the input unchanged
/// when it already has that size.
pub fn resize(img: RgbImage, width: u32, height: u32, filter: ResizeFilter) -> Result<RgbImage, ImageError> {
    fit(img, width, height, filter, ResizeMode::Squash)
}

/// Resizes to exactly `width` x `height` the way `mode` says.
pub fn fit(
    img: RgbImage,
    width: u32,
    height: u32,
    filter: ResizeFilter,
    mode: ResizeMode,
) -> Result<RgbImage, ImageError> {
    if img.dimensions() == (width, height) && mode == ResizeMode::Squash {
        return Ok(img);
    }
    let (w, h) = img.dimensions();
    let options = match mode {
        ResizeMode::Squash => fr::ResizeOptions::new(),
        ResizeMode::Crop => {
            // The source region that scales onto the target: the target's aspect ratio,
            // CROP_FRACTION of the side that limits it, centred.
            let scale = (width as f64 / w as f64).max(height as f64 / h as f64) / CROP_FRACTION;
            let (cw, ch) = ((width as f64 / scale).min(w as f64), (height as f64 / scale).min(h as f64));
            fr::ResizeOptions::new().crop((w as f64 - cw) / 2.0, (h as f64 - ch) / 2.0, cw, ch)
        }
    };
    let src = fr::images::Image::from_vec_u8(w, h, img.into_raw(), fr::PixelType::U8x3)
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let alg = match filter {
        ResizeFilter::Nearest => fr::ResizeAlg::Nearest,
        ResizeFilter::Bilinear => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
        ResizeFilter::Bicubic => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
        ResizeFilter::Lanczos3 => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
    };
    fr::Resizer::new()
        .resize(&src, &mut dst, &options.resize_alg(alg))
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    Ok(RgbImage::from_raw(width, height, dst.into_vec()).expect("resizer output has the requested size"))
}

/// Decodes and resizes in one step: what every stage does per image.
pub fn load_resized(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    filter: ResizeFilter,
) -> Result<RgbImage, ImageError> {
    resize(load_rgb(path)?, width, height, filter)
}

/// Decodes and [`fit`]s in one step.
pub fn load_fitted(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    filter: ResizeFilter,
    mode: ResizeMode,
) -> Result<RgbImage, ImageError> {
    fit(load_rgb(path)?, width, height, filter, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, Luma, LumaA, Rgba};

    #[test]
    fn crop_keeps_the_aspect_ratio_and_the_centre() {
        // 40x20: red | green (x 10..30) | blue; the 16x16 crop covers 0.875 of the height, centred.
        let img = RgbImage::from_fn(40, 20, |x, _| match x {
            0..10 => image::Rgb([255, 0, 0]),
            10..30 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let out = fit(img.clone(), 16, 16, ResizeFilter::Bilinear, ResizeMode::Crop).unwrap();
        assert_eq!(out.dimensions(), (16, 16));
        assert!(out.pixels().all(|p| p.0[1] > 200 && p.0[0] < 30 && p.0[2] < 30), "only the green centre");
        let squashed = fit(img, 16, 16, ResizeFilter::Bilinear, ResizeMode::Squash).unwrap();
        assert_eq!(squashed.get_pixel(0, 8).0, [255, 0, 0]);
        assert_eq!(
            ("crop".parse::<ResizeMode>(), ResizeMode::Squash.to_string()),
            (Ok(ResizeMode::Crop), "squash".into())
        );
    }

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn grey_png_becomes_replicated_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let grey = image::GrayImage::from_pixel(3, 2, Luma([77]));
        let p = write_tmp(dir.path(), "g.png", &encode(DynamicImage::ImageLuma8(grey), ImageFormat::Png));
        let rgb = load_rgb(&p).unwrap();
        assert_eq!(rgb.dimensions(), (3, 2));
        assert!(rgb.pixels().all(|p| p.0 == [77, 77, 77]));
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        let dir = tempfile::tempdir().unwrap();
        let rgba = image::RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0]));
        let p = write_tmp(dir.path(), "a.png", &encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
        assert!(load_rgb(&p).unwrap().pixels().all(|p| p.0 == [10, 20, 30]));
        let la = image::GrayAlphaImage::from_pixel(2, 2, LumaA([200, 3]));
        let p = write_tmp(dir.path(), "la.png", &encode(DynamicImage::ImageLumaA8(la), ImageFormat::Png));
        assert!(load_rgb(&p).unwrap().pixels().all(|p| p.0 == [200, 200, 200]));
    }

    #[test]
    fn format_is_taken_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let p = write_tmp(dir.path(), "really_a_png.jpg", &encode(DynamicImage::ImageRgb8(img), ImageFormat::Png));
        assert_eq!(load_rgb(&p).unwrap().get_pixel(0, 0).0, [1, 2, 3]);
    }

    #[test]
    fn corrupt_and_truncated_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_tmp(dir.path(), "text.jpg", b"not an image at all");
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains("text.jpg") && err.contains("corrupt or not an image"), "{err}");

        let img = image::RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]));
        let mut jpeg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        jpeg.truncate(jpeg.len() / 3);
        let p = write_tmp(dir.path(), "cut.jpg", &jpeg);
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains("cut.jpg"), "{err}");

        let err = load_rgb(dir.path().join("absent.jpg")).unwrap_err().to_string();
        assert!(err.contains("absent.jpg"), "{err}");
    }

    fn sample_photo() -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/sample/train/cats/cat.1.jpg")).unwrap()
    }

    #[test]
    fn a_photo_cut_short_is_an_error_not_grey_rows() {
        // The decoder alone fills the missing rows with grey and reports success.
        let dir = tempfile::tempdir().unwrap();
        let photo = sample_photo();
        assert!(load_rgb(write_tmp(dir.path(), "whole.jpg", &photo)).is_ok());
        for keep in [4096, photo.len() / 2, photo.len() - 2] {
            let p = write_tmp(dir.path(), &format!("cut{keep}.jpg"), &photo[..keep]);
            let err = load_rgb(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("cut{keep}.jpg")) && err.contains("truncated"), "{keep}: {err}");
        }
        // Bytes after the end-of-image marker are harmless (cameras pad files).
        let padded = [photo.as_slice(), &[0; 100]].concat();
        assert!(load_rgb(write_tmp(dir.path(), "padded.jpg", &padded)).is_ok());
    }

    #[test]
    fn an_embedded_thumbnail_does_not_hide_truncation() {
        // A thumbnail (a whole JPEG, end marker included) in an APP1 segment, then the photo
        // cut short: the end marker found must be the photo's own.
        let photo = sample_photo();
        let thumb =
            encode(DynamicImage::ImageRgb8(image::RgbImage::from_pixel(8, 8, image::Rgb([5; 3]))), ImageFormat::Jpeg);
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend(((thumb.len() + 2) as u16).to_be_bytes());
        app1.extend(&thumb);
        let with_thumb = [&photo[..2], app1.as_slice(), &photo[2..]].concat();
        assert!(decode_rgb(&with_thumb, DEFAULT_MAX_PIXELS).is_ok());
        let cut = &with_thumb[..with_thumb.len() * 2 / 3];
        assert!(matches!(decode_rgb(cut, DEFAULT_MAX_PIXELS), Err(DecodeFailure::Other(e)) if e.contains("truncated")));
    }

    #[test]
    fn truncated_png_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode(
            DynamicImage::ImageRgb8(load_rgb(write_tmp(dir.path(), "p.jpg", &sample_photo())).unwrap()),
            ImageFormat::Png,
        );
        let p = write_tmp(dir.path(), "cut.png", &png[..png.len() / 2]);
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains("cut.png") && err.contains("end of file"), "{err}");
    }

    #[test]
    fn resize_gives_exact_size_and_keeps_flat_colour() {
        let img = image::RgbImage::from_pixel(500, 375, image::Rgb([200, 100, 50]));
        for f in [ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Bicubic, ResizeFilter::Lanczos3] {
            let out = resize(img.clone(), 150, 150, f).unwrap();
            assert_eq!(out.dimensions(), (150, 150));
            assert!(out.pixels().all(|p| p.0 == [200, 100, 50]), "{f}");
        }
    }

    #[test]
    fn bilinear_shrink_averages_where_nearest_aliases() {
        // Alternating black/white columns shrunk 2x: bilinear gives grey away from the borders
        // (where edge clamping tilts the average), nearest picks black or white.
        let img =
            image::RgbImage::from_fn(8, 2, |x, _| if x % 2 == 0 { image::Rgb([0; 3]) } else { image::Rgb([255; 3]) });
        let bil = resize(img.clone(), 4, 2, ResizeFilter::Bilinear).unwrap();
        for x in 1..3 {
            assert!((bil.get_pixel(x, 0).0[0] as i32 - 128).abs() <= 2, "{bil:?}");
        }
        let near = resize(img, 4, 2, ResizeFilter::Nearest).unwrap();
        assert!(near.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    }

    #[test]
    fn image_sizes_parse() {
        assert_eq!("150".parse::<ImageSize>().unwrap(), ImageSize::square(150));
        assert_eq!("224x160".parse::<ImageSize>().unwrap(), ImageSize { width: 224, height: 160 });
        assert_eq!(ImageSize { width: 224, height: 160 }.to_string(), "224x160");
        for bad in ["", "0", "16", "x150", "150x", "a"] {
            assert!(bad.parse::<ImageSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_names_round_trip() {
        for n in ResizeFilter::NAMES {
            assert_eq!(n.parse::<ResizeFilter>().unwrap().to_string(), *n);
        }
        assert!("box".parse::<ResizeFilter>().unwrap_err().contains("bilinear"));
    }

    /// A grey PNG of `width` x `height` zero pixels, compressed row by row: 40000x40000 is 1.6 GB
    /// of pixels in about 1.5 MB.
    pub(crate) fn bomb_png(width: u32, height: u32) -> Vec<u8> {
        use std::io::Write;
        let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend(kind);
            out.extend(data);
            out.extend(crc.sum().to_be_bytes());
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
        chunk(&mut png, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let row = vec![0u8; width as usize + 1]; // filter byte + pixels
        for _ in 0..height {
            z.write_all(&row).unwrap();
        }
        chunk(&mut png, b"IDAT", &z.finish().unwrap());
        chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn an_image_over_the_pixel_limit_says_its_size_the_limit_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let png = bomb_png(40000, 40000);
        assert!(png.len() < 2 << 20, "{} bytes", png.len());
        let p = write_tmp(dir.path(), "bomb.png", &png);
        let err = load_rgb_limited(&p, DEFAULT_MAX_PIXELS).unwrap_err().to_string();
        for part in ["bomb.png", "40000x40000 pixels", "1600000000", "89478485", "resize", MAX_PIXELS_VAR] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(!err.contains("corrupt"), "{err}");
        // The same check at a small scale: refused over the limit, decoded at it.
        let p = write_tmp(dir.path(), "small.png", &bomb_png(100, 50));
        assert!(matches!(
            load_rgb_limited(&p, 4999),
            Err(ImageError::TooLarge { width: 100, height: 50, limit: 4999, .. })
        ));
        assert_eq!(load_rgb_limited(&p, 5000).unwrap().dimensions(), (100, 50));
    }
}
