//! Thumbnails: small JPEGs of the images the page shows, written atomically into the report's
//! `thumbs/` folder under names made from their position (never from the user's file names).

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context as _, Result};
use image::RgbImage;
use sd_data::image::{ResizeFilter, load_rgb, resize};

pub const DIR: &str = "thumbs";
/// The longer side of a thumbnail, in pixels (shown at half that on the page: sharp on HiDPI).
pub const SIDE: u32 = 192;
const QUALITY: u8 = 80;

/// `img` shrunk (never enlarged) to fit `side` x `side`, aspect kept.
pub fn fit(img: RgbImage, side: u32) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let scale = (side as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    Ok(resize(img, tw, th, ResizeFilter::Bilinear)?)
}

/// Writes `img` as `out/thumbs/NAME.jpg`; returns the path relative to `out` (for `src`).
pub fn write(out: &Path, name: &str, img: &RgbImage) -> Result<String> {
    let mut buf = Cursor::new(Vec::new());
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, QUALITY))
        .with_context(|| format!("cannot encode the thumbnail {name}"))?;
    let rel = format!("{DIR}/{name}.jpg");
    sd_data::artifact::write_bytes(out.join(&rel), buf.get_ref())?;
    Ok(rel)
}

/// The thumbnail of an image file.
pub fn of_file(out: &Path, name: &str, image: &Path) -> Result<String> {
    write(out, name, &fit(load_rgb(image)?, SIDE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_never_grow() {
        let wide = fit(RgbImage::new(600, 300), 192).unwrap();
        assert_eq!(wide.dimensions(), (192, 96));
        assert_eq!(fit(RgbImage::new(40, 30), 192).unwrap().dimensions(), (40, 30));
        let t = tempfile::tempdir().unwrap();
        let rel = write(t.path(), "x-0", &wide).unwrap();
        assert_eq!(rel, "thumbs/x-0.jpg");
        let back = image::open(t.path().join(rel)).unwrap();
        assert_eq!((back.width(), back.height()), (192, 96));
    }
}
