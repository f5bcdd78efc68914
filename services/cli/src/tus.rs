//! A tus 1.0.0 client (https://tus.io/protocols/resumable-upload) for the bridge's
//! `/api/uploads` (DESIGN §11): creation, then `PATCH` requests of at most `chunk` bytes, each
//! with an `Upload-Checksum` (sha256), resumed from the server's `Upload-Offset` (`HEAD`) when the
//! upload URL of an earlier run is in the saved upload state.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use ureq::Body;
use ureq::http::Response;

use crate::client::{Api, CliError};
use crate::config::{Upload, UploadState, upload_key};

const TUS_VERSION: &str = "1.0.0";
const ENDPOINT: &str = "/api/uploads";

/// What every upload of a run is linked to (tus `Upload-Metadata` keys of DESIGN §11, besides
/// `filename`).
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub public: bool,
    /// A JSON object, as text.
    pub metadata: Option<String>,
}

/// One file to upload.
pub struct FileUpload<'a> {
    pub api: &'a Api,
    pub path: &'a Path,
    pub link: &'a Link,
    /// Bytes per `PATCH` request.
    pub chunk: usize,
    pub state: &'a Mutex<UploadState>,
    /// Upload even if this file (same path, size and modification time) was uploaded before.
    pub again: bool,
}

impl FileUpload<'_> {
    /// Uploads the file, continuing an earlier interrupted upload of the same file when the
    /// server still has it, or returning the media of an earlier finished one (unless `again`); calls `advanced(bytes)` as bytes are accepted (and once with the
    /// offset already on the server). Returns the created Media document.
    ///
    /// Errors: the file cannot be read ([`CliError::local`]), the server refuses (its error
    /// object), a checksum or offset the server keeps rejecting.
    pub fn run(&self, advanced: &dyn Fn(u64)) -> Result<Value, CliError> {
        let meta = std::fs::metadata(self.path).map_err(|e| self.local(e))?;
        let size = meta.len();
        if size == 0 {
            return Err(CliError::failed(format!("{}: empty files cannot be uploaded", self.path.display())));
        }
        let modified = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
        let key = upload_key(&self.api.base, self.path, size, modified.map_or(0, |d| d.as_nanos()));
        let saved = self.state.lock().expect("state lock").get(&key).cloned();
        let saved = match saved {
            Some(Upload::Done(media_id)) if !self.again => return self.finish(&key, &media_id),
            Some(Upload::InProgress(url)) => Some(url),
            _ => None,
        };
        let (location, mut offset) = match saved.and_then(|url| self.resume(&url).transpose()) {
            Some(found) => found?,
            None => (self.create(size, &key)?, Offset::At(0)),
        };
        if let Offset::Done(media_id) = &offset {
            return self.finish(&key, media_id);
        }
        let mut file = File::open(self.path).map_err(|e| self.local(e))?;
        let mut buf = Vec::with_capacity(self.chunk);
        loop {
            let at = match &offset {
                Offset::At(at) => *at,
                Offset::Done(media_id) => return self.finish(&key, media_id),
            };
            advanced(at);
            file.seek(SeekFrom::Start(at)).map_err(|e| self.local(e))?;
            buf.clear();
            (&mut file).take(self.chunk as u64).read_to_end(&mut buf).map_err(|e| self.local(e))?;
            if buf.is_empty() {
                return Err(CliError::local(format!("{} shrank while uploading", self.path.display())));
            }
            offset = self.patch(&location, at, &buf)?;
        }
    }

    /// The offset of the upload at `url`, or `None` when the server no longer has it (expired,
    /// terminated): the caller starts a new one.
    fn resume(&self, url: &str) -> Result<Option<(String, Offset)>, CliError> {
        let full = self.api.url(url);
        let mut response = self.api.send(|agent, bearer| {
            let request = agent.head(&full).header("tus-resumable", TUS_VERSION);
            with_auth(request, bearer).call()
        })?;
        match response.status().as_u16() {
            200 | 204 => Ok(Some((url.to_owned(), offset_of(&response)?))),
            404 | 410 => Ok(None),
            _ => Err(CliError::from_response("resume upload", &mut response)),
        }
    }

    /// Creates the upload (tus creation extension) and saves its URL before any byte is sent.
    fn create(&self, size: u64, key: &str) -> Result<String, CliError> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut pairs = vec![("filename", name)];
        pairs.extend(self.link.entity_type.clone().map(|v| ("entityType", v)));
        pairs.extend(self.link.entity_id.clone().map(|v| ("entityId", v)));
        pairs.push(("isPublic", self.link.public.to_string()));
        pairs.extend(self.link.metadata.clone().map(|v| ("metadata", v)));
        let metadata: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} {}", B64.encode(v))).collect();
        let metadata = metadata.join(",");
        let url = self.api.url(ENDPOINT);
        let mut response = self.api.send(|agent, bearer| {
            let request = agent
                .post(&url)
                .header("tus-resumable", TUS_VERSION)
                .header("upload-length", size.to_string())
                .header("upload-metadata", &metadata);
            with_auth(request, bearer).send_empty()
        })?;
        if response.status() != 201 {
            return Err(CliError::from_response(&format!("upload {}", self.path.display()), &mut response));
        }
        let location = header(&response, "location")
            .ok_or_else(|| CliError::failed("the server created an upload without a Location"))?
            .to_owned();
        self.state.lock().expect("state lock").set(key, Some(Upload::InProgress(location.clone())))?;
        Ok(location)
    }

    /// Sends `bytes` at `at`; the server's new offset. A 409 (the server has another offset, e.g.
    /// an earlier request went through after all) re-reads the offset with `HEAD`.
    fn patch(&self, location: &str, at: u64, bytes: &[u8]) -> Result<Offset, CliError> {
        let url = self.api.url(location);
        let checksum = format!("sha256 {}", B64.encode(Sha256::digest(bytes)));
        let mut response = self.api.send(|agent, bearer| {
            let request = agent
                .patch(&url)
                .header("tus-resumable", TUS_VERSION)
                .header("upload-offset", at.to_string())
                .header("upload-checksum", &checksum)
                .header("content-type", "application/offset+octet-stream");
            with_auth(request, bearer).send(bytes)
        })?;
        match response.status().as_u16() {
            200 | 204 => offset_of(&response),
            409 => match self.resume(location)? {
                Some((_, offset)) => Ok(offset),
                None => Err(CliError::failed("the upload disappeared from the server; run again to restart it")),
            },
            _ => Err(CliError::from_response(&format!("upload {}", self.path.display()), &mut response)),
        }
    }

    /// Records the finished upload and fetches its Media document.
    fn finish(&self, key: &str, media_id: &str) -> Result<Value, CliError> {
        self.state.lock().expect("state lock").set(key, Some(Upload::Done(media_id.to_owned())))?;
        self.api.json("GET", &format!("/api/media/{media_id}"), None, "read the uploaded media")
    }

    fn local(&self, e: std::io::Error) -> CliError {
        CliError::local(format!("{}: {e}", self.path.display()))
    }
}

/// Where an upload stands on the server.
enum Offset {
    /// This many bytes are stored; send the rest from here.
    At(u64),
    /// Complete: the media was created with this id (`Media-Id`).
    Done(String),
}

fn offset_of(response: &Response<Body>) -> Result<Offset, CliError> {
    if let Some(id) = header(response, "media-id") {
        return Ok(Offset::Done(id.to_owned()));
    }
    header(response, "upload-offset")
        .and_then(|v| v.parse().ok())
        .map(Offset::At)
        .ok_or_else(|| CliError::failed("the server answered without an Upload-Offset"))
}

fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn with_auth<B>(request: ureq::RequestBuilder<B>, bearer: Option<&str>) -> ureq::RequestBuilder<B> {
    match bearer {
        Some(b) => request.header("authorization", b),
        None => request,
    }
}
