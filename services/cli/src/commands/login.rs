//! `mediabus login` / `logout`: `POST /api/auth/login` and `/api/auth/logout` (DESIGN §7).

use std::io::{BufRead, Write};

use serde_json::json;

use crate::client::{Api, CliError};
use crate::config::Profile;

/// Signs in with an email and password (asked for on the terminal unless given) and saves the
/// session for the server in use.
pub fn login(api: &Api, mut profile: Profile, email: Option<String>, password_stdin: bool) -> Result<(), CliError> {
    let email = match email {
        Some(e) => e,
        None => prompt("Email: ")?,
    };
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::local(format!("stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password("Password: ").map_err(|e| CliError::local(format!("password prompt: {e}")))?
    };
    let session = api
        .json("POST", "/api/auth/login", Some(&json!({"email": email, "password": password})), "login")
        // The generic 401 advice ("run `mediabus login`") makes no sense here.
        .map_err(|e| if e.exit_code() == 3 { CliError::auth("login: wrong email or password") } else { e })?;
    profile.url = Some(api.base.clone());
    profile.access_token = session["accessToken"].as_str().map(String::from);
    profile.refresh_token = session["refreshToken"].as_str().map(String::from);
    if profile.access_token.is_none() {
        return Err(CliError::failed("login: the server answered without an access token"));
    }
    profile.save()?;
    let who = session["user"]["email"].as_str().unwrap_or(&email);
    eprintln!("Signed in to {} as {who}.", api.base);
    Ok(())
}

/// Revokes the saved refresh token (best effort) and forgets the session.
pub fn logout(api: &Api, mut profile: Profile) -> Result<(), CliError> {
    if let Some(refresh) = profile.refresh_token.take() {
        // Revoked where it was issued, whatever `--url` says: the refresh token goes to no other
        // server. A server that cannot be reached still gets the local session forgotten.
        let home = Api::new(&profile, profile.url.clone().or_else(|| Some(api.base.clone())), None);
        if let Err(e) = home.json("POST", "/api/auth/logout", Some(&json!({"refreshToken": refresh})), "logout") {
            eprintln!("mediabus: {e} (the local session is removed anyway)");
        }
    }
    profile.access_token = None;
    profile.save()?;
    eprintln!("Signed out.");
    Ok(())
}

fn prompt(label: &str) -> Result<String, CliError> {
    let mut out = std::io::stderr();
    let _ = write!(out, "{label}");
    let _ = out.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::local(format!("stdin: {e}")))?;
    Ok(line.trim().to_owned())
}
