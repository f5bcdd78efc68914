//! Video (DESIGN §9): `details` from ffprobe, a poster frame, and fMP4 HLS renditions, all by
//! ffmpeg/ffprobe child processes (Debian's, installed by `scripts/setup`).
//!
//! Order the runtime follows: [`probe`] first — it refuses corrupt, truncated and over-limit files
//! before anything is decoded — then [`poster_frame`] and [`transcode_hls`].
//!
//! HLS layout under `out_dir` (names are blob-store keys under `variants/<id>/hls/`, so lowercase
//! `[a-z0-9._-]` only, and playlists reference files by relative paths):
//! ```text
//! master.m3u8                 one EXT-X-STREAM-INF per rendition (BANDWIDTH, RESOLUTION, CODECS)
//! 720p/index.m3u8             VOD media playlist, EXT-X-MAP init.mp4, 4 s segments
//! 720p/init.mp4               fMP4 init segment (moov)
//! 720p/seg_00000.m4s …        fMP4 media segments, each starting on a closed GOP
//! 360p/…
//! ```
//! The ladder: 720p (2.8 Mb/s, peak 3 Mb/s) and 360p (0.8 Mb/s), only rungs at or under the
//! source height, and one rung at source size when the source is under 360p. Keyframes every 2 s
//! (forced, no scene-cut keyframes) so every 4 s segment of every rung starts at the same instant
//! and players switch renditions cleanly. One ffmpeg process decodes the source once and encodes
//! all rungs (`split` + `-var_stream_map`).

pub(crate) mod tool;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{ProcessError, Result};
use tool::{Probe, Stdout, file_url, host_fault, owner_reason};

/// Limits checked by [`probe`] before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLimits {
    /// Longest accepted duration, milliseconds. Default: 4 h.
    pub max_duration_ms: u64,
    /// Largest accepted frame, pixels (coded width × height). Default: 8 294 400 (3840×2160).
    pub max_pixels: u64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        Self { max_duration_ms: 4 * 3600 * 1000, max_pixels: 3840 * 2160 }
    }
}

/// Video `details` of DESIGN §9, as JSON:
/// `{width, height, durationMs, frameRate, videoCodec, audioCodec, bitrate}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoDetails {
    /// Display width, pixels: rotation (phone videos) and non-square pixels applied.
    pub width: u32,
    /// Display height, pixels.
    pub height: u32,
    /// Duration of the container, milliseconds.
    pub duration_ms: u64,
    /// Frames per second (average, else nominal), 3 decimals; 0 when unknown.
    pub frame_rate: f64,
    /// ffmpeg's codec name of the video stream (`h264`, `hevc`, `vp9`…).
    pub video_codec: String,
    /// ffmpeg's codec name of the first audio stream (`aac`, `opus`…), if any.
    pub audio_codec: Option<String>,
    /// Overall bitrate, bits per second, when the container tells.
    pub bitrate: Option<u64>,
}

/// What [`transcode_hls`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsOutput {
    /// Every file, relative to `out_dir` (`master.m3u8`, `720p/index.m3u8`, `720p/init.mp4`,
    /// `720p/seg_00000.m4s`…), master first.
    pub files: Vec<PathBuf>,
    /// `(width, height)` of each rendition, highest first.
    pub renditions: Vec<(u32, u32)>,
}

/// Reads `path`'s streams with ffprobe and checks them against `limits`.
///
/// Errors ([`ProcessError::Rejected`], with a reason for the owner): not a media file, a corrupt or
/// truncated container (a truncated MP4 whose index survived is caught by reading its last second),
/// no video stream (cover art does not count), unknown duration, longer than
/// `limits.max_duration_ms`, more pixels than `limits.max_pixels`. ffprobe missing →
/// [`ProcessError::Transient`].
pub async fn probe(path: &Path, limits: &VideoLimits) -> Result<VideoDetails> {
    let probe = tool::ffprobe(path, "video").await?;
    if declared_duration_ms(&probe).is_some() {
        let details = details_from_probe(&probe, limits, None)?;
        let start = tool::seconds(probe.format.start_time.as_deref()).unwrap_or(0.0);
        check_complete(path, start, details.duration_ms).await?;
        return Ok(details);
    }
    // Nothing declared: measure the packets (which also proves they are there). The stream
    // checks come first so a file without video is not read whole for nothing.
    details_from_probe(&probe, limits, Some(0))?;
    let measured = tool::measured_duration_ms(path).await?;
    details_from_probe(&probe, limits, measured)
}

/// The duration the container (else the video stream) declares, milliseconds.
fn declared_duration_ms(probe: &Probe) -> Option<u64> {
    let video = probe.streams.iter().find(|s| s.is("video") && s.disposition.attached_pic == 0);
    tool::millis(probe.format.duration.as_deref())
        .or_else(|| video.and_then(|v| tool::millis(v.duration.as_deref())))
        .filter(|ms| *ms > 0)
}

/// [`VideoDetails`] out of ffprobe's JSON, with the limits of [`probe`] applied; `measured_ms`
/// stands for the duration when the file declares none (`Some(0)`: check the rest only).
fn details_from_probe(probe: &Probe, limits: &VideoLimits, measured_ms: Option<u64>) -> Result<VideoDetails> {
    let video = probe
        .streams
        .iter()
        .find(|s| s.is("video") && s.disposition.attached_pic == 0)
        .ok_or_else(|| ProcessError::rejected("the file has no video stream"))?;
    let (coded_w, coded_h) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(ProcessError::rejected("the video's frame size cannot be read")),
    };
    let duration_ms = match (declared_duration_ms(probe), measured_ms) {
        (Some(ms), _) | (None, Some(ms)) => ms,
        (None, None) => return Err(ProcessError::rejected("the video's duration cannot be read")),
    };
    if duration_ms > limits.max_duration_ms {
        return Err(ProcessError::rejected(format!(
            "the video lasts {}, over the limit of {}",
            clock(duration_ms),
            clock(limits.max_duration_ms)
        )));
    }
    let pixels = u64::from(coded_w) * u64::from(coded_h);
    if pixels > limits.max_pixels {
        return Err(ProcessError::rejected(format!(
            "the video is {coded_w}×{coded_h} pixels, over the limit of {} pixels per frame",
            limits.max_pixels
        )));
    }
    // Non-square pixels stretch the width on display; a 90° display matrix swaps the sides.
    let sar = tool::ratio(video.sample_aspect_ratio.as_deref()).unwrap_or(1.0);
    let display_w = ((f64::from(coded_w) * sar).round() as u32).max(1);
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|d| d.rotation)
        .or_else(|| video.tags.rotate.as_deref().and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0);
    let quarter_turns = (rotation / 90.0).round() as i64;
    let (width, height) = if quarter_turns.rem_euclid(2) == 1 { (coded_h, display_w) } else { (display_w, coded_h) };
    let frame_rate = tool::ratio(video.avg_frame_rate.as_deref())
        .or_else(|| tool::ratio(video.r_frame_rate.as_deref()))
        .map_or(0.0, |r| (r * 1000.0).round() / 1000.0);
    let audio_codec = probe.streams.iter().find(|s| s.is("audio")).and_then(|s| s.codec_name.clone());
    Ok(VideoDetails {
        width,
        height,
        duration_ms,
        frame_rate,
        video_codec: video.codec_name.clone().unwrap_or_else(|| "unknown".to_owned()),
        audio_codec,
        bitrate: tool::integer(probe.format.bit_rate.as_deref()),
    })
}

/// `h:mm:ss` for reasons shown to owners.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// How far short of its declared end a file's data may stop (priming, rounding of muxers).
const END_TOLERANCE_S: f64 = 1.0;
/// Packets read at most by [`check_complete`]; a file whose last keyframe is further back than
/// that (all-inter streams) is not checked rather than read whole.
const END_PACKETS: usize = 5000;

/// Refuses a file whose data stops before its declared duration: an MP4 with its index (`moov`)
/// first that lost its tail still probes fine, so ffprobe seeks to the last second and lists the
/// packets it can actually read there.
async fn check_complete(path: &Path, start_s: f64, duration_ms: u64) -> Result<()> {
    let end = start_s + duration_ms as f64 / 1000.0;
    let seek = (end - END_TOLERANCE_S).max(start_s);
    let args: Vec<OsString> = [
        "-v".to_owned(),
        "error".to_owned(),
        "-hide_banner".to_owned(),
        "-read_intervals".to_owned(),
        format!("{seek:.3}%+#{END_PACKETS}"),
        "-show_entries".to_owned(),
        "packet=pts_time,duration_time".to_owned(),
        "-print_format".to_owned(),
        "compact=p=0".to_owned(),
    ]
    .into_iter()
    .map(OsString::from)
    .chain([file_url(path)])
    .collect();
    let done = tool::run("ffprobe", &args, Some(Duration::from_secs(60)), "reading the file", Stdout::Collect).await?;
    if !done.status.success() {
        return Err(ProcessError::rejected(format!(
            "the file is not a readable video ({})",
            owner_reason(&done.stderr, path)
        )));
    }
    let text = String::from_utf8_lossy(&done.stdout);
    let (packets, last) = packets_end(&text);
    if packets >= END_PACKETS {
        return Ok(());
    }
    match last {
        Some(last) if last >= end - END_TOLERANCE_S => Ok(()),
        Some(last) => Err(ProcessError::rejected(format!(
            "the video is truncated: its data stops at {:.1} s of {:.1} s",
            (last - start_s).max(0.0),
            end - start_s
        ))),
        None => Err(ProcessError::rejected("the video is truncated: its last second cannot be read")),
    }
}

/// Packets listed in ffprobe's `compact=p=0` output (`pts_time=8.32|duration_time=0.02`) and the
/// latest end time among them, seconds.
fn packets_end(text: &str) -> (usize, Option<f64>) {
    let mut count = 0;
    let mut last: Option<f64> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        count += 1;
        if let Some((pts, duration)) = tool::packet_times(line) {
            last = Some(last.map_or(pts + duration, |l| l.max(pts + duration)));
        }
    }
    (count, last)
}

/// Writes one frame of `src` at about 10 % of its duration (at least 1 s in, clamped into the
/// video) to `out_jpeg`: baseline JPEG at display size, rotation applied, no metadata (no EXIF,
/// no encoder comment). Falls back to the first frame when the seek lands past the last one.
///
/// Errors: no frame can be decoded → [`ProcessError::Rejected`]; ffmpeg missing, I/O →
/// [`ProcessError::Transient`].
pub async fn poster_frame(src: &Path, details: &VideoDetails, out_jpeg: &Path) -> Result<()> {
    let at_ms = poster_time_ms(details.duration_ms);
    for at in [at_ms, 0] {
        let _ = tokio::fs::remove_file(out_jpeg).await;
        let args = poster_args(src, at, out_jpeg);
        let done =
            tool::run("ffmpeg", &args, Some(Duration::from_secs(120)), "extracting a frame", Stdout::Collect).await?;
        let written = tokio::fs::metadata(out_jpeg).await.map(|m| m.len() > 0).unwrap_or(false);
        if done.status.success() && written {
            return Ok(());
        }
        if host_fault(&done.stderr) {
            return Err(ProcessError::transient(format!("ffmpeg poster frame: {}", owner_reason(&done.stderr, src))));
        }
        if at == 0 {
            return Err(ProcessError::rejected(format!(
                "no frame of the video could be decoded ({})",
                owner_reason(&done.stderr, src)
            )));
        }
    }
    unreachable!("the loop returns at its last step")
}

/// Where the poster frame is taken, milliseconds: 10 % in, but at least 1 s (or half of a video
/// shorter than 2 s), never within the last 100 ms.
fn poster_time_ms(duration_ms: u64) -> u64 {
    let at = (duration_ms / 10).max(1000.min(duration_ms / 2));
    at.min(duration_ms.saturating_sub(100))
}

/// ffmpeg's arguments for [`poster_frame`].
fn poster_args(src: &Path, at_ms: u64, out_jpeg: &Path) -> Vec<OsString> {
    let at = format!("{}.{:03}", at_ms / 1000, at_ms % 1000);
    let mut args: Vec<OsString> =
        ["-nostdin", "-hide_banner", "-v", "error", "-y", "-ss", &at, "-i"].into_iter().map(OsString::from).collect();
    args.push(file_url(src));
    args.extend(
        [
            "-map",
            "0:V:0",
            "-frames:v",
            "1",
            "-map_metadata",
            "-1",
            // Non-square pixels: stretch to the display width (rotation is applied by ffmpeg).
            "-vf",
            "scale=iw*sar:ih,setsar=1",
            // bitexact: no "Lavc…" comment segment in the JPEG.
            "-flags:v",
            "+bitexact",
            "-q:v",
            "2",
            "-f",
            "image2",
            // A single image, never a file-name pattern.
            "-update",
            "1",
        ]
        .map(OsString::from),
    );
    args.push(file_url(out_jpeg));
    args
}

/// One rendition of the HLS ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Pixels, even.
    pub width: u32,
    /// Pixels, even; also the rendition's directory name (`<height>p`).
    pub height: u32,
    /// Target video bitrate, kb/s.
    pub video_kbps: u32,
    /// Peak video bitrate (VBV maxrate), kb/s; the VBV buffer holds 2 s of it.
    pub max_kbps: u32,
}

/// AAC bitrate of every rendition, kb/s (stereo).
pub const AUDIO_KBPS: u32 = 128;
/// Target segment length, seconds.
pub const SEGMENT_SECONDS: u32 = 4;
/// Keyframe interval, seconds (two per segment).
pub const GOP_SECONDS: u32 = 2;
/// x264 preset: `veryfast` keeps a 1080p source faster than real time on two cores.
pub const X264_PRESET: &str = "veryfast";

/// The fixed ladder, highest first: `(height, kb/s, peak kb/s)`.
const LADDER: [(u32, u32, u32); 2] = [(720, 2800, 3000), (360, 800, 856)];

/// Renditions for a `width`×`height` (display) source: every rung of 720p and 360p at or under
/// the source height, widths following the aspect ratio (rounded to even); a source under 360p
/// gets one rung at its own size (rounded down to even), its bitrate scaled by area from 360p's.
///
/// # Examples
/// ```
/// use media_processor::video::ladder;
/// let sizes = |w, h| ladder(w, h).iter().map(|r| (r.width, r.height)).collect::<Vec<_>>();
/// assert_eq!(sizes(1920, 1080), [(1280, 720), (640, 360)]);
/// assert_eq!(sizes(854, 480), [(640, 360)]);
/// assert_eq!(sizes(321, 241), [(320, 240)]);
/// ```
pub fn ladder(width: u32, height: u32) -> Vec<Rung> {
    let aspect = f64::from(width.max(1)) / f64::from(height.max(1));
    let rungs: Vec<Rung> = LADDER
        .iter()
        .filter(|(h, _, _)| *h <= height)
        .map(|&(h, kbps, max)| Rung {
            width: ((f64::from(h) * aspect / 2.0).round() as u32 * 2).max(2),
            height: h,
            video_kbps: kbps,
            max_kbps: max,
        })
        .collect();
    if !rungs.is_empty() {
        return rungs;
    }
    let (w, h) = ((width / 2 * 2).max(2), (height / 2 * 2).max(2));
    let (_, base_kbps, base_max) = LADDER[LADDER.len() - 1];
    let area = f64::from(w) * f64::from(h) / (640.0 * 360.0);
    let scale = |kbps: u32| ((f64::from(kbps) * area).round() as u32).clamp(150, kbps);
    vec![Rung { width: w, height: h, video_kbps: scale(base_kbps), max_kbps: scale(base_max) }]
}

/// ffmpeg's arguments for [`transcode_hls`], run with `out_dir` as working directory (the HLS
/// muxer's `%v` patterns are relative to it). `src` must be absolute.
pub fn hls_args(src: &Path, details: &VideoDetails, rungs: &[Rung]) -> Vec<OsString> {
    let audio = details.audio_codec.is_some();
    let mut out: Vec<OsString> =
        ["-nostdin", "-hide_banner", "-v", "error", "-nostats", "-y", "-i"].map(OsString::from).to_vec();
    out.push(file_url(src));
    // Decode once, scale per rung; `V` skips cover-art pictures.
    let mut graph = format!("[0:V:0]split={}", rungs.len());
    for i in 0..rungs.len() {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, r) in rungs.iter().enumerate() {
        graph.push_str(&format!(";[s{i}]scale={}:{},setsar=1,format=yuv420p[v{i}]", r.width, r.height));
    }
    let mut rest: Vec<String> = vec!["-filter_complex".into(), graph];
    for i in 0..rungs.len() {
        rest.extend(["-map".into(), format!("[v{i}]")]);
        if audio {
            rest.extend(["-map".into(), "0:a:0".into()]);
        }
    }
    rest.extend(["-c:v", "libx264", "-preset", X264_PRESET, "-profile:v", "high"].map(str::to_owned));
    for (i, r) in rungs.iter().enumerate() {
        rest.extend([
            format!("-b:v:{i}"),
            format!("{}k", r.video_kbps),
            format!("-maxrate:v:{i}"),
            format!("{}k", r.max_kbps),
            format!("-bufsize:v:{i}"),
            format!("{}k", r.max_kbps * 2),
        ]);
    }
    if details.frame_rate > 0.0 {
        let gop = ((details.frame_rate * f64::from(GOP_SECONDS)).round() as u32).max(1).to_string();
        rest.extend(["-g".into(), gop.clone(), "-keyint_min".into(), gop]);
    }
    rest.extend([
        "-sc_threshold".into(),
        "0".into(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{GOP_SECONDS})"),
    ]);
    if audio {
        rest.extend(["-c:a".into(), "aac".into(), "-b:a".into(), format!("{AUDIO_KBPS}k"), "-ac".into(), "2".into()]);
    }
    let stream_map: Vec<String> = rungs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let audio_stream = if audio { format!(",a:{i}") } else { String::new() };
            format!("v:{i}{audio_stream},name:{}p", r.height)
        })
        .collect();
    rest.extend([
        "-f".into(),
        "hls".into(),
        "-hls_time".into(),
        SEGMENT_SECONDS.to_string(),
        "-hls_playlist_type".into(),
        "vod".into(),
        "-hls_segment_type".into(),
        "fmp4".into(),
        "-hls_flags".into(),
        "independent_segments".into(),
        "-hls_fmp4_init_filename".into(),
        "init.mp4".into(),
        "-hls_segment_filename".into(),
        "%v/seg_%05d.m4s".into(),
        "-var_stream_map".into(),
        stream_map.join(" "),
        "-progress".into(),
        "pipe:1".into(),
        "%v/index.m3u8".into(),
    ]);
    out.extend(rest.into_iter().map(OsString::from));
    out
}

/// Transcodes `src` (already accepted by [`probe`], whose `details` drive the ladder) into fMP4
/// HLS under `out_dir` (created if missing), see the module docs for the layout. `progress`
/// receives the fraction done, 0..=1, from ffmpeg's `-progress` output (`out_time_us` against the
/// duration), at most about once per percent.
///
/// No time limit of its own: the runtime's per-job timeout drops this future, which kills ffmpeg.
///
/// Errors: ffmpeg fails on the input → [`ProcessError::Rejected`] with its reason; ffmpeg missing,
/// killed, out of disk or memory, or an output the playlist check does not accept →
/// [`ProcessError::Transient`].
pub async fn transcode_hls(
    src: &Path,
    details: &VideoDetails,
    out_dir: &Path,
    progress: &(dyn Fn(f64) + Send + Sync),
) -> Result<HlsOutput> {
    let rungs = ladder(details.width, details.height);
    let src = std::path::absolute(src)?;
    tokio::fs::create_dir_all(out_dir).await?;
    let args = hls_args(&src, details, &rungs);
    let total_us = details.duration_ms.max(1) as f64 * 1000.0;
    let mut reported = 0.0_f64;
    let mut on_line = |line: &str| {
        let fraction = if line == "progress=end" {
            1.0
        } else if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.trim().parse::<i64>().ok()) {
            (us.max(0) as f64 / total_us).clamp(0.0, 1.0)
        } else {
            return;
        };
        if fraction >= reported + 0.01 || (fraction >= 1.0 && reported < 1.0) {
            reported = fraction;
            progress(fraction);
        }
    };
    let done = tool::run_in(Some(out_dir), "ffmpeg", &args, None, "transcoding", Stdout::Lines(&mut on_line)).await?;
    if !done.status.success() {
        let reason = owner_reason(&done.stderr, &src);
        if done.status.code().is_none() || host_fault(&done.stderr) {
            return Err(ProcessError::transient(format!("ffmpeg HLS ({}): {reason}", done.status)));
        }
        return Err(ProcessError::rejected(format!("the video could not be transcoded ({reason})")));
    }
    finish_hls(out_dir, &rungs, details.frame_rate, details.audio_codec.is_some()).await
}

/// After ffmpeg: gives every rung the fixed `init.mp4` name (ffmpeg numbers init files when it
/// writes several variants), checks each media playlist, and writes `master.m3u8` with measured
/// BANDWIDTH/AVERAGE-BANDWIDTH and CODECS read from each init segment's `avcC` box.
async fn finish_hls(out_dir: &Path, rungs: &[Rung], frame_rate: f64, audio: bool) -> Result<HlsOutput> {
    let mut files = vec![PathBuf::from("master.m3u8")];
    let mut master = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (i, rung) in rungs.iter().enumerate() {
        let name = format!("{}p", rung.height);
        let dir = out_dir.join(&name);
        let numbered = format!("init_{i}.mp4");
        if tokio::fs::try_exists(dir.join(&numbered)).await? {
            tokio::fs::rename(dir.join(&numbered), dir.join("init.mp4")).await?;
        }
        let playlist = tokio::fs::read_to_string(dir.join("index.m3u8")).await?;
        let playlist = playlist.replace(&format!("URI=\"{numbered}\""), "URI=\"init.mp4\"");
        tokio::fs::write(dir.join("index.m3u8"), &playlist).await?;
        let segments = media_segments(&playlist)
            .ok_or_else(|| ProcessError::transient(format!("ffmpeg wrote an unexpected playlist for {name}")))?;
        let init = tokio::fs::read(dir.join("init.mp4")).await?;
        let codec = avc1_codec(&init)
            .ok_or_else(|| ProcessError::transient(format!("no avcC box in the {name} init segment")))?;
        let (mut total_bytes, mut total_s, mut peak_bps) = (init.len() as f64, 0.0, 0.0_f64);
        files.push(PathBuf::from(format!("{name}/index.m3u8")));
        files.push(PathBuf::from(format!("{name}/init.mp4")));
        for (uri, seconds) in &segments {
            let bytes = tokio::fs::metadata(dir.join(uri)).await?.len() as f64;
            total_bytes += bytes;
            total_s += seconds;
            if *seconds > 0.0 {
                peak_bps = peak_bps.max(bytes * 8.0 / seconds);
            }
            files.push(PathBuf::from(format!("{name}/{uri}")));
        }
        let average = if total_s > 0.0 { total_bytes * 8.0 / total_s } else { peak_bps };
        let codecs = if audio { format!("{codec},mp4a.40.2") } else { codec };
        let rate = if frame_rate > 0.0 { format!(",FRAME-RATE={frame_rate:.3}") } else { String::new() };
        master.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{}{rate},CODECS=\"{codecs}\"\n{name}/index.m3u8\n",
            peak_bps.max(average).ceil() as u64,
            average.ceil() as u64,
            rung.width,
            rung.height,
        ));
    }
    tokio::fs::write(out_dir.join("master.m3u8"), master).await?;
    if let Some(bad) = files.iter().find(|f| !safe_key(f)) {
        return Err(ProcessError::transient(format!("HLS file name not usable as a key: {}", bad.display())));
    }
    Ok(HlsOutput { files, renditions: rungs.iter().map(|r| (r.width, r.height)).collect() })
}

/// `(uri, seconds)` of each media segment of a VOD media playlist; `None` unless it has an
/// `EXT-X-MAP` of `init.mp4`, at least one segment, an end tag, and only plain relative names.
fn media_segments(playlist: &str) -> Option<Vec<(String, f64)>> {
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    let (mut map, mut end) = (false, false);
    for line in playlist.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            pending = Some(v.split(',').next()?.trim().parse().ok()?);
        } else if line == "#EXT-X-MAP:URI=\"init.mp4\"" {
            map = true;
        } else if line == "#EXT-X-ENDLIST" {
            end = true;
        } else if !line.starts_with('#') {
            let seconds = pending.take()?;
            if line.contains('/') || !safe_key(Path::new(line)) {
                return None;
            }
            segments.push((line.to_owned(), seconds));
        }
    }
    (map && end && !segments.is_empty()).then_some(segments)
}

/// Every component of `path` is lowercase `[a-z0-9._-]`, not `.` or `..`.
fn safe_key(path: &Path) -> bool {
    path.components().all(|c| match c {
        std::path::Component::Normal(s) => s.to_str().is_some_and(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        }),
        _ => false,
    })
}

/// RFC 6381 codec string (`avc1.64001f`) out of the `avcC` box of an fMP4 init segment: profile,
/// constraint flags and level are its bytes 1..4.
fn avc1_codec(init: &[u8]) -> Option<String> {
    let at = init.windows(4).position(|w| w == b"avcC")? + 4;
    let b = init.get(at..at + 4)?;
    Some(format!("avc1.{:02x}{:02x}{:02x}", b[1], b[2], b[3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tool::{ProbeFormat, ProbeStream, SideData};

    fn stream(kind: &str, codec: &str) -> ProbeStream {
        ProbeStream { codec_type: Some(kind.into()), codec_name: Some(codec.into()), ..Default::default() }
    }

    fn phone_probe() -> Probe {
        let mut video = stream("video", "h264");
        video.width = Some(1920);
        video.height = Some(1080);
        video.avg_frame_rate = Some("30000/1001".into());
        video.side_data_list = vec![SideData { rotation: Some(-90.0) }];
        Probe {
            streams: vec![video, stream("audio", "aac")],
            format: ProbeFormat {
                duration: Some("12.345678".into()),
                start_time: None,
                bit_rate: Some("8000000".into()),
            },
        }
    }

    #[test]
    fn details_apply_rotation_and_read_rates() {
        let d = details_from_probe(&phone_probe(), &VideoLimits::default(), None).unwrap();
        assert_eq!((d.width, d.height), (1080, 1920));
        assert_eq!(d.duration_ms, 12_346);
        assert_eq!(d.frame_rate, 29.97);
        assert_eq!(d.audio_codec.as_deref(), Some("aac"));
        assert_eq!(d.bitrate, Some(8_000_000));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["durationMs"], 12_346);
        assert_eq!(json["videoCodec"], "h264");
    }

    #[test]
    fn limits_and_missing_video_are_rejected() {
        let limits = VideoLimits { max_duration_ms: 10_000, max_pixels: u64::MAX };
        let err = details_from_probe(&phone_probe(), &limits, None).unwrap_err();
        assert!(matches!(&err, ProcessError::Rejected(m) if m.contains("0:00:12") && m.contains("limit")), "{err}");
        let limits = VideoLimits { max_duration_ms: u64::MAX, max_pixels: 1280 * 720 };
        let err = details_from_probe(&phone_probe(), &limits, None).unwrap_err();
        assert!(matches!(&err, ProcessError::Rejected(m) if m.contains("1920×1080")), "{err}");
        let mut cover = stream("video", "mjpeg");
        cover.disposition.attached_pic = 1;
        let audio_only = Probe { streams: vec![stream("audio", "mp3"), cover], ..Default::default() };
        let err = details_from_probe(&audio_only, &VideoLimits::default(), None).unwrap_err();
        assert!(matches!(&err, ProcessError::Rejected(m) if m.contains("no video")), "{err}");
    }

    #[test]
    fn ladder_never_upscales() {
        let hd = ladder(1920, 1080);
        assert_eq!(hd.iter().map(|r| (r.width, r.height)).collect::<Vec<_>>(), [(1280, 720), (640, 360)]);
        assert_eq!(ladder(1280, 720).len(), 2);
        assert_eq!(ladder(854, 480).iter().map(|r| (r.width, r.height)).collect::<Vec<_>>(), [(640, 360)]);
        let small = ladder(427, 241);
        assert_eq!(small.iter().map(|r| (r.width, r.height)).collect::<Vec<_>>(), [(426, 240)]);
        assert!(small[0].video_kbps < 800 && small[0].video_kbps >= 150);
        // Portrait: rungs by height, width by aspect ratio, even.
        assert_eq!(ladder(1080, 1920)[0], Rung { width: 406, height: 720, video_kbps: 2800, max_kbps: 3000 });
    }

    #[test]
    fn hls_arguments_are_exact() {
        let details = VideoDetails {
            width: 1280,
            height: 720,
            duration_ms: 10_000,
            frame_rate: 30.0,
            video_codec: "h264".into(),
            audio_codec: Some("aac".into()),
            bitrate: None,
        };
        let args = hls_args(Path::new("/m/src.mp4"), &details, &ladder(1280, 720));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        let expected = "-nostdin -hide_banner -v error -nostats -y -i file:/m/src.mp4 \
            -filter_complex [0:V:0]split=2[s0][s1];[s0]scale=1280:720,setsar=1,format=yuv420p[v0];[s1]scale=640:360,setsar=1,format=yuv420p[v1] \
            -map [v0] -map 0:a:0 -map [v1] -map 0:a:0 -c:v libx264 -preset veryfast -profile:v high \
            -b:v:0 2800k -maxrate:v:0 3000k -bufsize:v:0 6000k -b:v:1 800k -maxrate:v:1 856k -bufsize:v:1 1712k \
            -g 60 -keyint_min 60 -sc_threshold 0 -force_key_frames expr:gte(t,n_forced*2) -c:a aac -b:a 128k -ac 2 \
            -f hls -hls_time 4 -hls_playlist_type vod -hls_segment_type fmp4 -hls_flags independent_segments \
            -hls_fmp4_init_filename init.mp4 -hls_segment_filename %v/seg_%05d.m4s";
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(args[..expected.len()], expected[..]);
        assert_eq!(
            args[expected.len()..],
            ["-var_stream_map", "v:0,a:0,name:720p v:1,a:1,name:360p", "-progress", "pipe:1", "%v/index.m3u8"]
        );
        let silent = VideoDetails { audio_codec: None, frame_rate: 0.0, ..details };
        let args = hls_args(Path::new("/m/src.mp4"), &silent, &ladder(320, 240));
        let joined = args.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>().join(" ");
        assert!(joined.contains("-var_stream_map v:0,name:240p "), "{joined}");
        assert!(!joined.contains("0:a:0") && !joined.contains("-c:a") && !joined.contains("-g "), "{joined}");
    }

    #[test]
    fn poster_time_stays_inside_the_video() {
        assert_eq!(poster_time_ms(60_000), 6_000);
        assert_eq!(poster_time_ms(5_000), 1_000);
        assert_eq!(poster_time_ms(1_000), 500);
        assert_eq!(poster_time_ms(50), 0);
    }

    #[test]
    fn playlists_and_keys_are_checked() {
        let ok = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000000,\nseg_00000.m4s\n#EXTINF:2.5,\nseg_00001.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(media_segments(ok).unwrap(), [("seg_00000.m4s".to_owned(), 4.0), ("seg_00001.m4s".to_owned(), 2.5)]);
        assert!(media_segments(&ok.replace("seg_00001", "../x")).is_none());
        assert!(media_segments(&ok.replace("#EXT-X-ENDLIST\n", "")).is_none());
        assert!(safe_key(Path::new("720p/seg_00000.m4s")));
        assert!(!safe_key(Path::new("720p/Seg.m4s")) && !safe_key(Path::new("../x")) && !safe_key(Path::new("/x")));
        assert_eq!(avc1_codec(b"....avcC\x01\x64\x00\x1f\xff").as_deref(), Some("avc1.64001f"));
        assert_eq!(packets_end("pts_time=8.3|duration_time=0.5\npts_time=9.9|duration_time=0.1\n"), (2, Some(10.0)));
    }
}
