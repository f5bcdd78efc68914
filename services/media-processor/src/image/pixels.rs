//! Decoded pixels and what is done to them between decoding and encoding: fitting sizes, SIMD
//! resizing (`fast_image_resize`), EXIF orientation, alpha flattening.

use fast_image_resize::images::{Image as FrImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;

use crate::error::{ProcessError, Result};

/// 8-bit pixels, rows packed without padding: RGB (`channels` 3) or RGBA, not premultiplied
/// (`channels` 4, only for sources with an alpha channel).
#[derive(Debug)]
pub(crate) struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Pixels {
    fn pixel_type(&self) -> PixelType {
        if self.channels == 4 { PixelType::U8x4 } else { PixelType::U8x3 }
    }

    /// The size of `self` fitted into a `side`×`side` box (see [`fit`]).
    pub fn fitted(&self, side: u32) -> (u32, u32) {
        fit(self.width, self.height, side)
    }
}

/// `width`×`height` scaled to fit a `side`×`side` box with its aspect ratio kept (rounded, at
/// least 1 px), or unchanged when it already fits: never upscaled.
pub(crate) fn fit(width: u32, height: u32, side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= side {
        return (width, height);
    }
    let scale = |d: u32| ((u64::from(d) * u64::from(side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
    (scale(width), scale(height))
}

/// `src` resized to `width`×`height` with a Lanczos3 convolution (SIMD: AVX2 or SSE4.1, picked at
/// run time; alpha is premultiplied for the filter and restored after). Returns `src` itself when
/// the size is already right, so the caller pays for no copy.
pub(crate) fn resize(resizer: &mut Resizer, src: Pixels, width: u32, height: u32) -> Result<Pixels> {
    if (src.width, src.height) == (width, height) {
        return Ok(src);
    }
    resize_ref(resizer, &src, width, height)
}

/// Like [`resize`], for a borrowed source (always a new buffer).
pub(crate) fn resize_ref(resizer: &mut Resizer, src: &Pixels, width: u32, height: u32) -> Result<Pixels> {
    let bug = |e: &dyn std::fmt::Display| ProcessError::transient(format!("resize: {e}"));
    let view = ImageRef::new(src.width, src.height, &src.data, src.pixel_type()).map_err(|e| bug(&e))?;
    let mut dst = FrImage::new(width, height, src.pixel_type());
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    resizer.resize(&view, &mut dst, &options).map_err(|e| bug(&e))?;
    Ok(Pixels { width, height, channels: src.channels, data: dst.into_vec() })
}

/// `px` turned upright for EXIF orientation `orientation` (1..=8; anything else is left as is).
/// 2 and 4 flip in place; the rotations of 5..=8 and 3 allocate the turned buffer.
pub(crate) fn apply_orientation(px: Pixels, orientation: u16) -> Pixels {
    let Some(o) = u8::try_from(orientation).ok().and_then(Orientation::from_exif) else {
        return px;
    };
    if o == Orientation::NoTransforms {
        return px;
    }
    let Pixels { width, height, channels, data } = px;
    let image = if channels == 4 {
        image::RgbaImage::from_raw(width, height, data).map(image::DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(width, height, data).map(image::DynamicImage::ImageRgb8)
    };
    let Some(mut image) = image else {
        // from_raw only refuses a buffer shorter than width × height × channels, which a Pixels
        // never has; keep the invariant visible rather than panic.
        return Pixels { width: 0, height: 0, channels, data: Vec::new() };
    };
    image.apply_orientation(o);
    let (width, height) = (image.width(), image.height());
    Pixels { width, height, channels, data: image.into_bytes() }
}

/// RGB pixels of `px`: RGBA is composited over white (JPEG has no alpha, and a transparent
/// background shown as black looks broken); RGB is returned as is.
pub(crate) fn flatten_on_white(px: &Pixels) -> std::borrow::Cow<'_, [u8]> {
    if px.channels != 4 {
        return std::borrow::Cow::Borrowed(&px.data);
    }
    let mut out = Vec::with_capacity(px.data.len() / 4 * 3);
    for p in px.data.chunks_exact(4) {
        let a = u32::from(p[3]);
        for &c in &p[..3] {
            // c·a + 255·(1 − a), in 0..=255 with rounding.
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// RGBA pixels of `px` (thumbhash wants RGBA).
pub(crate) fn to_rgba(px: &Pixels) -> std::borrow::Cow<'_, [u8]> {
    if px.channels == 4 {
        return std::borrow::Cow::Borrowed(&px.data);
    }
    let mut out = Vec::with_capacity(px.data.len() / 3 * 4);
    for p in px.data.chunks_exact(3) {
        out.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_ratio_and_never_upscales() {
        assert_eq!(fit(4000, 3000, 1280), (1280, 960));
        assert_eq!(fit(3000, 4000, 256), (192, 256));
        assert_eq!(fit(100, 50, 256), (100, 50));
        assert_eq!(fit(1, 1, 256), (1, 1));
        assert_eq!(fit(100_000, 10, 256), (256, 1));
        assert_eq!(fit(1280, 1280, 1280), (1280, 1280));
    }

    #[test]
    fn orientation_6_turns_a_wide_image_upright() {
        // 2×1 red, blue → rotated 90° clockwise: 1×2 red over blue.
        let px = Pixels { width: 2, height: 1, channels: 3, data: vec![255, 0, 0, 0, 0, 255] };
        let up = apply_orientation(px, 6);
        assert_eq!((up.width, up.height), (1, 2));
        assert_eq!(up.data, vec![255, 0, 0, 0, 0, 255]);
        let px = Pixels { width: 2, height: 1, channels: 3, data: vec![255, 0, 0, 0, 0, 255] };
        let up = apply_orientation(px, 8);
        assert_eq!(up.data, vec![0, 0, 255, 255, 0, 0]);
    }

    #[test]
    fn transparent_pixels_flatten_to_white() {
        let px = Pixels { width: 2, height: 1, channels: 4, data: vec![0, 0, 0, 0, 10, 20, 30, 255] };
        assert_eq!(&*flatten_on_white(&px), &[255, 255, 255, 10, 20, 30]);
    }
}
