//! `mediabus upload`: files and directory trees through tus ([`crate::tus`]), `concurrency` at a
//! time, with a progress bar per file and one for the total.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::get::bar_style;
use crate::client::{Api, CliError};
use crate::config::UploadState;
use crate::tus::{FileUpload, Link};

/// Bytes per tus `PATCH` request: two parts of the default 5 MiB part size.
pub const DEFAULT_CHUNK: usize = 10 << 20;

/// What to upload and how.
pub struct Options {
    pub paths: Vec<PathBuf>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub public: bool,
    pub metadata: Option<String>,
    pub concurrency: usize,
    pub json: bool,
    /// Upload files that an earlier run already uploaded.
    pub again: bool,
}

/// Uploads every file; prints `id  name` per created media (or a JSON array). A file that fails
/// does not stop the others: its error is printed and the command exits 1 at the end.
pub fn run(api: &Api, options: Options) -> Result<(), CliError> {
    if let Some(m) = &options.metadata
        && !serde_json::from_str::<Value>(m).is_ok_and(|v| v.is_object())
    {
        return Err(CliError::failed("--metadata must be a JSON object"));
    }
    let files = collect_files(&options.paths)?;
    if files.is_empty() {
        return Err(CliError::failed("no files to upload"));
    }
    let chunk = std::env::var("MEDIABUS_CHUNK_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CHUNK);
    let link = Link {
        entity_type: options.entity_type,
        entity_id: options.entity_id,
        public: options.public,
        metadata: options.metadata,
    };
    let state = Mutex::new(UploadState::load());
    let total_bytes: u64 = files.iter().map(|(_, size)| size).sum();
    let bars = MultiProgress::new();
    let total = bars.add(ProgressBar::new(total_bytes).with_style(total_style()));
    total.set_message(format!("{} files", files.len()));
    let queue = Mutex::new(files.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());

    std::thread::scope(|scope| {
        for _ in 0..options.concurrency.max(1) {
            scope.spawn(|| {
                while let Some((path, size)) = queue.lock().expect("queue lock").pop_front() {
                    let bar = bars.insert_before(&total, ProgressBar::new(size).with_style(bar_style()));
                    bar.set_message(path.display().to_string());
                    let upload =
                        FileUpload { api, path: &path, link: &link, chunk, state: &state, again: options.again };
                    let done = Mutex::new(0u64);
                    let outcome = upload.run(&|at| {
                        let mut done = done.lock().expect("progress lock");
                        if at > *done {
                            total.inc(at - *done);
                            *done = at;
                        }
                        bar.set_position(at);
                    });
                    let sent = *done.lock().expect("progress lock");
                    total.inc(size.saturating_sub(sent));
                    bar.finish_and_clear();
                    bars.remove(&bar);
                    // Printed with the bars suspended, not with `bars.println`: that prints
                    // nothing when the bars are hidden (stderr not a terminal), which is exactly
                    // when a script is reading the lines.
                    match outcome {
                        Ok(media) => {
                            if !options.json {
                                let id = media["id"].as_str().unwrap_or("?");
                                let line = format!("{id}  {}", path.display());
                                if let Err(e) = bars.suspend(|| super::out(&line)) {
                                    failures.lock().expect("failures lock").push(e);
                                }
                            }
                            results.lock().expect("results lock").push(media);
                        }
                        Err(e) => {
                            bars.suspend(|| eprintln!("mediabus: {e}"));
                            failures.lock().expect("failures lock").push(e);
                        }
                    }
                }
            });
        }
    });
    total.finish_and_clear();
    let results = results.into_inner().expect("results lock");
    if options.json {
        super::out(&serde_json::to_string_pretty(&Value::Array(results)).expect("JSON prints"))?;
    }
    let mut failures = failures.into_inner().expect("failures lock");
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => Err(CliError::failed(format!("{n} files failed to upload; run the same command again to retry them"))),
    }
}

/// Every regular file named or under a named directory (recursively, in name order), with its
/// size. Errors: a path that does not exist or cannot be read.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, u64)>, CliError> {
    let mut out = Vec::new();
    for path in paths {
        walk(path, &mut out)?;
    }
    Ok(out)
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::local(format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.is_file() {
        out.push((path.to_owned(), meta.len()));
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).map_err(fail)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for entry in entries {
            walk(&entry, out)?;
        }
    }
    Ok(())
}

fn total_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} total",
    )
    .expect("a valid template")
}
