//! Running ffmpeg, ffprobe and poppler's tools as bounded child processes, shared by
//! [`crate::video`], [`crate::audio`] and [`crate::pdf`].
//!
//! Every child gets stdin from /dev/null, is killed when its future is dropped (a job timeout or a
//! shutdown must not leave an encoder running), and has its stderr read concurrently with only the
//! tail kept, so a chatty decoder can neither fill the pipe (deadlock) nor the memory.
//!
//! Every child also dies with the processor: `kill_on_drop` needs the processor alive, so a
//! processor that is SIGKILLed or OOM-killed would leave its ffmpeg transcoding on as an orphan,
//! writing to a temp dir nobody reads while another worker redoes the job. The kernel's
//! parent-death signal (`PR_SET_PDEATHSIG` = SIGKILL) covers that. It has to be set in the child
//! between fork and exec, which from Rust means `CommandExt::pre_exec`, an `unsafe` API the
//! workspace forbids (`unsafe_code = "forbid"`, STYLE.md); util-linux's `setpriv --pdeathsig KILL`
//! (Debian's essential `util-linux`, so in every image) sets it and then execs the tool, which
//! keeps its pid and name. Where `setpriv` is missing the tools run without it (one warning).
//! The signal fires when the *thread* that spawned the child exits: children are spawned from
//! async code on the runtime's worker threads, which live as long as the process (never from
//! `spawn_blocking`, whose idle threads exit and would kill a running tool).

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::error::{ProcessError, Result};

/// Bytes of stderr kept for error messages (the end of it, where tools say why they stopped).
const STDERR_TAIL: usize = 8 * 1024;
/// Largest stdout collected in memory (ffprobe's JSON, pdfinfo's text).
const STDOUT_MAX: usize = 4 * 1024 * 1024;
/// The wrapper that sets the child's parent-death signal, then execs the tool (see the module doc).
const SETPRIV: &str = "setpriv";
/// Set once `setpriv` was found missing: the tools then run unwrapped.
static NO_SETPRIV: AtomicBool = AtomicBool::new(false);
/// What `setpriv` prints before exiting 126/127 when it cannot exec the tool.
const SETPRIV_EXEC_FAILED: &str = "setpriv: failed to execute";

/// How a finished child ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// Everything the child wrote to stdout (empty when lines went to a callback).
    pub stdout: Vec<u8>,
    /// The last [`STDERR_TAIL`] bytes of stderr, lossily decoded.
    pub stderr: String,
}

/// What the child's stdout is for.
pub(crate) enum Stdout<'a> {
    /// Collected, at most [`STDOUT_MAX`] bytes (more is refused as [`ProcessError::Rejected`]:
    /// only a hostile file makes ffprobe or pdfinfo print that much).
    Collect,
    /// Handed over line by line (ffmpeg's `-progress pipe:1`), not kept.
    Lines(&'a mut (dyn FnMut(&str) + Send)),
}

/// Runs `program args…` to completion, within `limit` if given.
///
/// Errors: the program cannot be started → [`ProcessError::Transient`] (the host is at fault);
/// `limit` passed → [`ProcessError::Rejected`] with `what` in the message (a parser that hangs
/// on one input is the input's fault); stdout over [`STDOUT_MAX`] → `Rejected`. A non-zero exit
/// is not an error here: callers read [`Finished`] and decide.
pub(crate) async fn run(
    program: &str,
    args: &[OsString],
    limit: Option<Duration>,
    what: &str,
    stdout_mode: Stdout<'_>,
) -> Result<Finished> {
    run_in(None, program, args, limit, what, stdout_mode).await
}

/// [`run`] with the child's working directory set to `cwd` (ffmpeg's HLS muxer takes output
/// *patterns*: relative ones keep a `%` in a temp dir's path from being read as a pattern).
pub(crate) async fn run_in(
    cwd: Option<&Path>,
    program: &str,
    args: &[OsString],
    limit: Option<Duration>,
    what: &str,
    mut stdout_mode: Stdout<'_>,
) -> Result<Finished> {
    let command = |wrapped: bool| {
        let mut command = if wrapped {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "--", program]);
            command
        } else {
            Command::new(program)
        };
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        command
    };
    let mut wrapped = !NO_SETPRIV.load(Ordering::Relaxed);
    let mut spawned = command(wrapped).spawn();
    if wrapped && spawned.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        if !NO_SETPRIV.swap(true, Ordering::Relaxed) {
            tracing::warn!("setpriv (util-linux) not found: tools will outlive a processor that is killed");
        }
        wrapped = false;
        spawned = command(false).spawn();
    }
    let mut child = spawned.map_err(|e| ProcessError::transient(format!("cannot start {program}: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let work = async {
        let (out, err, status) = tokio::join!(read_stdout(stdout, &mut stdout_mode), read_tail(stderr), child.wait());
        (out, err, status)
    };
    let (out, stderr, status) = match limit {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(done) => done,
            Err(_) => {
                // Reap it now rather than leaving it to the runtime's orphan queue.
                let _ = child.kill().await;
                return Err(ProcessError::rejected(format!("{what} took longer than {} s", limit.as_secs())));
            }
        },
        None => work.await,
    };
    let status = status.map_err(|e| ProcessError::transient(format!("waiting for {program}: {e}")))?;
    if wrapped && matches!(status.code(), Some(126 | 127)) && stderr.contains(SETPRIV_EXEC_FAILED) {
        // The tool itself is missing or not executable: the host's fault, as a failed spawn is.
        return Err(ProcessError::transient(format!("cannot start {program}: {}", stderr.trim())));
    }
    let stdout = match out {
        Ok(bytes) => bytes,
        Err(OutError::TooLarge) => {
            let _ = child.kill().await;
            return Err(ProcessError::rejected(format!("{what} produced too much metadata to read")));
        }
        Err(OutError::Io(e)) => return Err(ProcessError::transient(format!("reading {program} output: {e}"))),
    };
    Ok(Finished { status, stdout, stderr })
}

enum OutError {
    TooLarge,
    Io(std::io::Error),
}

async fn read_stdout(mut stdout: impl AsyncRead + Unpin, mode: &mut Stdout<'_>) -> Result<Vec<u8>, OutError> {
    match mode {
        Stdout::Collect => {
            let mut buf = Vec::new();
            // One byte over the cap tells "exactly at the cap" from "over it".
            let n = (&mut stdout).take(STDOUT_MAX as u64 + 1).read_to_end(&mut buf).await.map_err(OutError::Io)?;
            if n > STDOUT_MAX {
                // Keep draining, or the child blocks on a full pipe and never exits.
                tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await.map_err(OutError::Io)?;
                return Err(OutError::TooLarge);
            }
            Ok(buf)
        }
        Stdout::Lines(on_line) => {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.map_err(OutError::Io)? {
                on_line(&line);
            }
            Ok(Vec::new())
        }
    }
}

/// Reads `stderr` to its end, keeping only the last [`STDERR_TAIL`] bytes.
async fn read_tail(mut stderr: impl AsyncRead + Unpin) -> String {
    let mut tail = Vec::with_capacity(STDERR_TAIL * 2);
    let mut chunk = [0u8; 4096];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL * 2 {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// A short reason for the owner out of a tool's stderr: its last meaningful line, without the
/// temp file's path or ffmpeg's `[demuxer @ 0x…]` prefix (they tell the owner nothing and expose
/// the host), at most 160 characters.
pub(crate) fn owner_reason(stderr: &str, input: &Path) -> String {
    let path = input.to_string_lossy();
    let line = stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    let mut line = line.replace(&format!("file:{path}"), "").replace(path.as_ref(), "");
    if line.starts_with('[')
        && let Some(end) = line.find("] ")
        && line[..end].contains(" @ 0x")
    {
        line.drain(..end + 2);
    }
    let line = line.trim_start_matches([':', ' ']).trim();
    if line.is_empty() {
        return "unknown error".to_owned();
    }
    match line.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// `path` as an ffmpeg/ffprobe input or output: `file:` first, so a name with a colon is never read
/// as a protocol (`http:`, `concat:`) and a name starting with `-` never as an option.
pub(crate) fn file_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

/// Words in a failed tool's stderr that put the blame on the host rather than on the input.
pub(crate) fn host_fault(stderr: &str) -> bool {
    const HOST: [&str; 5] = [
        "No space left on device",
        "Cannot allocate memory",
        "Input/output error",
        "Permission denied",
        "Too many open files",
    ];
    HOST.iter().any(|w| stderr.contains(w))
}

/// Runs `ffprobe -v error -print_format json -show_format -show_streams <path>` (60 s at most)
/// and parses its output.
///
/// Errors: ffprobe fails (not a media file, truncated container, unknown format) →
/// [`ProcessError::Rejected`] with `kind` ("video", "audio file") in a readable reason.
pub(crate) async fn ffprobe(path: &Path, kind: &str) -> Result<Probe> {
    let args: Vec<OsString> = ["-v", "error", "-hide_banner", "-print_format", "json", "-show_format", "-show_streams"]
        .into_iter()
        .map(OsString::from)
        .chain([file_url(path)])
        .collect();
    let done = run("ffprobe", &args, Some(Duration::from_secs(60)), "reading the file", Stdout::Collect).await?;
    if !done.status.success() {
        return Err(ProcessError::rejected(format!(
            "the file is not a readable {kind} ({})",
            owner_reason(&done.stderr, path)
        )));
    }
    serde_json::from_slice(&done.stdout)
        .map_err(|e| ProcessError::transient(format!("ffprobe printed JSON this code cannot read: {e}")))
}

/// Duration of a file whose container does not declare one (a browser's MediaRecorder WebM, a
/// stream dumped to disk), milliseconds: ffprobe demuxes it whole (no decoding, 120 s at most)
/// and the span from the first packet's start to the last packet's end is taken. `None` when no
/// packet has a timestamp.
pub(crate) async fn measured_duration_ms(path: &Path) -> Result<Option<u64>> {
    let args: Vec<OsString> = [
        "-v",
        "error",
        "-hide_banner",
        "-show_entries",
        "packet=pts_time,duration_time",
        "-print_format",
        "compact=p=0",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([file_url(path)])
    .collect();
    let (mut first, mut last) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut on_line = |line: &str| {
        if let Some((pts, duration)) = packet_times(line) {
            first = first.min(pts);
            last = last.max(pts + duration);
        }
    };
    let done =
        run("ffprobe", &args, Some(Duration::from_secs(120)), "measuring the duration", Stdout::Lines(&mut on_line))
            .await?;
    if !done.status.success() {
        return Err(ProcessError::rejected(format!("the file cannot be read ({})", owner_reason(&done.stderr, path))));
    }
    Ok((last > first).then(|| ((last - first) * 1000.0).round() as u64))
}

/// `(pts, duration)` seconds of one line of ffprobe's `compact=p=0` packet output
/// (`pts_time=8.32|duration_time=0.02`); `None` without a pts.
pub(crate) fn packet_times(line: &str) -> Option<(f64, f64)> {
    let (mut pts, mut duration) = (None, 0.0);
    for field in line.split('|') {
        match field.split_once('=') {
            Some(("pts_time", v)) => pts = v.trim().parse::<f64>().ok().filter(|p| p.is_finite()),
            Some(("duration_time", v)) => {
                duration = v.trim().parse::<f64>().ok().filter(|d| d.is_finite()).unwrap_or(0.0)
            }
            _ => {}
        }
    }
    pts.map(|p| (p, duration))
}

/// The part of ffprobe's JSON the processor reads. ffprobe prints most numbers as strings
/// ("10.000000", "128000"); absent fields stay `None`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Probe {
    #[serde(default)]
    pub streams: Vec<ProbeStream>,
    #[serde(default)]
    pub format: ProbeFormat,
}

/// One stream of [`Probe`].
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProbeStream {
    pub codec_type: Option<String>,
    pub codec_name: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_aspect_ratio: Option<String>,
    pub avg_frame_rate: Option<String>,
    pub r_frame_rate: Option<String>,
    pub duration: Option<String>,
    pub bit_rate: Option<String>,
    pub sample_rate: Option<String>,
    pub channels: Option<u32>,
    #[serde(default)]
    pub disposition: Disposition,
    #[serde(default)]
    pub side_data_list: Vec<SideData>,
    #[serde(default)]
    pub tags: Tags,
}

/// Stream flags of [`ProbeStream`].
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Disposition {
    /// 1 for cover art stored as a video stream (MP3, M4A, MKV): not the video.
    #[serde(default)]
    pub attached_pic: u8,
}

/// Side data of [`ProbeStream`]; only the display matrix's rotation matters here.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SideData {
    /// Degrees, counter-clockwise, e.g. `-90` for a phone held upright.
    pub rotation: Option<f64>,
}

/// Stream tags of [`ProbeStream`].
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Tags {
    /// Older muxers' rotation tag, degrees as a string.
    pub rotate: Option<String>,
}

/// The container part of [`Probe`].
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProbeFormat {
    pub duration: Option<String>,
    pub start_time: Option<String>,
    pub bit_rate: Option<String>,
}

impl ProbeStream {
    /// `codec_type == kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.codec_type.as_deref() == Some(kind)
    }
}

/// A decimal string from ffprobe ("10.000000") as seconds, if finite and not negative.
pub(crate) fn seconds(value: Option<&str>) -> Option<f64> {
    value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0)
}

/// A duration string from ffprobe as whole milliseconds (rounded).
pub(crate) fn millis(value: Option<&str>) -> Option<u64> {
    seconds(value).map(|s| (s * 1000.0).round() as u64)
}

/// An integer string from ffprobe ("128000"), `None` for "N/A" or zero.
pub(crate) fn integer(value: Option<&str>) -> Option<u64> {
    value.and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0)
}

/// A rational string from ffprobe ("30000/1001", "16:9") as a float; `None` for `0/0` and the like.
pub(crate) fn ratio(value: Option<&str>) -> Option<f64> {
    let value = value?;
    let (num, den) = value.split_once(['/', ':'])?;
    let (num, den) = (num.trim().parse::<f64>().ok()?, den.trim().parse::<f64>().ok()?);
    let r = num / den;
    (r.is_finite() && r > 0.0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reason_drops_path_and_demuxer_prefix() {
        let path = Path::new("/tmp/.tmpAbC/original");
        let stderr = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d9ef0391c0] moov atom not found\n\
                      /tmp/.tmpAbC/original: Invalid data found when processing input\n";
        assert_eq!(owner_reason(stderr, path), "Invalid data found when processing input");
        assert_eq!(
            owner_reason("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d9ef0391c0] moov atom not found\n", path),
            "moov atom not found"
        );
        assert_eq!(owner_reason("\n\n", path), "unknown error");
        assert_eq!(owner_reason(&"x".repeat(500), path).chars().count(), 161);
    }

    #[test]
    fn ffprobe_numbers_parse_leniently() {
        assert_eq!(millis(Some("10.000000")), Some(10_000));
        assert_eq!(millis(Some("N/A")), None);
        assert_eq!(integer(Some("128000")), Some(128_000));
        assert_eq!(integer(Some("0")), None);
        assert_eq!(ratio(Some("30000/1001")).map(|r| (r * 1000.0).round()), Some(29_970.0));
        assert_eq!(ratio(Some("0/0")), None);
        assert_eq!(ratio(Some("4:3")), Some(4.0 / 3.0));
    }

    #[tokio::test]
    async fn a_slow_child_is_killed_at_the_limit() {
        let args = [OsString::from("30")];
        let start = std::time::Instant::now();
        let err = run("sleep", &args, Some(Duration::from_millis(200)), "sleeping", Stdout::Collect).await;
        assert!(matches!(err, Err(ProcessError::Rejected(ref m)) if m.contains("took longer")), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_child() {
        // A unique argument to find the child by (read-only pgrep, nothing is killed by name).
        let marker = format!("31.{}", std::process::id());
        let args = [OsString::from(&marker)];
        let alive = || {
            std::process::Command::new("pgrep")
                .args(["-f", &format!("^sleep {marker}$")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let mut run = Box::pin(run("sleep", &args, None, "sleeping", Stdout::Collect));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::select! {
                _ = &mut run => panic!("sleep ended early"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if alive() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "sleep {marker} never started");
        }
        drop(run);
        while alive() {
            assert!(std::time::Instant::now() < deadline, "sleep {marker} outlived its dropped future");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A child outlives its future here (it is leaked, as a SIGKILLed processor leaks it), and
    /// still dies as soon as the thread that spawned it exits: the parent-death signal.
    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let marker = format!("32.{}", std::process::id());
        let alive = || {
            std::process::Command::new("pgrep")
                .args(["-f", &format!("^sleep {marker}$")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let args = [OsString::from(&marker)];
                    let mut run = Box::pin(run("sleep", &args, None, "sleeping", Stdout::Collect));
                    while !alive() {
                        assert!(std::time::Instant::now() < deadline, "sleep {marker} never started");
                        tokio::select! {
                            _ = &mut run => panic!("sleep ended early"),
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                    }
                    // Neither dropped nor killed: only the kernel can end it now.
                    std::mem::forget(run);
                });
            });
        });
        while alive() {
            assert!(std::time::Instant::now() < deadline, "sleep {marker} outlived the thread that spawned it");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_transient() {
        let err = run("mediabus-no-such-tool", &[], None, "x", Stdout::Collect).await;
        assert!(matches!(err, Err(ProcessError::Transient(_))), "{err:?}");
    }
}
