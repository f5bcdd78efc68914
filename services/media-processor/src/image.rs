//! Images (DESIGN §9): `details` (`width`, `height`, `orientation`, `thumbhash`) and the variants
//! `thumb` (WebP fitting 256×256) and `preview` (JPEG fitting 1280×1280), never upscaled, with no
//! EXIF, GPS or XMP.
//!
//! One decode serves both variants, and as few pixels as possible are decoded:
//! 1. `decode`: the header first, refused over [`ImageLimits::max_pixels`] before any pixel
//!    buffer exists (a decompression bomb costs a header read); a JPEG is then shrunk on load
//!    by libjpeg-turbo's DCT scaling to just above the preview's size (libvips does the same);
//!    PNG, GIF (first frame), WebP, TIFF and BMP decode through `image` under `image::Limits`;
//! 2. `pixels`: a SIMD Lanczos3 resize to the preview, EXIF orientation applied to those few
//!    pixels, then the thumb resized from the preview (not from the original);
//! 3. `encode`: the preview's JPEG on a second thread while the thumb's WebP and thumbhash
//!    are made; every output is encoded from pixels, so no metadata is carried over.
//!
//! [`thumbnail`] makes the thumb alone, decoding at the thumb's size.
//!
//! Everything here is blocking and CPU-bound: the runtime calls it under `spawn_blocking`.

mod decode;
mod encode;
mod markers;
mod pixels;

use std::path::Path;

use fast_image_resize::Resizer;

use crate::error::{ProcessError, Result};
use pixels::{Pixels, apply_orientation, fit, resize, resize_ref};

/// `thumb` fits a square of this side, px.
pub const THUMB_SIDE: u32 = 256;
/// `preview` fits a square of this side, px.
pub const PREVIEW_SIDE: u32 = 1280;
/// libwebp quality of `thumb` (0..=100).
pub const THUMB_QUALITY: f32 = 80.0;
/// libjpeg-turbo quality of `preview` (1..=100).
pub const PREVIEW_QUALITY: i32 = 82;

/// Limits on what is decoded (DESIGN §9, "Limits").
#[derive(Debug, Clone)]
pub struct ImageLimits {
    /// Most pixels (width × height, as the header declares them) an image may have; larger ones
    /// are refused before decoding. Default: 50 000 000 (50 MP).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_pixels: 50_000_000 }
    }
}

/// One encoded variant.
#[derive(Debug, Clone)]
pub struct Rendition {
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// `image/webp` or `image/jpeg`.
    pub mime_type: &'static str,
    /// Size of the encoded image, px (upright: after EXIF orientation).
    pub width: u32,
    pub height: u32,
}

/// What an image yields: its `details` and its two variants.
#[derive(Debug, Clone)]
pub struct ImageOutput {
    /// Size of the original, px, after EXIF orientation (as a viewer shows it).
    pub width: u32,
    pub height: u32,
    /// EXIF orientation of the original, 1..=8 (1 when absent). Already applied to the variants.
    pub orientation: u16,
    /// The thumbhash placeholder (<https://evanw.github.io/thumbhash/>), base64 with padding.
    pub thumbhash: String,
    /// `image/webp`, fits 256×256, never upscaled.
    pub thumb: Rendition,
    /// `image/jpeg`, fits 1280×1280, never upscaled.
    pub preview: Rendition,
}

/// Decodes the image at `path` once and makes its details, `thumb` and `preview` (see the module
/// doc for how). Blocking.
///
/// Errors: [`ProcessError::Rejected`] (the owner's `failureReason`) for a file that is not an
/// image in a format we read, is corrupt or truncated, or is over `limits`, e.g. "the image is
/// 100000×100000 pixels; the limit is 50 megapixels"; [`ProcessError::Transient`] when the file
/// cannot be read or an encoder fails.
///
/// # Examples
///
/// ```no_run
/// use media_processor::image::{ImageLimits, process_image};
///
/// let out = process_image("photo.jpg".as_ref(), &ImageLimits::default())?;
/// assert!(out.thumb.width <= 256 && out.preview.width <= 1280);
/// # Ok::<(), media_processor::error::ProcessError>(())
/// ```
pub fn process_image(path: &Path, limits: &ImageLimits) -> Result<ImageOutput> {
    guard(|| {
        let decoded = decode::decode(path, limits, PREVIEW_SIDE)?;
        let orientation = decoded.orientation;
        let (width, height) = upright(decoded.width, decoded.height, orientation);
        let mut resizer = Resizer::new();
        let (pw, ph) = fit(decoded.width, decoded.height, PREVIEW_SIDE);
        let preview = resize(&mut resizer, decoded.pixels, pw, ph)?;
        let preview = apply_orientation(preview, orientation);
        let (tw, th) = fit(width, height, THUMB_SIDE);
        let (preview_jpeg, thumb, thumb_webp, thumbhash) = std::thread::scope(|scope| {
            let jpeg = scope.spawn(|| encode::jpeg(&preview, PREVIEW_QUALITY));
            let rest = (|| {
                let thumb = if (tw, th) == (preview.width, preview.height) {
                    None
                } else {
                    Some(resize_ref(&mut resizer, &preview, tw, th)?)
                };
                let thumb_px = thumb.as_ref().unwrap_or(&preview);
                let webp = encode::webp(thumb_px, THUMB_QUALITY)?;
                let hash = encode::thumbhash(&mut resizer, thumb_px)?;
                Ok::<_, ProcessError>(((thumb_px.width, thumb_px.height), webp, hash))
            })();
            let jpeg = jpeg.join().map_err(|_| ProcessError::transient("JPEG encoder thread panicked"))?;
            let (thumb, webp, hash) = rest?;
            Ok::<_, ProcessError>((jpeg?, thumb, webp, hash))
        })?;
        Ok(ImageOutput {
            width,
            height,
            orientation,
            thumbhash,
            thumb: Rendition { bytes: thumb_webp, mime_type: "image/webp", width: thumb.0, height: thumb.1 },
            preview: Rendition {
                bytes: preview_jpeg,
                mime_type: "image/jpeg",
                width: preview.width,
                height: preview.height,
            },
        })
    })
}

/// The `thumb` alone (WebP fitting 256×256, EXIF orientation applied), decoding at the thumb's
/// size: a JPEG shrinks on load by up to 1/8 where [`process_image`] needs the preview's size.
/// Same limits and errors as [`process_image`]. Blocking.
pub fn thumbnail(path: &Path, limits: &ImageLimits) -> Result<Rendition> {
    guard(|| {
        let decoded = decode::decode(path, limits, THUMB_SIDE)?;
        let (tw, th) = fit(decoded.width, decoded.height, THUMB_SIDE);
        let thumb = resize(&mut Resizer::new(), decoded.pixels, tw, th)?;
        let thumb: Pixels = apply_orientation(thumb, decoded.orientation);
        let bytes = encode::webp(&thumb, THUMB_QUALITY)?;
        Ok(Rendition { bytes, mime_type: "image/webp", width: thumb.width, height: thumb.height })
    })
}

/// `width`×`height` as shown after EXIF `orientation` (5..=8 turn the image a quarter).
fn upright(width: u32, height: u32, orientation: u16) -> (u32, u32) {
    if (5..=8).contains(&orientation) { (height, width) } else { (width, height) }
}

/// Runs `f`, turning a panic in a decoder (a bug the file triggered) into a refusal of the file:
/// the same file would panic again, so retrying cannot help, and the worker must live on.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(ProcessError::rejected("the image could not be decoded")))
}
