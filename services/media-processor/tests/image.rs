//! Images (DESIGN §9) on real files made by real encoders in the test: ffmpeg (JPEG, PNG, GIF,
//! WebP, TIFF, BMP) and exiftool (EXIF orientation, GPS and XMP written into a JPEG); outputs are
//! decoded and their metadata read back with exiftool. Hand-made files for the attacks: a PNG and
//! a JPEG declaring 100000×100000 pixels, truncated and corrupt files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use media_processor::error::ProcessError;
use media_processor::image::{ImageLimits, ImageOutput, process_image, thumbnail};

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?} (run scripts/setup): {e}"));
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs ffmpeg with `args` (inputs, filters, options) writing `out` in `dir`; returns its path.
fn ffmpeg(dir: &Path, args: &[&str], out: &str) -> PathBuf {
    let path = dir.join(out);
    run(Command::new("ffmpeg").args(["-y", "-nostdin", "-loglevel", "error"]).args(args).arg(&path));
    path
}

/// exiftool's tags of `path` as (family-1 group:tag) → value.
fn exif_tags(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let output = Command::new("exiftool").args(["-j", "-a", "-G1", "-n"]).arg(path).output().expect("exiftool");
    assert!(output.status.success(), "exiftool: {}", String::from_utf8_lossy(&output.stderr));
    let mut list: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&output.stdout).unwrap();
    list.remove(0)
}

/// Asserts that `bytes` (written to a file in `dir` as `name`) carry no EXIF, GPS or XMP.
fn assert_no_metadata(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let tags = exif_tags(&path);
    for key in tags.keys() {
        let group = key.split(':').next().unwrap_or_default();
        assert!(
            !["IFD0", "IFD1", "ExifIFD", "GPS", "InteropIFD", "MakerNotes"].contains(&group)
                && !group.starts_with("XMP"),
            "{name} carries metadata {key}: {tags:?}"
        );
    }
    // The containers too: no APP1 (EXIF/XMP) segment in the JPEG, no EXIF/XMP chunk in the WebP.
    if bytes.starts_with(&[0xFF, 0xD8]) {
        assert!(jpeg_markers(bytes).iter().all(|&m| m != 0xE1), "{name} has an APP1 segment");
    } else {
        let chunks = riff_chunks(bytes);
        assert!(chunks.iter().all(|c| c != b"EXIF" && c != b"XMP "), "{name} has metadata chunks {chunks:?}");
    }
}

/// The markers of a JPEG's segments up to the start of scan.
fn jpeg_markers(data: &[u8]) -> Vec<u8> {
    let (mut i, mut markers) = (2, Vec::new());
    while i + 4 <= data.len() && data[i] == 0xFF {
        let marker = data[i + 1];
        markers.push(marker);
        if marker == 0xDA {
            break;
        }
        i += 2 + usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
    }
    markers
}

/// The chunk ids of a WebP (RIFF) file.
fn riff_chunks(data: &[u8]) -> Vec<[u8; 4]> {
    assert!(data.starts_with(b"RIFF") && &data[8..12] == b"WEBP", "not a WebP file");
    let (mut i, mut chunks) = (12, Vec::new());
    while i + 8 <= data.len() {
        chunks.push(data[i..i + 4].try_into().unwrap());
        let len = u32::from_le_bytes(data[i + 4..i + 8].try_into().unwrap()) as usize;
        i += 8 + len + (len & 1);
    }
    chunks
}

/// Decodes a WebP or PNG (thumb) to RGBA.
fn decode_webp(bytes: &[u8]) -> image::RgbaImage {
    assert!(bytes.starts_with(b"RIFF"), "thumb is not WebP");
    image::load_from_memory_with_format(bytes, image::ImageFormat::WebP).expect("decode thumb").into_rgba8()
}

/// Decodes a JPEG (preview) to RGB: (width, height, pixels).
fn decode_jpeg(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let image = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB).expect("decode preview");
    (image.width, image.height, image.pixels)
}

/// Asserts the sizes and types of both variants and that the thumbhash decodes to `aspect`.
fn assert_variants(out: &ImageOutput, thumb: (u32, u32), preview: (u32, u32)) {
    assert_eq!((out.thumb.width, out.thumb.height), thumb, "thumb size");
    assert_eq!((out.preview.width, out.preview.height), preview, "preview size");
    assert_eq!(out.thumb.mime_type, "image/webp");
    assert_eq!(out.preview.mime_type, "image/jpeg");
    let webp = decode_webp(&out.thumb.bytes);
    assert_eq!(webp.dimensions(), thumb, "decoded thumb size");
    let (w, h, _) = decode_jpeg(&out.preview.bytes);
    assert_eq!((w as u32, h as u32), preview, "decoded preview size");
    let hash = base64::engine::general_purpose::STANDARD.decode(&out.thumbhash).expect("thumbhash is base64");
    let aspect = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).expect("thumbhash decodes");
    let expected = out.width as f32 / out.height as f32;
    assert!((aspect / expected - 1.0).abs() < 0.25, "thumbhash aspect {aspect}, image {expected}");
}

/// Mean RGB of a horizontal band of rows `rows` (fractions of the height) of an RGB(A) image.
fn band_mean(pixels: &[u8], width: usize, height: usize, channels: usize, rows: (f32, f32)) -> [f32; 3] {
    let (from, to) = ((rows.0 * height as f32) as usize, ((rows.1 * height as f32) as usize).max(1));
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for y in from..to {
        for x in 0..width {
            let p = &pixels[(y * width + x) * channels..];
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
            n += 1.0;
        }
    }
    sum.map(|s| (s / n) as f32)
}

fn assert_color(got: [f32; 3], want: [f32; 3], what: &str) {
    let far = got.iter().zip(want).any(|(g, w)| (g - w).abs() > 40.0);
    assert!(!far, "{what}: got {got:?}, want about {want:?}");
}

fn rejected(result: Result<impl std::fmt::Debug, ProcessError>) -> String {
    match result {
        Err(ProcessError::Rejected(reason)) => reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn jpeg_with_exif_orientation_6_and_gps_is_turned_upright_and_stripped() {
    let dir = tempfile::tempdir().unwrap();
    // 640×480 as stored: left half red, right half blue. Orientation 6 says "rotate 90° clockwise
    // to view", so upright it is 480×640 with red on top.
    let src = ffmpeg(
        dir.path(),
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=320x480",
            "-f",
            "lavfi",
            "-i",
            "color=c=blue:s=320x480",
            "-filter_complex",
            "[0][1]hstack",
            "-frames:v",
            "1",
            "-q:v",
            "2",
        ],
        "exif.jpg",
    );
    run(Command::new("exiftool")
        .args([
            "-q",
            "-overwrite_original",
            "-IFD0:Orientation#=6",
            "-GPSLatitude=48.8584",
            "-GPSLatitudeRef=N",
            "-GPSLongitude=2.2945",
            "-GPSLongitudeRef=E",
            "-XMP-dc:Title=where I live",
        ])
        .arg(&src));
    let tags = exif_tags(&src);
    assert_eq!(tags.get("IFD0:Orientation"), Some(&serde_json::json!(6)), "the test file has orientation 6: {tags:?}");
    assert!(tags.contains_key("GPS:GPSLatitude") && tags.contains_key("XMP-dc:Title"), "the test file has GPS and XMP");

    let out = process_image(&src, &ImageLimits::default()).expect("process");
    assert_eq!((out.width, out.height, out.orientation), (480, 640, 6));
    assert_variants(&out, (192, 256), (480, 640));
    assert_no_metadata(dir.path(), "thumb.webp", &out.thumb.bytes);
    assert_no_metadata(dir.path(), "preview.jpg", &out.preview.bytes);

    // Upright: red on top, blue at the bottom, in both variants.
    let (red, blue) = ([255.0, 0.0, 0.0], [0.0, 0.0, 255.0]);
    let (w, h, px) = decode_jpeg(&out.preview.bytes);
    assert_color(band_mean(&px, w, h, 3, (0.05, 0.4)), red, "preview top");
    assert_color(band_mean(&px, w, h, 3, (0.6, 0.95)), blue, "preview bottom");
    let thumb = decode_webp(&out.thumb.bytes);
    let (w, h) = (thumb.width() as usize, thumb.height() as usize);
    assert_color(band_mean(thumb.as_raw(), w, h, 4, (0.05, 0.4)), red, "thumb top");
    assert_color(band_mean(thumb.as_raw(), w, h, 4, (0.6, 0.95)), blue, "thumb bottom");

    let thumb = thumbnail(&src, &ImageLimits::default()).expect("thumbnail");
    assert_eq!((thumb.width, thumb.height), (192, 256));
    assert_no_metadata(dir.path(), "thumb-only.webp", &thumb.bytes);
}

#[test]
fn large_jpeg_is_shrunk_on_load_and_matches_the_full_decode() {
    let dir = tempfile::tempdir().unwrap();
    // 12 MP with detail: the preview decodes at 1/2, the thumb alone at 1/8.
    let src = ffmpeg(
        dir.path(),
        &["-f", "lavfi", "-i", "testsrc2=s=4000x3000", "-frames:v", "1", "-q:v", "3", "-pix_fmt", "yuvj420p"],
        "large.jpg",
    );
    let out = process_image(&src, &ImageLimits::default()).expect("process");
    assert_eq!((out.width, out.height, out.orientation), (4000, 3000, 1));
    assert_variants(&out, (256, 192), (1280, 960));
    let thumb = thumbnail(&src, &ImageLimits::default()).expect("thumbnail");
    assert_eq!((thumb.width, thumb.height), (256, 192));

    // The shrunk decode shows the same picture as the full one: compare 8×6 cell means of the
    // preview with those of the full-size pixels.
    let full = turbojpeg::decompress(&std::fs::read(&src).unwrap(), turbojpeg::PixelFormat::RGB).unwrap();
    let (pw, ph, preview) = decode_jpeg(&out.preview.bytes);
    let cells = |px: &[u8], w: usize, h: usize| -> Vec<f32> {
        let mut means = Vec::new();
        for cy in 0..6 {
            for cx in 0..8 {
                let mut sum = [0f64; 3];
                let (x0, x1, y0, y1) = (cx * w / 8, (cx + 1) * w / 8, cy * h / 6, (cy + 1) * h / 6);
                for y in (y0..y1).step_by(2) {
                    for x in (x0..x1).step_by(2) {
                        for c in 0..3 {
                            sum[c] += f64::from(px[(y * w + x) * 3 + c]);
                        }
                    }
                }
                let n = (y1 - y0).div_ceil(2) * (x1 - x0).div_ceil(2);
                means.extend(sum.map(|s| (s / n as f64) as f32));
            }
        }
        means
    };
    let (a, b) = (cells(&full.pixels, full.width, full.height), cells(&preview, pw, ph));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 12.0, "preview differs from the full decode by up to {worst} per channel");
}

#[test]
fn png_gif_webp_tiff_and_bmp_decode_through_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let testsrc = ["-f", "lavfi", "-i", "testsrc2=s=2000x1000", "-frames:v", "1"];
    let small = ["-f", "lavfi", "-i", "testsrc2=s=300x200", "-frames:v", "1"];
    // (file, original size, thumb size, preview size)
    let cases = [
        (ffmpeg(d, &testsrc, "wide.png"), (2000, 1000), (256, 128), (1280, 640)),
        (
            ffmpeg(d, &[&testsrc[..], &["-c:v", "libwebp", "-quality", "90"]].concat(), "wide.webp"),
            (2000, 1000),
            (256, 128),
            (1280, 640),
        ),
        (
            ffmpeg(d, &[&small[..], &["-c:v", "tiff", "-pix_fmt", "rgb24"]].concat(), "small.tif"),
            (300, 200),
            (256, 171),
            (300, 200),
        ),
        (ffmpeg(d, &[&small[..], &["-c:v", "bmp"]].concat(), "small.bmp"), (300, 200), (256, 171), (300, 200)),
    ];
    for (path, size, thumb, preview) in cases {
        let out = process_image(&path, &ImageLimits::default()).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!((out.width, out.height, out.orientation), (size.0, size.1, 1), "{path:?}");
        assert_variants(&out, thumb, preview);
    }
}

#[test]
fn png_with_alpha_keeps_it_in_the_thumb_and_is_flattened_on_white_in_the_preview() {
    let dir = tempfile::tempdir().unwrap();
    let src = ffmpeg(
        dir.path(),
        &["-f", "lavfi", "-i", "color=c=black@0.0:s=400x300,format=rgba", "-frames:v", "1", "-pix_fmt", "rgba"],
        "clear.png",
    );
    let out = process_image(&src, &ImageLimits::default()).expect("process");
    assert_variants(&out, (256, 192), (400, 300));
    let thumb = decode_webp(&out.thumb.bytes);
    assert!(thumb.pixels().all(|p| p[3] < 8), "thumb keeps transparency");
    let (w, h, px) = decode_jpeg(&out.preview.bytes);
    assert_color(band_mean(&px, w, h, 3, (0.0, 1.0)), [255.0, 255.0, 255.0], "preview of a transparent image");
}

#[test]
fn animated_gif_gives_its_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    // 0.4 s of red, then 0.4 s of blue.
    let src = ffmpeg(
        dir.path(),
        &[
            "-filter_complex",
            "color=c=red:s=300x200:r=5:d=0.4[a];color=c=blue:s=300x200:r=5:d=0.4[b];[a][b]concat=n=2:v=1:a=0",
            // A colour palette (ffmpeg would otherwise pick grey for a YUV source).
            "-pix_fmt",
            "rgb8",
        ],
        "anim.gif",
    );
    let frames = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&src)
        .output()
        .unwrap();
    let frames: u32 = String::from_utf8_lossy(&frames.stdout).trim().parse().unwrap();
    assert!(frames >= 2, "the GIF is animated ({frames} frames)");
    let out = process_image(&src, &ImageLimits::default()).expect("process");
    assert_variants(&out, (256, 171), (300, 200));
    let (w, h, px) = decode_jpeg(&out.preview.bytes);
    assert_color(band_mean(&px, w, h, 3, (0.0, 1.0)), [255.0, 0.0, 0.0], "first frame");
}

#[test]
fn a_one_pixel_image_is_never_upscaled() {
    let dir = tempfile::tempdir().unwrap();
    let dot = |format: &str, out: &str| {
        let filter = format!("scale=1:1,format={format}");
        ffmpeg(dir.path(), &["-f", "lavfi", "-i", "color=c=green:s=16x16", "-vf", &filter, "-frames:v", "1"], out)
    };
    let (png, jpg) = (dot("rgb24", "dot.png"), dot("yuvj444p", "dot.jpg"));
    for src in [png, jpg] {
        let out = process_image(&src, &ImageLimits::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!((out.width, out.height), (1, 1));
        assert_variants(&out, (1, 1), (1, 1));
        let thumb = thumbnail(&src, &ImageLimits::default()).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (1, 1));
    }
}

/// Peak resident memory of this process, KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn decompression_bombs_are_refused_from_their_header_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // PNG: a valid IHDR declaring 100000×100000 RGB (30 GB decoded), a tiny valid IDAT.
    let png = mediabus_testkit::png_declaring(100_000, 100_000);
    let png_path = dir.path().join("bomb.png");
    std::fs::write(&png_path, &png).unwrap();

    // JPEG: a real small JPEG whose frame header (SOF0) is patched to declare 65000×65000.
    let jpg_path = ffmpeg(dir.path(), &["-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1"], "small.jpg");
    let mut jpg = std::fs::read(&jpg_path).unwrap();
    let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    jpg[sof + 5..sof + 7].copy_from_slice(&65_000u16.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&65_000u16.to_be_bytes());
    std::fs::write(&jpg_path, &jpg).unwrap();

    let before = peak_rss_kib();
    for (path, declared) in [(&png_path, "100000×100000"), (&jpg_path, "65000×65000")] {
        let start = Instant::now();
        let reason = rejected(process_image(path, &ImageLimits::default()));
        assert_eq!(reason, format!("the image is {declared} pixels; the limit is 50 megapixels"));
        let reason = rejected(thumbnail(path, &ImageLimits::default()));
        assert!(reason.contains(declared), "{reason}");
        assert!(start.elapsed() < Duration::from_secs(2), "refused in {:?}", start.elapsed());
    }
    // Other tests run in this process at the same time, so only a gross allocation shows; the
    // declared images would take 30 GB and 12 GB.
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 512 * 1024, "peak RSS grew by {grown} KiB");
}

/// Bytes this thread has read through `read` syscalls so far (`rchar` of /proc/thread-self/io):
/// per thread, so the tests running at the same time do not count.
fn thread_bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A real JPEG declaring 65000×65000 in its frame header, with a sparse tail making the file
/// 150 MB (under the 200 MB a 50 MP JPEG may take, so its size alone does not refuse it): it is
/// refused from the header after reading a few KiB, not 150 MB into memory.
#[test]
fn a_large_jpeg_declaring_too_many_pixels_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = ffmpeg(dir.path(), &["-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1"], "huge.jpg");
    let mut jpg = std::fs::read(&path).unwrap();
    let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    jpg[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]); // 65000, 65000
    std::fs::write(&path, &jpg).unwrap();
    let len = 150_000_000;
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len).unwrap();

    let before = thread_bytes_read();
    let reason = rejected(process_image(&path, &ImageLimits::default()));
    let read = thread_bytes_read() - before;
    assert_eq!(reason, "the image is 65000×65000 pixels; the limit is 50 megapixels");
    assert!(read < 64 * 1024, "{read} of {len} bytes read");
}

#[test]
fn a_custom_pixel_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let src = ffmpeg(dir.path(), &["-f", "lavfi", "-i", "testsrc2=s=640x480", "-frames:v", "1"], "vga.png");
    let reason = rejected(process_image(&src, &ImageLimits { max_pixels: 100_000 }));
    assert_eq!(reason, "the image is 640×480 pixels; the limit is 100000 pixels");
    assert!(process_image(&src, &ImageLimits { max_pixels: 640 * 480 }).is_ok());
}

#[test]
fn truncated_corrupt_and_foreign_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let testsrc = ["-f", "lavfi", "-i", "testsrc2=s=640x480", "-frames:v", "1"];
    let jpg = std::fs::read(ffmpeg(d, &testsrc, "ok.jpg")).unwrap();
    let png = std::fs::read(ffmpeg(d, &testsrc, "ok.png")).unwrap();
    let gif = std::fs::read(ffmpeg(d, &testsrc, "ok.gif")).unwrap();
    let webp = std::fs::read(ffmpeg(d, &[&testsrc[..], &["-c:v", "libwebp"]].concat(), "ok.webp")).unwrap();
    let mut corrupt_png = png.clone();
    let middle = corrupt_png.len() / 2;
    corrupt_png[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0x5A);
    let cases: [(&str, Vec<u8>); 9] = [
        ("half.jpg", jpg[..jpg.len() / 2].to_vec()),
        ("header-only.jpg", jpg[..200].to_vec()),
        ("half.png", png[..png.len() / 2].to_vec()),
        ("corrupt.png", corrupt_png),
        ("half.gif", gif[..gif.len() / 3].to_vec()),
        ("half.webp", webp[..webp.len() / 2].to_vec()),
        ("empty.jpg", Vec::new()),
        ("text.png", b"this is not an image at all, just some words".to_vec()),
        ("magic-only.jpg", vec![0xFF, 0xD8, 0xFF]),
    ];
    for (name, bytes) in cases {
        let path = d.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let reason = rejected(process_image(&path, &ImageLimits::default()));
        assert!(!reason.is_empty() && !reason.contains(d.to_str().unwrap()), "{name}: {reason}");
        rejected(thumbnail(&path, &ImageLimits::default()));
    }
}

#[test]
fn a_missing_file_is_transient() {
    let result = process_image(Path::new("/nonexistent/mediabus/image.jpg"), &ImageLimits::default());
    assert!(matches!(result, Err(ProcessError::Transient(_))), "{result:?}");
}
