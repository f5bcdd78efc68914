//! The saved session and upload state, in the user's config directory.
//!
//! - `config.json`: `{url, accessToken, refreshToken}` written by `mediabus login` (mode 0600:
//!   it holds credentials).
//! - `uploads.json`: per file (keyed by server, path, size and modification time), the tus upload
//!   URL of an unfinished upload, so a rerun continues it, or the id of the media it became, so a
//!   rerun skips it (a changed file is a new key: it uploads again).
//!
//! Directory: the parent of `$MEDIABUS_CONFIG` if set (that is the config file itself), else
//! `$XDG_CONFIG_HOME/mediabus`, else `~/.config/mediabus`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::CliError;

/// The session saved by `login`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Server the session belongs to.
    pub url: Option<String>,
    /// The access token (a JWT, short-lived).
    pub access_token: Option<String>,
    /// The refresh token that renews the access token (rotated on each use).
    pub refresh_token: Option<String>,
}

impl Profile {
    /// The saved profile, or an empty one when there is none. Errors: an unreadable or corrupt file.
    pub fn load() -> Result<Self, CliError> {
        let path = config_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CliError::local(format!("{} is not a valid config file: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::local(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes the profile (mode 0600, replaced atomically).
    pub fn save(&self) -> Result<(), CliError> {
        let json = serde_json::to_vec_pretty(self).expect("a profile serializes");
        write_private(&config_file(), &json)
    }
}

/// Where the upload of one file stands: in progress at a tus upload URL, or done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Upload {
    /// The tus upload URL to continue.
    InProgress(String),
    /// Uploaded: the created media's id (a rerun skips the file).
    Done(String),
}

/// The uploads of files: key (see [`upload_key`]) → [`Upload`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UploadState(BTreeMap<String, Upload>);

impl UploadState {
    /// The saved state; empty when absent or unreadable (losing it only restarts uploads).
    pub fn load() -> Self {
        fs::read(state_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Where the upload of `key` stands, if it was started.
    pub fn get(&self, key: &str) -> Option<&Upload> {
        self.0.get(key)
    }

    /// Records (`Some`) or forgets (`None`) the upload of `key`, and saves at once: the state must
    /// survive the process being killed right after.
    pub fn set(&mut self, key: &str, upload: Option<Upload>) -> Result<(), CliError> {
        match upload {
            Some(u) => self.0.insert(key.to_owned(), u),
            None => self.0.remove(key),
        };
        let json = serde_json::to_vec_pretty(self).expect("upload state serializes");
        write_private(&state_file(), &json)
    }
}

/// The key of an upload of `path` to `server`: the server, the absolute path, the size and the
/// modification time in nanoseconds, so a file changed since the interrupted run starts over.
pub fn upload_key(server: &str, path: &Path, size: u64, modified_ns: u128) -> String {
    let absolute = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    format!("{server}|{}|{size}|{modified_ns}", absolute.display())
}

fn config_file() -> PathBuf {
    if let Some(path) = std::env::var_os("MEDIABUS_CONFIG") {
        return path.into();
    }
    config_dir().join("config.json")
}

fn state_file() -> PathBuf {
    config_file().with_file_name("uploads.json")
}

fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("mediabus")
}

/// Writes `bytes` to `path` through a temp file and a rename, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::local(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}
