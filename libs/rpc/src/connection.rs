//! Connecting a long-running binary to NATS as its own user (nats/permissions.conf).

use secrecy::{ExposeSecret, SecretString};

/// The `[nats]` section of every binary's settings: where NATS is and which user this binary is
/// on it. `Debug` never shows the password.
#[derive(Clone, serde::Deserialize)]
pub struct NatsSettings {
    /// Server URL, e.g. `nats://127.0.0.1:4222`, or several separated by commas (the nodes of a
    /// cluster: the first reachable one is used, the others on reconnect; the client also learns
    /// the nodes a server announces). Credentials in the URL are not used (the NATS clients
    /// ignore them): set `user` and `password`.
    pub url: String,
    /// NATS user; empty: connect without credentials (a server without authorization).
    #[serde(default)]
    pub user: String,
    /// The user's password (from the environment or a secret store in production); never
    /// printed.
    #[serde(default)]
    pub password: SecretString,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings").field("url", &self.url).field("user", &self.user).finish_non_exhaustive()
    }
}

impl NatsSettings {
    /// `url`, without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), user: String::new(), password: SecretString::default() }
    }

    /// The same server as `user` with `password`.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = user.into();
        self.password = SecretString::from(password.into());
        self
    }

    /// Prefix of the reply subjects of this connection's requests: `_INBOX_<user>`, which
    /// nats/permissions.conf lets only that user subscribe to, so no other user can read the
    /// replies; `_INBOX` (the NATS default) without a user.
    pub fn inbox_prefix(&self) -> String {
        if self.user.is_empty() { "_INBOX".to_owned() } else { format!("_INBOX_{}", self.user) }
    }

    /// Connects for a long-running binary: named connection `name` (shows in `nats server report
    /// connections`), authenticated as `user`, replies on [`NatsSettings::inbox_prefix`],
    /// unlimited reconnects with back-off, and a subscription buffer of `subscription_capacity`
    /// messages per subject (the bound on queued requests; excess is dropped by NATS as a slow
    /// consumer rather than growing memory). Server errors, such as a permissions violation, are
    /// logged as warnings.
    ///
    /// Errors: the first connection attempt fails (bad URL, server down, credentials refused).
    pub async fn connect(
        &self,
        name: &str,
        subscription_capacity: usize,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut options = async_nats::ConnectOptions::new();
        if !self.user.is_empty() {
            options = options.user_and_password(self.user.clone(), self.password.expose_secret().to_owned());
        }
        options
            .name(name)
            .custom_inbox_prefix(self.inbox_prefix())
            .max_reconnects(None)
            .subscription_capacity(subscription_capacity)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected, reconnecting"),
                    async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(self.urls())
            .await
    }

    /// The URLs of [`NatsSettings::url`], split at commas, trimmed, empty ones dropped.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_and_inboxes_are_per_user() {
        let settings = NatsSettings::new("nats://127.0.0.1:4222").with_user("media", "s3cret-pw");
        let shown = format!("{settings:?}");
        assert!(shown.contains("media") && !shown.contains("s3cret-pw"), "{shown}");
        assert_eq!(settings.inbox_prefix(), "_INBOX_media");
        assert_eq!(NatsSettings::new("nats://x").inbox_prefix(), "_INBOX");
    }

    #[test]
    fn a_url_list_is_split_at_commas() {
        let settings = NatsSettings::new("nats://127.0.0.1:4222, nats://127.0.0.1:4223,,nats://b:4224 ");
        assert_eq!(settings.urls(), ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://b:4224"]);
        assert_eq!(NatsSettings::new("nats://a:1").urls(), ["nats://a:1"]);
    }
}
