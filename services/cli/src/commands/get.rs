//! `mediabus get`: the bytes of `GET /api/media/{id}/content`, into `<file>.part` first, resumed
//! with `Range: bytes=<have>-`, checked against the document's `sha256:` checksum (a mismatch
//! removes the partial file, so the next run starts over), then renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::client::{Api, CliError};

/// Downloads media `id` to `output` (default: its original name; `-`: standard output).
pub fn run(api: &Api, id: &str, output: Option<PathBuf>) -> Result<(), CliError> {
    let media = api.json("GET", &format!("/api/media/{id}"), None, &format!("media {id}"))?;
    let size = media["size"].as_u64().unwrap_or(0);
    let checksum = media["checksum"].as_str().and_then(|c| c.strip_prefix("sha256:")).map(String::from);
    let output = output.unwrap_or_else(|| default_name(media["originalName"].as_str(), id));
    if output.as_os_str() == "-" {
        let (_, mut body) = open(api, id, 0)?;
        return copy(id, &mut body, &mut std::io::stdout().lock(), None);
    }
    let partial = output.with_file_name(format!(
        "{}.part",
        output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| id.to_owned())
    ));
    let local = |e: std::io::Error| CliError::local(format!("{}: {e}", partial.display()));
    let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let (from, mut body) = open(api, id, if have < size { have } else { 0 })?;
    // 206: append to what we have; 200: the server sent everything (no partial file, or the
    // object changed, or it ignored the range): start the file over.
    let mut file = OpenOptions::new()
        .create(true)
        .append(from > 0)
        .write(true)
        .truncate(from == 0)
        .open(&partial)
        .map_err(local)?;
    let bar = ProgressBar::new(size).with_style(bar_style());
    bar.set_message(output.display().to_string());
    bar.set_position(from);
    copy(id, &mut body, &mut file, Some(&bar))?;
    bar.finish_and_clear();
    if let Some(expected) = checksum {
        let actual = sha256_file(&partial).map_err(local)?;
        if actual != expected {
            let _ = std::fs::remove_file(&partial);
            return Err(CliError::failed(format!("{id}: checksum mismatch (got sha256:{actual}); run again")));
        }
    }
    std::fs::rename(&partial, &output).map_err(|e| CliError::local(format!("{}: {e}", output.display())))?;
    eprintln!("{} ({size} bytes)", output.display());
    Ok(())
}

/// Requests the content from byte `start`; where the body actually starts (0 when the server
/// answered 200) and the body.
fn open(api: &Api, id: &str, start: u64) -> Result<(u64, Box<dyn Read + Send>), CliError> {
    let url = api.url(&format!("/api/media/{id}/content"));
    let mut response = api.send(|agent, bearer| {
        let mut request = agent.get(&url);
        if let Some(b) = bearer {
            request = request.header("authorization", b);
        }
        if start > 0 {
            request = request.header("range", format!("bytes={start}-"));
        }
        request.call()
    })?;
    let from = match response.status().as_u16() {
        200 => 0,
        206 => start,
        _ => return Err(CliError::from_response(&format!("download {id}"), &mut response)),
    };
    Ok((from, Box::new(response.into_body().into_reader())))
}

/// Copies the body into `out`, advancing `bar`.
fn copy(id: &str, body: &mut dyn Read, out: &mut dyn Write, bar: Option<&ProgressBar>) -> Result<(), CliError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| CliError::unreachable(format!("download {id}: {e}; run again to resume")))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| CliError::local(format!("write: {e}")))?;
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
    out.flush().map_err(|e| CliError::local(format!("write: {e}")))
}

/// The original name without any directory part (never a path the server chose), or the id.
fn default_name(original: Option<&str>, id: &str) -> PathBuf {
    let name = original.and_then(|n| Path::new(n).file_name()).map(|n| n.to_string_lossy().into_owned());
    PathBuf::from(name.filter(|n| !n.is_empty() && n != "." && n != "..").unwrap_or_else(|| id.to_owned()))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The progress bar style shared by downloads and uploads.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}",
    )
    .expect("a valid template")
}
