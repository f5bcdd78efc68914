//! Decoding under limits: the header is read first and its size checked against `max_pixels`
//! before any pixel buffer exists (for a JPEG, before the file is even read into memory: only
//! its segment headers up to the frame header are). JPEG goes through libjpeg-turbo with DCT scaling (the decoder
//! produces the image already shrunk by n/8, skipping most of the inverse DCT, upsampling and
//! colour conversion work); the other formats through the `image` crate under `image::Limits`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader};
use turbojpeg::{Colorspace, Decompressor, PixelFormat};

use super::ImageLimits;
use super::markers::{self, Segments};
use super::pixels::{Pixels, fit};
use crate::error::{ProcessError, Result};

/// Decoded pixels, possibly shrunk on load, with the facts of the original.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// At least the size the caller asked for (see [`decode`]), in the stored (not yet oriented)
    /// frame.
    pub pixels: Pixels,
    /// The original's size in the stored frame, before any shrink or orientation.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent or unreadable).
    pub orientation: u16,
}

/// Decodes the image at `path`. `side` is the largest box the caller will fit the result into:
/// a JPEG is shrunk on load by the largest DCT factor (1/8, 1/4, 1/2) that keeps it at least as large as the
/// image fitted into `side`×`side`, so the final resize only ever shrinks. Other formats decode
/// at full size.
///
/// Errors: [`ProcessError::Rejected`] for a file that is not an image we read, that is corrupt or
/// truncated, or over `limits`; [`ProcessError::Transient`] when the file cannot be read.
pub(crate) fn decode(path: &Path, limits: &ImageLimits, side: u32) -> Result<Decoded> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 3];
    let n = read_up_to(&mut file, &mut magic)?;
    if n == 3 && magic == [0xFF, 0xD8, 0xFF] {
        let len = file.metadata()?.len();
        let data = read_jpeg(&mut file, len, limits)?;
        return decode_jpeg(&data, limits, side);
    }
    file.seek(SeekFrom::Start(0))?;
    decode_other(BufReader::new(file), limits)
}

/// Reads the whole JPEG of `len` bytes from `reader` into memory once it is known to be within
/// `limits`: first its length against [`max_file_bytes`], then the size its frame header (SOFn)
/// declares against `max_pixels`, reading only the segment headers before it (the segments
/// themselves are skipped with seeks, so a few KiB are read whatever the file's size). A file
/// whose frame header is not found there is read whole and left to libjpeg-turbo to judge.
///
/// Errors: [`ProcessError::Rejected`] over the limits; [`ProcessError::Transient`] when the file
/// cannot be read.
fn read_jpeg<R: Read + Seek>(mut reader: R, len: u64, limits: &ImageLimits) -> Result<Vec<u8>> {
    if len > max_file_bytes(limits) {
        return Err(ProcessError::rejected(format!(
            "the file is {} MB, more than an image within the limit of {} megapixels can need",
            len / 1_000_000,
            limits.max_pixels / 1_000_000
        )));
    }
    reader.seek(SeekFrom::Start(2))?;
    if let Some((width, height)) = jpeg_frame_size(&mut reader)? {
        check_pixels(u64::from(width), u64::from(height), limits)?;
    }
    reader.seek(SeekFrom::Start(0))?;
    let mut data = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut data)?;
    Ok(data)
}

/// The width and height a JPEG's frame header declares, walking `reader` from just after the
/// SOI marker ([`Segments`]). `None` when there is none before the scan or the end (a corrupt or
/// truncated file), or it declares a zero size (a height given later by a DNL marker):
/// libjpeg-turbo then decides.
///
/// Errors: only I/O failures other than a short read.
fn jpeg_frame_size<R: Read + Seek>(reader: R) -> std::io::Result<Option<(u16, u16)>> {
    let mut segments = Segments::new(reader);
    while let Some(marker) = segments.next()? {
        if markers::is_frame_header(marker) {
            // Sample precision, then the number of lines (height) and samples per line (width).
            let body = match segments.body() {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                body => body?,
            };
            let Some(&[_precision, h0, h1, w0, w1]) = body.get(..5) else { return Ok(None) };
            let (width, height) = (u16::from_be_bytes([w0, w1]), u16::from_be_bytes([h0, h1]));
            return Ok((width > 0 && height > 0).then_some((width, height)));
        }
    }
    Ok(None)
}

/// A JPEG is compressed: one larger than 4 bytes per allowed pixel is not a photo within the
/// limit (and would only be read into memory to be refused).
fn max_file_bytes(limits: &ImageLimits) -> u64 {
    limits.max_pixels.saturating_mul(4).max(16 << 20)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Refuses `width`×`height` over `limits.max_pixels`, with a reason the owner can read.
pub(crate) fn check_pixels(width: u64, height: u64, limits: &ImageLimits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(ProcessError::rejected(format!(
            "corrupt or truncated image (it declares {width}×{height} pixels)"
        )));
    }
    if width.saturating_mul(height) > limits.max_pixels {
        return Err(ProcessError::rejected(format!(
            "the image is {width}×{height} pixels; the limit is {}",
            megapixels(limits.max_pixels)
        )));
    }
    Ok(())
}

fn megapixels(pixels: u64) -> String {
    if pixels.is_multiple_of(1_000_000) {
        format!("{} megapixels", pixels / 1_000_000)
    } else {
        format!("{pixels} pixels")
    }
}

/// The DCT scaling numerator n (the image decodes at n/8 of its size: 1/8, 1/4, 1/2 or 1): the
/// smallest that keeps the decoded image at least `target` in both dimensions. libjpeg-turbo
/// also decodes at 3/8, 5/8..., but with scalar reduced IDCTs: measured on 2-12 MP photos, 3/8
/// costs more CPU than the SIMD 1/2.
pub(crate) fn dct_scale(width: u32, height: u32, target: (u32, u32)) -> u32 {
    [1, 2, 4, 8].into_iter().find(|&n| scaled(width, n) >= target.0 && scaled(height, n) >= target.1).unwrap_or(8)
}

/// `dim` × n/8, rounded up (libjpeg-turbo's TJSCALED).
fn scaled(dim: u32, n: u32) -> u32 {
    (dim * n).div_ceil(8)
}

fn decode_jpeg(data: &[u8], limits: &ImageLimits, side: u32) -> Result<Decoded> {
    let bug = |e: turbojpeg::Error| ProcessError::transient(format!("libjpeg-turbo: {e}"));
    let corrupt =
        |e: turbojpeg::Error| ProcessError::rejected(format!("corrupt or truncated JPEG ({})", tj_reason(&e)));
    let mut decompressor = Decompressor::new().map_err(bug)?;
    let header = decompressor.read_header(data).map_err(corrupt)?;
    check_pixels(header.width as u64, header.height as u64, limits)?;
    // Both fit in u32 now (their product is at most max_pixels, itself sensible).
    let (width, height) = (header.width as u32, header.height as u32);
    let orientation = jpeg_orientation(data);
    let n = dct_scale(width, height, fit(width, height, side));
    let (w, h) = (scaled(width, n), scaled(height, n));
    // libjpeg-turbo converts YCbCr, RGB and grey to RGB itself, but not CMYK/YCCK (print files).
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, bpp) = if cmyk { (PixelFormat::CMYK, 4) } else { (PixelFormat::RGB, 3) };
    let mut data_out = vec![0u8; w as usize * h as usize * bpp];
    let image = turbojpeg::Image {
        pixels: data_out.as_mut_slice(),
        width: w as usize,
        pitch: w as usize * bpp,
        height: h as usize,
        format,
    };
    // A width and height below the original's make tjDecompress2 pick the largest scaling factor
    // that fits them: exactly n/8 here. Warnings (premature end of data: a truncated file) fail too.
    decompressor.decompress(data, image).map_err(corrupt)?;
    let data_out = if cmyk { cmyk_to_rgb(&data_out) } else { data_out };
    Ok(Decoded { pixels: Pixels { width: w, height: h, channels: 3, data: data_out }, width, height, orientation })
}

/// libjpeg-turbo's message, without the crate's "TurboJPEG error: " prefix.
fn tj_reason(e: &turbojpeg::Error) -> String {
    match e {
        turbojpeg::Error::TurboJpegError(msg) => msg.trim().to_owned(),
        other => other.to_string(),
    }
}

/// CMYK as libjpeg returns it from Adobe files (inverted: 255 = no ink) to RGB, without colour
/// management: R = C·K/255 and so on on the stored values.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let k = u32::from(p[3]);
        out.extend(p[..3].iter().map(|&c| ((u32::from(c) * k + 127) / 255) as u8));
    }
    out
}

/// EXIF orientation (1..=8) from the first `Exif` APP1 segment of a JPEG, read before the image
/// data; 1 when there is none or it is malformed. The TIFF structure inside is parsed by
/// `image`'s reader of the orientation tag.
pub(crate) fn jpeg_orientation(data: &[u8]) -> u16 {
    let mut segments = Segments::new(std::io::Cursor::new(data.get(2..).unwrap_or_default()));
    while let Ok(Some(marker)) = segments.next() {
        if marker != markers::APP1 {
            continue;
        }
        let Ok(body) = segments.body() else { return 1 };
        if let Some(exif) = body.strip_prefix(b"Exif\0\0") {
            return image::metadata::Orientation::from_exif_chunk(exif).map_or(1, |o| u16::from(o.to_exif()));
        }
    }
    1
}

fn decode_other<R: std::io::BufRead + Seek>(reader: R, limits: &ImageLimits) -> Result<Decoded> {
    let mut reader = ImageReader::new(reader).with_guessed_format()?;
    if reader.format().is_none() {
        return Err(ProcessError::rejected(
            "not an image format we read (JPEG, PNG, GIF, WebP, TIFF or BMP are)".to_owned(),
        ));
    }
    let mut image_limits = image::Limits::default();
    // The decoders' own size checks stay off: ours below gives the owner a clearer reason. The
    // allocation cap (output buffer included) allows the allowed pixels at 16-bit RGBA.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(image_limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    check_pixels(u64::from(width), u64::from(height), limits)?;
    let orientation = decoder.orientation().map_or(1, |o| u16::from(o.to_exif()));
    // GIF (and animated WebP) decoders give their first frame here.
    let image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    let pixels = if image.color().has_alpha() {
        let rgba = image.into_rgba8();
        Pixels { width, height, channels: 4, data: rgba.into_raw() }
    } else {
        let rgb = image.into_rgb8();
        Pixels { width, height, channels: 3, data: rgb.into_raw() }
    };
    Ok(Decoded { pixels, width, height, orientation })
}

/// `image`'s errors: the file's fault (Rejected) except an I/O failure other than a short read.
fn image_error(e: ImageError) -> ProcessError {
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ProcessError::rejected("truncated image file")
        }
        ImageError::IoError(io) => ProcessError::from(io),
        ImageError::Limits(l) => {
            ProcessError::rejected(format!("the image needs more memory to decode than allowed ({l})"))
        }
        ImageError::Unsupported(u) => ProcessError::rejected(format!("unsupported image: {u}")),
        other => ProcessError::rejected(format!("corrupt or truncated image ({other})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_scale_keeps_the_decoded_image_at_least_the_target() {
        // 12 MP to a 1280 preview: 1/2 → 2000×1500; to a 256 thumb: 1/8 → 500×375.
        assert_eq!(dct_scale(4000, 3000, (1280, 960)), 4);
        // 24 MP to a 1280 preview: 1/4 → 1500×1000.
        assert_eq!(dct_scale(6000, 4000, (1280, 853)), 2);
        assert_eq!(dct_scale(4000, 3000, (256, 192)), 1);
        // Already small: no shrink.
        assert_eq!(dct_scale(1000, 800, (1000, 800)), 8);
        assert_eq!(dct_scale(1, 1, (1, 1)), 1);
    }

    #[test]
    fn pixels_over_the_limit_are_refused_with_a_readable_reason() {
        let limits = ImageLimits::default();
        let e = check_pixels(100_000, 100_000, &limits).unwrap_err();
        assert_eq!(e.to_string(), "the image is 100000×100000 pixels; the limit is 50 megapixels");
        assert!(check_pixels(8000, 6000, &limits).is_ok());
    }

    /// A file of `len` bytes: `head`, then zeros, made up as it is read (nothing allocated), with
    /// the bytes read counted.
    struct Sparse {
        head: Vec<u8>,
        len: u64,
        pos: u64,
        read: u64,
    }

    impl Read for Sparse {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.head.get(self.pos as usize + i).copied().unwrap_or(0);
            }
            self.pos += n as u64;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl Seek for Sparse {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
                SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
            };
            Ok(self.pos)
        }
    }

    /// SOI, three APP2 segments of 64 KiB (ICC profiles are split like this), then a baseline
    /// frame header declaring `width`×`height` (3 components).
    fn jpeg_head(width: u16, height: u16) -> Vec<u8> {
        let mut head = vec![0xFF, 0xD8];
        for _ in 0..3 {
            head.extend_from_slice(&[0xFF, 0xE2, 0xFF, 0xFF]);
            head.resize(head.len() + 0xFFFF - 2, 0x42);
        }
        head.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
        head.extend_from_slice(&height.to_be_bytes());
        head.extend_from_slice(&width.to_be_bytes());
        head.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        head
    }

    #[test]
    fn a_jpeg_over_the_limit_is_refused_from_its_frame_header_without_reading_the_file() {
        // 150 MB: under the 200 MB a 50 MP JPEG may take, so only its header can refuse it.
        let mut file = Sparse { head: jpeg_head(65_000, 65_000), len: 150_000_000, pos: 0, read: 0 };
        let e = read_jpeg(&mut file, 150_000_000, &ImageLimits::default()).unwrap_err();
        assert_eq!(e.to_string(), "the image is 65000×65000 pixels; the limit is 50 megapixels");
        // The frame header sits after 192 KiB of segments, skipped rather than read.
        assert!(file.read < 64 * 1024, "{} bytes read", file.read);
    }

    #[test]
    fn a_jpeg_within_the_limit_is_read_whole() {
        let head = jpeg_head(8000, 6000);
        let len = head.len() as u64 + 1000;
        let mut file = Sparse { head: head.clone(), len, pos: 0, read: 0 };
        let data = read_jpeg(&mut file, len, &ImageLimits::default()).unwrap();
        assert_eq!(data.len() as u64, len);
        assert_eq!(&data[..head.len()], &head[..]);
        // No frame header before the scan (or a cut file): read whole, for libjpeg-turbo to judge.
        let no_sof = [0xFF, 0xD8, 0xFF, 0xDA, 0, 2];
        assert_eq!(jpeg_frame_size(std::io::Cursor::new(&no_sof[2..])).unwrap(), None);
        let cut = &jpeg_head(8000, 6000)[..(3 * 0xFFFF + 6)];
        assert_eq!(jpeg_frame_size(std::io::Cursor::new(&cut[2..])).unwrap(), None);
        let whole = jpeg_head(8000, 6000);
        assert_eq!(jpeg_frame_size(std::io::Cursor::new(&whole[2..])).unwrap(), Some((8000, 6000)));
    }

    #[test]
    fn orientation_is_found_in_the_exif_segment() {
        // SOI, APP1 "Exif\0\0" + little-endian TIFF with one IFD0 entry: Orientation (0x0112) = 6.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xE1];
        jpeg.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
        jpeg.extend_from_slice(b"Exif\0\0");
        jpeg.extend_from_slice(&tiff);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(jpeg_orientation(&jpeg), 6);
        assert_eq!(jpeg_orientation(&[0xFF, 0xD8, 0xFF, 0xDA]), 1);
        assert_eq!(jpeg_orientation(&jpeg[..20]), 1);
    }
}
