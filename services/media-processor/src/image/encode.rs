//! Encoding variants from pixels: lossy WebP (libwebp), baseline JPEG (libjpeg-turbo) and the
//! thumbhash placeholder. Every output is written from pixels alone, so no EXIF, GPS or XMP of
//! the original can reach it.

use base64::Engine as _;
use fast_image_resize::Resizer;
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use super::pixels::{Pixels, flatten_on_white, resize_ref, to_rgba};
use crate::error::{ProcessError, Result};

/// Largest side of the image a thumbhash is computed from (the format's own limit is 100).
const THUMBHASH_SIDE: u32 = 100;

/// Lossy WebP at `quality` (0..=100), with alpha when `px` has it. libwebp's method 2 of 0..=6:
/// on a 256 px thumb its default 4 takes about twice the time for some 4 % fewer bytes.
pub(crate) fn webp(px: &Pixels, quality: f32) -> Result<Vec<u8>> {
    let mut config = webp::WebPConfig::new().map_err(|()| ProcessError::transient("libwebp: bad config"))?;
    config.quality = quality;
    config.method = 2;
    let encoder = if px.channels == 4 {
        webp::Encoder::from_rgba(&px.data, px.width, px.height)
    } else {
        webp::Encoder::from_rgb(&px.data, px.width, px.height)
    };
    let out = encoder.encode_advanced(&config).map_err(|e| ProcessError::transient(format!("libwebp: {e:?}")))?;
    Ok(out.to_vec())
}

/// Baseline JPEG at `quality` (1..=100), 4:2:0 chroma (what cameras and browsers expect of a
/// photo preview); RGBA is flattened on white first.
pub(crate) fn jpeg(px: &Pixels, quality: i32) -> Result<Vec<u8>> {
    let bug = |e: turbojpeg::Error| ProcessError::transient(format!("libjpeg-turbo: {e}"));
    let rgb = flatten_on_white(px);
    let mut compressor = Compressor::new().map_err(bug)?;
    compressor.set_quality(quality);
    compressor.set_subsamp(Subsamp::Sub2x2);
    let image = turbojpeg::Image {
        pixels: &*rgb,
        width: px.width as usize,
        pitch: px.width as usize * 3,
        height: px.height as usize,
        format: PixelFormat::RGB,
    };
    compressor.compress_to_vec(image).map_err(bug)
}

/// The thumbhash (<https://evanw.github.io/thumbhash/>) of `px`, base64 (standard alphabet, with
/// padding), computed from a copy shrunk to fit 100×100.
pub(crate) fn thumbhash(resizer: &mut Resizer, px: &Pixels) -> Result<String> {
    let (w, h) = px.fitted(THUMBHASH_SIDE);
    let small;
    let src = if (w, h) == (px.width, px.height) {
        px
    } else {
        small = resize_ref(resizer, px, w, h)?;
        &small
    };
    let hash = thumbhash::rgba_to_thumb_hash(w as usize, h as usize, &to_rgba(src));
    Ok(base64::engine::general_purpose::STANDARD.encode(hash))
}
