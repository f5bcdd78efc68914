//! HTTP to the bridge: one blocking `ureq` agent, the bearer token (refreshed once on a 401 when
//! it came from the saved session), and errors mapped to the exit codes of `mediabus --help`.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Agent, Body};

use crate::config::Profile;

/// Default server when neither a flag, the environment nor the saved session names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// A failure, with the process exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Exit 1: the server refused or failed the request.
    pub fn failed(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }

    /// Exit 3: not signed in, or the token was refused.
    pub fn auth(message: impl Into<String>) -> Self {
        Self { code: 3, message: message.into() }
    }

    /// Exit 5: the server could not be reached or is unavailable.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self { code: 5, message: message.into() }
    }

    /// Exit 6: a local file could not be read or written.
    pub fn local(message: impl Into<String>) -> Self {
        Self { code: 6, message: message.into() }
    }

    /// The process exit code: 1, 3, 4, 5 or 6 (see `mediabus --help`).
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// The error of a non-success response: the contract's error object (`{status, code,
    /// message}`, DESIGN §3) when the body is one, else the status line.
    pub fn from_response(what: &str, response: &mut Response<Body>) -> Self {
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        let detail = match (body["code"].as_str(), body["message"].as_str()) {
            (Some(code), Some(message)) => format!("{message} ({status} {code})"),
            _ => format!("HTTP {status}"),
        };
        let message = format!("{what}: {detail}");
        match status {
            401 => Self::auth(format!("{message}; run `mediabus login` or set MEDIABUS_TOKEN")),
            404 => Self { code: 4, message },
            502..=504 => Self::unreachable(message),
            _ => Self::failed(message),
        }
    }

    fn transport(base: &str, e: ureq::Error) -> Self {
        Self::unreachable(format!("cannot reach {base}: {e}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where the token came from: only a saved session can be refreshed (and saved again).
enum TokenSource {
    None,
    Given(String),
    Saved(Profile),
}

/// The bridge at one base URL, with the caller's token. Shared by upload threads.
pub struct Api {
    agent: Agent,
    /// Base URL without a trailing `/`.
    pub base: String,
    token: Mutex<TokenSource>,
}

impl Api {
    /// The server and token from the flags (or environment, via clap), else the saved session.
    /// The saved session's tokens go only to the server they were issued by: `--url` naming
    /// another server runs without a token rather than hand that server the user's credentials.
    pub fn new(profile: &Profile, url: Option<String>, token: Option<String>) -> Self {
        let base = url.or_else(|| profile.url.clone()).unwrap_or_else(|| DEFAULT_URL.into());
        let base = base.trim_end_matches('/').to_owned();
        let saved_here = profile.url.as_deref().is_none_or(|u| u.trim_end_matches('/') == base);
        let token = match token.filter(|t| !t.is_empty()) {
            Some(t) => TokenSource::Given(t),
            None if saved_here && profile.access_token.is_some() => TokenSource::Saved(profile.clone()),
            None => TokenSource::None,
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self { agent, base, token: Mutex::new(token) }
    }

    /// `path` (starting with `/`) or an absolute URL, resolved against the base.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// The `Authorization` header value, if there is a token.
    pub fn bearer(&self) -> Option<String> {
        match &*self.token.lock().expect("token lock") {
            TokenSource::None => None,
            TokenSource::Given(t) => Some(format!("Bearer {t}")),
            TokenSource::Saved(p) => p.access_token.as_ref().map(|t| format!("Bearer {t}")),
        }
    }

    /// Sends the request `build` makes (given the current `Authorization` value); on a 401 with a
    /// saved session, refreshes the token once and sends again. Non-success statuses are returned
    /// as responses, not errors; transport failures are [`CliError::unreachable`].
    pub fn send<F>(&self, build: F) -> Result<Response<Body>, CliError>
    where
        F: Fn(&Agent, Option<&str>) -> Result<Response<Body>, ureq::Error>,
    {
        let bearer = self.bearer();
        let response = build(&self.agent, bearer.as_deref()).map_err(|e| CliError::transport(&self.base, e))?;
        if response.status() != 401 || !self.refresh()? {
            return Ok(response);
        }
        let bearer = self.bearer();
        build(&self.agent, bearer.as_deref()).map_err(|e| CliError::transport(&self.base, e))
    }

    /// A JSON request (`body` for POST/PATCH) whose success reply is JSON. Errors: any non-2xx
    /// status as [`CliError::from_response`], naming `what`.
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>, what: &str) -> Result<Value, CliError> {
        let url = self.url(path);
        let mut response = self.send(|agent, bearer| {
            let builder = ureq::http::Request::builder().method(method).uri(&url);
            let builder = match bearer {
                Some(b) => builder.header("authorization", b),
                None => builder,
            };
            match body {
                Some(body) => {
                    let request = builder
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .expect("a valid request");
                    agent.run(request)
                }
                None => agent.run(builder.body(()).expect("a valid request")),
            }
        })?;
        if !response.status().is_success() {
            return Err(CliError::from_response(what, &mut response));
        }
        if response.status() == 204 {
            return Ok(Value::Null);
        }
        response.body_mut().read_json().map_err(|e| CliError::failed(format!("{what}: unreadable reply: {e}")))
    }

    /// Trades the saved refresh token for a new session and saves it. `Ok(false)` when there is
    /// nothing to refresh (no saved session) or the refresh was refused.
    fn refresh(&self) -> Result<bool, CliError> {
        let mut token = self.token.lock().expect("token lock");
        let TokenSource::Saved(profile) = &mut *token else { return Ok(false) };
        let Some(refresh) = profile.refresh_token.clone() else { return Ok(false) };
        let url = self.url("/api/auth/refresh");
        let mut response = self
            .agent
            .post(&url)
            .send_json(json!({ "refreshToken": refresh }))
            .map_err(|e| CliError::transport(&self.base, e))?;
        if !response.status().is_success() {
            return Ok(false);
        }
        let session: Value = response.body_mut().read_json().map_err(|e| CliError::failed(format!("refresh: {e}")))?;
        profile.access_token = session["accessToken"].as_str().map(String::from);
        profile.refresh_token = session["refreshToken"].as_str().map(String::from);
        profile.save()?;
        Ok(profile.access_token.is_some())
    }
}
