//! `mediabus rm`: `DELETE /api/media/{id}` for each id.

use crate::client::{Api, CliError};

/// Deletes each media; stops at the first failure (its exit code is the command's).
pub fn run(api: &Api, ids: &[String]) -> Result<(), CliError> {
    for id in ids {
        api.json("DELETE", &format!("/api/media/{id}"), None, &format!("delete {id}"))?;
        super::out(&format!("deleted {id}"))?;
    }
    Ok(())
}
