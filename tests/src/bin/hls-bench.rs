//! hls-bench: the cost of media-processor's HLS pipeline (`video::transcode_hls`: argument
//! building, ffmpeg as a bounded child, progress parsing, renaming, playlist checks, master
//! playlist) next to one plain `ffmpeg` command producing the same ladder with the same settings,
//! on a 1080p 10 s source (`testsrc2` + a tone, made here), in the same run: rounds alternate the
//! two, medians are compared. Target: plain time / pipeline time ≥ 0.95 (≤ 5 % overhead).
//!
//! Usage: `hls-bench [--rounds N]` (default 3), run by `scripts/bench`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use media_processor::video::{self, VideoLimits};

/// Length of the source, seconds.
const SOURCE_SECONDS: f64 = 10.0;

#[tokio::main]
async fn main() {
    let rounds = rounds_arg();
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let src = dir.path().join("source-1080p.mp4");
    make_source(&src);
    let details = video::probe(&src, &VideoLimits::default()).await.expect("probe the source");
    println!(
        "HLS ladder of a {}x{} {:.0} s source ({} fps): media-processor transcode_hls vs plain ffmpeg, {rounds} rounds",
        details.width,
        details.height,
        details.duration_ms as f64 / 1000.0,
        details.frame_rate
    );

    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a cooler machine.
        for pipeline_first in [round % 2 == 0, round % 2 != 0] {
            let out = dir.path().join(format!("out-{round}-{pipeline_first}"));
            if pipeline_first {
                let start = Instant::now();
                let hls = video::transcode_hls(&src, &details, &out, &|_| {}).await.expect("transcode_hls");
                ours.push(start.elapsed().as_secs_f64());
                assert_eq!(hls.renditions, [(1280, 720), (640, 360)]);
            } else {
                std::fs::create_dir_all(&out).unwrap();
                let start = Instant::now();
                plain_ffmpeg(&src, &out, details.frame_rate);
                plain.push(start.elapsed().as_secs_f64());
                assert!(out.join("720p/index.m3u8").exists() && out.join("360p/index.m3u8").exists());
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    let (ours_s, plain_s) = (median(&mut ours), median(&mut plain));
    println!("{:<24} {:>10} {:>22}", "what", "median s", "s per s of source");
    println!("{:<24} {:>10.2} {:>22.3}", "transcode_hls", ours_s, ours_s / SOURCE_SECONDS);
    println!("{:<24} {:>10.2} {:>22.3}", "plain ffmpeg", plain_s, plain_s / SOURCE_SECONDS);
    println!("rounds: transcode_hls {ours:.2?} s, plain ffmpeg {plain:.2?} s");
    println!("ratio (plain / transcode_hls): {:.3}x (target >= 0.95x)", plain_s / ours_s);
    mediabus_e2e::bench::summary(
        "HLS ladder 720p+360p of 10 s 1080p",
        ours_s,
        "s",
        "plain ffmpeg (time ratio plain/ours)",
        Some(plain_s / ours_s),
        ">= 0.95",
    );
}

/// The source: 1080p30 `testsrc2` with a 48 kHz tone, H.264 + AAC.
fn make_source(path: &Path) {
    let video = format!("testsrc2=size=1920x1080:rate=30:duration={SOURCE_SECONDS}");
    let tone = format!("sine=frequency=440:sample_rate=48000:duration={SOURCE_SECONDS}");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &tone])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(path)
        .status()
        .expect("run ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "making the source failed");
}

/// The same ladder by hand, as an operator would type it: one decode, `split`, 720p at 2.8 Mb/s
/// (peak 3) and 360p at 0.8 Mb/s (peak 0.856), libx264 veryfast, 2 s closed GOPs, AAC 128k,
/// 4 s fMP4 segments, ffmpeg's own master playlist.
#[rustfmt::skip]
fn plain_ffmpeg(src: &Path, out: &Path, fps: f64) {
    let gop = ((fps * 2.0).round() as u32).to_string();
    let status = Command::new("ffmpeg")
        .current_dir(out)
        .args(["-nostdin", "-hide_banner", "-v", "error", "-nostats", "-y", "-i"])
        .arg(src)
        .args([
            "-filter_complex",
            "[0:V:0]split=2[s0][s1];[s0]scale=1280:720,setsar=1,format=yuv420p[v0];[s1]scale=640:360,setsar=1,format=yuv420p[v1]",
            "-map", "[v0]", "-map", "0:a:0", "-map", "[v1]", "-map", "0:a:0",
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
            "-b:v:0", "2800k", "-maxrate:v:0", "3000k", "-bufsize:v:0", "6000k",
            "-b:v:1", "800k", "-maxrate:v:1", "856k", "-bufsize:v:1", "1712k",
            "-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0", "-force_key_frames", "expr:gte(t,n_forced*2)",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2",
            "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
            "-hls_flags", "independent_segments", "-hls_fmp4_init_filename", "init.mp4",
            "-hls_segment_filename", "%v/seg_%05d.m4s", "-master_pl_name", "master.m3u8",
            "-var_stream_map", "v:0,a:0,name:720p v:1,a:1,name:360p", "%v/index.m3u8",
        ])
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "plain ffmpeg failed");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `--rounds N` from the command line, default 3.
fn rounds_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}
