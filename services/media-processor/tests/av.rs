//! Video, audio and PDF processing on real files made here by real encoders: ffmpeg's lavfi
//! sources (`testsrc2`, `sine`) and fpdf2 from the project's `.venv` (both from `scripts/setup`).
//! Outputs are checked by reading them back with ffprobe/ffmpeg, not by trusting our own code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use media_processor::error::ProcessError;
use media_processor::video::{self, VideoLimits};
use media_processor::{audio, pdf};

/// Runs ffmpeg with `args` (quiet, overwrite), panicking with its stderr on failure.
fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-nostdin", "-y", "-v", "error"]).args(args).output().expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test video: `seconds` of `testsrc2` at `size` and 30 fps (+ a 440 Hz tone when `audio`).
fn make_video(dir: &Path, name: &str, size: &str, seconds: u32, audio: bool) -> PathBuf {
    let path = dir.join(name);
    let video = format!("testsrc2=size={size}:rate=30:duration={seconds}");
    let tone = format!("sine=frequency=440:sample_rate=48000:duration={seconds}");
    let mut args = vec!["-f", "lavfi", "-i", &video];
    if audio {
        args.extend(["-f", "lavfi", "-i", &tone, "-c:a", "aac"]);
    }
    args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path.to_str().unwrap()]);
    ffmpeg(&args);
    path
}

fn ffprobe(args: &[&str], path: &Path) -> String {
    let out = Command::new("ffprobe").args(["-v", "error"]).args(args).arg(path).output().expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {path:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `WIDTHxHEIGHT` of the first video stream of `path`.
fn frame_size(path: &Path) -> String {
    ffprobe(&["-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=s=x:p=0"], path)
        .trim()
        .to_owned()
}

fn rejected(result: Result<impl std::fmt::Debug, ProcessError>) -> String {
    match result {
        Err(ProcessError::Rejected(reason)) => reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// Parses `master.m3u8`: `(RESOLUTION, CODECS, uri, AVERAGE-BANDWIDTH)` per EXT-X-STREAM-INF,
/// checking BANDWIDTH (the peak) is at least the average.
fn master_entries(master: &str) -> Vec<(String, String, String, u64)> {
    assert!(master.starts_with("#EXTM3U\n"), "{master}");
    let lines: Vec<&str> = master.lines().collect();
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let attr = |key: &str| {
                let start = attrs.find(&format!("{key}=")).unwrap_or_else(|| panic!("{key} in {line}")) + key.len() + 1;
                let rest = &attrs[start..];
                let value = if let Some(quoted) = rest.strip_prefix('"') {
                    &quoted[..quoted.find('"').unwrap()]
                } else {
                    rest.split(',').next().unwrap()
                };
                value.to_owned()
            };
            let average: u64 = attr("AVERAGE-BANDWIDTH").parse().unwrap();
            assert!(average > 0 && attr("BANDWIDTH").parse::<u64>().unwrap() >= average, "{line}");
            entries.push((attr("RESOLUTION"), attr("CODECS"), lines[i + 1].to_owned(), average));
        }
    }
    entries
}

/// Checks one rendition: its playlist maps `init.mp4`, lists segments whose EXTINF add up to
/// `seconds` (±0.2 s), and every `init + segment` decodes with ffmpeg without an error. Returns
/// the segment count.
fn check_rendition(dir: &Path, seconds: f64, size: &str) -> usize {
    let playlist = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{playlist}");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let target: u32 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no target duration in {playlist}"));
    assert!((1..=4).contains(&target), "{playlist}");
    let init = std::fs::read(dir.join("init.mp4")).unwrap();
    let mut total = 0.0;
    let mut segments = 0;
    let lines: Vec<&str> = playlist.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(extinf) = line.strip_prefix("#EXTINF:") else { continue };
        total += extinf.trim_end_matches(',').parse::<f64>().unwrap();
        let uri = lines[i + 1];
        assert!(uri.starts_with("seg_") && uri.ends_with(".m4s") && !uri.contains('/'), "{uri}");
        let joined = dir.join(format!("check-{uri}.mp4"));
        let mut bytes = init.clone();
        bytes.extend(std::fs::read(dir.join(uri)).unwrap());
        std::fs::write(&joined, bytes).unwrap();
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&joined)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{uri}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(frame_size(&joined), size, "{uri}");
        if segments == 0 {
            // Closed 2 s GOPs: the first segment holds keyframes at 0 s and 2 s exactly.
            let keys = ffprobe(
                &[
                    "-select_streams",
                    "v:0",
                    "-skip_frame",
                    "nokey",
                    "-show_entries",
                    "frame=pts_time",
                    "-of",
                    "csv=p=0",
                ],
                &joined,
            );
            let keys: Vec<f64> = keys.lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect();
            assert_eq!(keys.len(), 2, "keyframes of {uri}: {keys:?}");
            assert!((keys[1] - keys[0] - 2.0).abs() < 0.05, "keyframes of {uri}: {keys:?}");
        }
        std::fs::remove_file(joined).unwrap();
        segments += 1;
    }
    assert!(segments > 0, "no segments in {playlist}");
    assert!((total - seconds).abs() < 0.2, "segments last {total} s, not {seconds}");
    segments
}

#[tokio::test]
async fn hd_video_gets_details_a_poster_and_a_two_rung_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "src.mp4", "1280x720", 10, true);

    let details = video::probe(&src, &VideoLimits::default()).await.unwrap();
    assert_eq!((details.width, details.height), (1280, 720));
    assert!(details.duration_ms.abs_diff(10_000) <= 100, "{details:?}");
    assert_eq!(details.frame_rate, 30.0);
    assert_eq!(details.video_codec, "h264");
    assert_eq!(details.audio_codec.as_deref(), Some("aac"));
    assert!(details.bitrate.is_some_and(|b| b > 0), "{details:?}");

    let poster = dir.path().join("poster.jpg");
    video::poster_frame(&src, &details, &poster).await.unwrap();
    assert_eq!(frame_size(&poster), "1280x720");
    let jpeg = std::fs::read(&poster).unwrap();
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let has = |needle: &[u8]| jpeg.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"Exif") && !has(b"Lavc"), "the poster carries metadata");

    let out = dir.path().join("hls");
    let seen = Mutex::new(Vec::new());
    let report = |f: f64| seen.lock().unwrap().push(f);
    let hls = video::transcode_hls(&src, &details, &out, &report).await.unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 2 && seen.windows(2).all(|w| w[0] <= w[1]), "progress {seen:?}");
    assert_eq!(seen.last(), Some(&1.0));

    assert_eq!(hls.renditions, [(1280, 720), (640, 360)]);
    assert_eq!(hls.files[0], Path::new("master.m3u8"));
    let mut listed: Vec<PathBuf> = hls.files.clone();
    listed.sort();
    let mut on_disk: Vec<PathBuf> =
        mediabus_testkit::files_under(&out).into_iter().map(|p| p.strip_prefix(&out).unwrap().to_owned()).collect();
    on_disk.sort();
    assert_eq!(listed, on_disk, "HlsOutput.files must list exactly the files written");
    for file in &hls.files {
        let name = file.to_str().unwrap();
        assert!(name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')), "{name}");
    }

    let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
    let entries = master_entries(&master);
    assert_eq!(entries.len(), 2, "{master}");
    assert_eq!(entries[0].0, "1280x720");
    assert_eq!(entries[0].2, "720p/index.m3u8");
    assert_eq!(entries[1].0, "640x360");
    assert_eq!(entries[1].2, "360p/index.m3u8");
    // Each rung near its own target (2800k and 800k of video; measured 2.91 and 0.90 Mb/s with
    // the audio and the container) and under its cap (VBV maxrate 3000k and 856k, plus 128k of
    // AAC, plus 10% for the container).
    let (hd, sd) = (entries[0].3, entries[1].3);
    assert!((2_000_000..=3_128_000 * 11 / 10).contains(&hd), "720p at {hd} b/s");
    assert!((500_000..=984_000 * 11 / 10).contains(&sd), "360p at {sd} b/s");
    for (resolution, codecs, uri, _) in &entries {
        assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{codecs}");
        let height: u32 = resolution.split('x').nth(1).unwrap().parse().unwrap();
        assert!(height <= details.height, "rung {resolution} above the source");
        let rung_dir = out.join(Path::new(uri).parent().unwrap());
        assert_eq!(check_rendition(&rung_dir, 10.0, resolution), 3);
    }
}

#[tokio::test]
async fn a_source_under_360p_gets_one_rung_at_its_own_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "small.mp4", "320x240", 3, true);
    let details = video::probe(&src, &VideoLimits::default()).await.unwrap();
    assert_eq!((details.width, details.height), (320, 240));
    let out = dir.path().join("hls");
    let hls = video::transcode_hls(&src, &details, &out, &|_| {}).await.unwrap();
    assert_eq!(hls.renditions, [(320, 240)]);
    let entries = master_entries(&std::fs::read_to_string(out.join("master.m3u8")).unwrap());
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].2.as_str()), ("320x240", "240p/index.m3u8"));
    check_rendition(&out.join("240p"), 3.0, "320x240");
}

#[tokio::test]
async fn a_phone_video_shot_upright_reports_its_display_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "landscape.mp4", "320x240", 1, false);
    // A display matrix of 90°, as phones write for portrait videos.
    let rotated = dir.path().join("portrait.mp4");
    let (src, out) = (src.to_str().unwrap(), rotated.to_str().unwrap());
    ffmpeg(&["-i", src, "-c", "copy", "-metadata:s:v", "rotate=90", out]);
    let details = video::probe(&rotated, &VideoLimits::default()).await.unwrap();
    assert_eq!((details.width, details.height), (240, 320));
    let poster = dir.path().join("poster.jpg");
    video::poster_frame(&rotated, &details, &poster).await.unwrap();
    assert_eq!(frame_size(&poster), "240x320");
}

#[tokio::test]
async fn a_video_without_audio_gets_video_only_renditions() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "silent.mp4", "640x360", 3, false);
    let details = video::probe(&src, &VideoLimits::default()).await.unwrap();
    assert_eq!(details.audio_codec, None);
    let poster = dir.path().join("poster.jpg");
    video::poster_frame(&src, &details, &poster).await.unwrap();
    assert_eq!(frame_size(&poster), "640x360");
    let out = dir.path().join("hls");
    let hls = video::transcode_hls(&src, &details, &out, &|_| {}).await.unwrap();
    assert_eq!(hls.renditions, [(640, 360)]);
    let entries = master_entries(&std::fs::read_to_string(out.join("master.m3u8")).unwrap());
    assert_eq!(entries.len(), 1);
    assert!(entries[0].1.starts_with("avc1.") && !entries[0].1.contains("mp4a"), "{entries:?}");
    check_rendition(&out.join("360p"), 3.0, "640x360");
}

#[tokio::test]
async fn truncated_and_foreign_files_are_rejected_before_transcoding() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_video(dir.path(), "clip.mp4", "320x240", 3, true);
    let bytes = std::fs::read(&src).unwrap();

    // Index (moov) at the end, as ffmpeg and most cameras write it: the tail is gone.
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let reason = rejected(video::probe(&cut, &VideoLimits::default()).await);
    assert!(reason.contains("not a readable video"), "{reason}");
    assert!(!reason.contains(dir.path().to_str().unwrap()), "the reason leaks the host path: {reason}");

    // Index first (`-movflags +faststart`, as streaming-ready files are): it still probes fine.
    let faststart = dir.path().join("faststart.mp4");
    ffmpeg(&["-i", src.to_str().unwrap(), "-c", "copy", "-movflags", "+faststart", faststart.to_str().unwrap()]);
    let bytes = std::fs::read(&faststart).unwrap();
    let cut = dir.path().join("cut-faststart.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let reason = rejected(video::probe(&cut, &VideoLimits::default()).await);
    assert!(reason.contains("truncated"), "{reason}");
    // …while the whole file passes.
    video::probe(&faststart, &VideoLimits::default()).await.unwrap();

    let reason = rejected(video::probe(&src, &VideoLimits { max_duration_ms: 2_000, ..VideoLimits::default() }).await);
    assert!(reason.contains("0:00:03") && reason.contains("limit"), "{reason}");
    let reason = rejected(video::probe(&src, &VideoLimits { max_pixels: 320 * 200, ..VideoLimits::default() }).await);
    assert!(reason.contains("320×240"), "{reason}");

    let wav = dir.path().join("tone.wav");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=1", wav.to_str().unwrap()]);
    assert!(rejected(video::probe(&wav, &VideoLimits::default()).await).contains("no video stream"));
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video at all\n").unwrap();
    rejected(video::probe(&text, &VideoLimits::default()).await);
}

#[tokio::test]
async fn wav_and_mp3_details() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5", wav.to_str().unwrap()]);
    let d = audio::probe(&wav).await.unwrap();
    assert_eq!((d.audio_codec.as_str(), d.sample_rate, d.channels), ("pcm_s16le", 44_100, 1), "{d:?}");
    assert!(d.duration_ms.abs_diff(1_500) <= 10, "{d:?}");
    assert_eq!(d.bitrate, Some(705_600));

    let mp3 = dir.path().join("tone.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=2",
        "-ac",
        "2",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        mp3.to_str().unwrap(),
    ]);
    let d = audio::probe(&mp3).await.unwrap();
    assert_eq!((d.audio_codec.as_str(), d.sample_rate, d.channels), ("mp3", 48_000, 2), "{d:?}");
    assert!(d.duration_ms.abs_diff(2_000) <= 100, "{d:?}");
    assert!(d.bitrate.is_some_and(|b| b.abs_diff(128_000) <= 8_000), "{d:?}");

    let silent = make_video(dir.path(), "silent.mp4", "160x120", 1, false);
    assert!(rejected(audio::probe(&silent).await).contains("no audio stream"));
    let noise = dir.path().join("noise.mp3");
    std::fs::write(&noise, [0u8; 64]).unwrap();
    rejected(audio::probe(&noise).await);
}

/// Runs ffmpeg writing to a pipe (`args` end with `-f <format> -`) and saves what it wrote to
/// `path`: a muxer that cannot seek back declares no duration, like a browser's MediaRecorder.
fn ffmpeg_piped(args: &[&str], path: &Path) {
    let out = Command::new("ffmpeg").args(["-nostdin", "-v", "error"]).args(args).output().expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(path, out.stdout).unwrap();
}

#[tokio::test]
async fn recordings_without_a_declared_duration_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    let video_args = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2", "-c:v", "libx264"];
    let mkv = dir.path().join("recording.mkv");
    ffmpeg_piped(&[&video_args[..], &["-preset", "ultrafast", "-f", "matroska", "-"]].concat(), &mkv);
    let declared = ffprobe(&["-show_entries", "format=duration", "-of", "csv=p=0"], &mkv);
    assert!(declared.trim().is_empty() || declared.contains("N/A"), "the fixture declares {declared}");
    let details = video::probe(&mkv, &VideoLimits::default()).await.unwrap();
    assert!(details.duration_ms.abs_diff(2_000) <= 100, "{details:?}");
    let reason = rejected(video::probe(&mkv, &VideoLimits { max_duration_ms: 1_000, ..VideoLimits::default() }).await);
    assert!(reason.contains("limit"), "{reason}");

    let webm = dir.path().join("voice.webm");
    let tone = "sine=frequency=440:sample_rate=48000:duration=2";
    ffmpeg_piped(&["-f", "lavfi", "-i", tone, "-c:a", "libopus", "-f", "webm", "-"], &webm);
    let declared = ffprobe(&["-show_entries", "format=duration", "-of", "csv=p=0"], &webm);
    assert!(declared.trim().is_empty() || declared.contains("N/A"), "the fixture declares {declared}");
    let d = audio::probe(&webm).await.unwrap();
    assert_eq!((d.audio_codec.as_str(), d.sample_rate), ("opus", 48_000), "{d:?}");
    assert!(d.duration_ms.abs_diff(2_000) <= 100, "{d:?}");
}

/// Writes a PDF with fpdf2 (the `.venv` of `scripts/setup`): `pages` A4 pages, encrypted with a
/// user password when `password` is set.
fn make_pdf(path: &Path, pages: u32, password: Option<&str>) {
    let python = mediabus_testkit::repo_root().join(".venv/bin/python");
    let script = "import sys\nfrom fpdf import FPDF\npdf = FPDF()\n\
                  if sys.argv[3]: pdf.set_encryption(owner_password='owner', user_password=sys.argv[3])\n\
                  for i in range(int(sys.argv[2])):\n    pdf.add_page()\n    pdf.set_font('helvetica', size=24)\n    \
                  pdf.cell(text=f'page {i + 1}')\npdf.output(sys.argv[1])\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(path)
        .arg(pages.to_string())
        .arg(password.unwrap_or(""))
        .output()
        .expect("run .venv python (scripts/setup)");
    assert!(out.status.success(), "fpdf2: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn pdf_details_and_first_page() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.pdf");
    make_pdf(&doc, 3, None);
    let d = pdf::probe(&doc).await.unwrap();
    assert_eq!(d.page_count, 3);
    assert!((d.width - 595.28).abs() < 0.1 && (d.height - 841.89).abs() < 0.1, "{d:?}");

    let png = dir.path().join("page1.png");
    pdf::render_first_page(&doc, &png, 512).await.unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!(h, 512, "longer side scaled to 512");
    assert!(w.abs_diff(362) <= 1, "A4 aspect ratio: {w}x{h}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no render leftovers");

    let broken = dir.path().join("broken.pdf");
    std::fs::write(&broken, &std::fs::read(&doc).unwrap()[..300]).unwrap();
    rejected(pdf::probe(&broken).await);
    rejected(pdf::render_first_page(&broken, &dir.path().join("x.png"), 256).await);
    assert!(!dir.path().join("x.png").exists());

    let locked = dir.path().join("locked.pdf");
    make_pdf(&locked, 1, Some("secret"));
    assert_eq!(rejected(pdf::probe(&locked).await), "the PDF is password-protected");
    assert_eq!(rejected(pdf::render_first_page(&locked, &png, 256).await), "the PDF is password-protected");
}
