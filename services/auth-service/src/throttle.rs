//! Throttling of `auth.login` and `auth.register` by account and by source address, with the
//! counters in the document store so every worker of the group shares them.
//!
//! The source is the end client's address, which the HTTP bridge sets as the NATS header
//! [`CLIENT_ADDR_HEADER`] from the TCP peer of the request (never from a client header). Only
//! trusted NATS users may call the auth subjects, so the header is believed; callers that do not
//! set it (backend services calling over NATS) share the source `-`. IPv6 addresses count per
//! /64, the block a single client usually holds.
//!
//! - Login, per account and source: more than `max_failed_logins` attempts without a success in
//!   `failed_login_window_secs` → 429 for that source only. Guessing from one place stops; the
//!   owner, elsewhere, still gets in (a lockout keyed on the account alone let anyone lock any
//!   account, the admin's included).
//! - Login, per account over all sources: past the same count, each attempt first waits
//!   100 ms × 2^(excess − 1), at most `login_delay_max_ms`. This slows guessing spread over many
//!   addresses without ever refusing the right password; a successful login clears it.
//! - Registration, per source: more than `max_registrations` attempts in
//!   `registration_window_secs` → 429.
//!
//! Attempts are counted before the password is checked, so parallel guesses cannot slip past a
//! limit; unknown emails are counted like known ones, so the limits reveal nothing.

use std::net::IpAddr;
use std::time::Duration;

use mediabus_contracts::Timestamp;
pub use mediabus_contracts::auth::CLIENT_ADDR_HEADER;
use mediabus_rpc::Ctx;

use crate::AppState;
use crate::error::{AuthFailure, Result};

/// The first delay once an account is past `max_failed_logins` over all sources.
const BASE_DELAY: Duration = Duration::from_millis(100);

/// Where a request comes from, as a throttling key: an IPv4 address, an IPv6 /64, or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source(String);

impl Source {
    /// The source of the request in `ctx` (header [`CLIENT_ADDR_HEADER`]).
    pub fn of<S>(ctx: &Ctx<S>) -> Self {
        Self::parse(ctx.header(CLIENT_ADDR_HEADER))
    }

    /// `header` as a source: an IP address (IPv6 reduced to its /64); `-` when absent or not an
    /// address.
    pub fn parse(header: Option<&str>) -> Self {
        match header.and_then(|h| h.trim().parse::<IpAddr>().ok()) {
            Some(IpAddr::V4(v4)) => Self(v4.to_string()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(v4.to_string()),
                None => {
                    let s = v6.segments();
                    Self(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
                }
            },
            None => Self("-".to_owned()),
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login attempt let through: how long to wait first, and the counters a success clears.
pub struct LoginAttempt {
    /// Wait this long before checking the password.
    pub delay: Duration,
    keys: Option<[String; 2]>,
}

impl LoginAttempt {
    /// The password matched: clears the account's counters (this source's and the shared one).
    ///
    /// Errors: the store failed.
    pub async fn succeeded(self, state: &AppState) -> Result<()> {
        for key in self.keys.iter().flatten() {
            state.store.clear_login_attempts(key).await?;
        }
        Ok(())
    }
}

/// Counts a login attempt for `email` from `source`.
///
/// Errors: 429 [`AuthFailure::TooManyAttempts`] when this source is past the limit for the
/// account; a store failure.
pub async fn login(state: &AppState, email: &str, source: &Source) -> Result<LoginAttempt> {
    let settings = &state.settings;
    let max = settings.max_failed_logins;
    if max == 0 {
        return Ok(LoginAttempt { delay: Duration::ZERO, keys: None });
    }
    let window = Duration::from_secs(settings.failed_login_window_secs);
    let now = Timestamp::now();
    // Emails hold no spaces (they are trimmed and validated), so the keys cannot collide.
    let here = format!("login {email} from {}", source.as_str());
    let anywhere = format!("login {email}");
    let attempts = state.store.record_login_attempt(&here, now, window).await?;
    if attempts.count > max {
        tracing::warn!(attempts = attempts.count, source = source.as_str(), "login throttled for this source");
        return Err(too_many(attempts.window_start, window, now));
    }
    let all = state.store.record_login_attempt(&anywhere, now, window).await?;
    let delay = account_delay(all.count, max, Duration::from_millis(settings.login_delay_max_ms));
    if !delay.is_zero() {
        tracing::warn!(attempts = all.count, delay_ms = delay.as_millis() as u64, "login delayed: many failures");
    }
    Ok(LoginAttempt { delay, keys: Some([here, anywhere]) })
}

/// Counts a registration attempt from `source`.
///
/// Errors: 429 [`AuthFailure::TooManyAttempts`] past `max_registrations` in the window; a store
/// failure.
pub async fn registration(state: &AppState, source: &Source) -> Result<()> {
    let settings = &state.settings;
    if settings.max_registrations == 0 {
        return Ok(());
    }
    let window = Duration::from_secs(settings.registration_window_secs);
    let now = Timestamp::now();
    let key = format!("register from {}", source.as_str());
    let attempts = state.store.record_login_attempt(&key, now, window).await?;
    if attempts.count > settings.max_registrations {
        tracing::warn!(attempts = attempts.count, source = source.as_str(), "registration throttled");
        return Err(too_many(attempts.window_start, window, now));
    }
    Ok(())
}

/// The delay for an account with `count` attempts over all sources: none up to `max`, then
/// [`BASE_DELAY`] doubling per attempt, at most `cap`.
fn account_delay(count: u32, max: u32, cap: Duration) -> Duration {
    let excess = count.saturating_sub(max);
    if excess == 0 {
        return Duration::ZERO;
    }
    BASE_DELAY.saturating_mul(1u32 << (excess - 1).min(20)).min(cap)
}

/// 429 with the seconds until the window that started at `window_start` ends.
fn too_many(window_start: Timestamp, window: Duration, now: Timestamp) -> AuthFailure {
    let ends = window_start.unix_millis().saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let retry_after_secs = u64::try_from((ends - now.unix_millis() + 999) / 1000).unwrap_or(0).max(1);
    AuthFailure::TooManyAttempts { retry_after_secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_addresses_ipv6_per_64_and_anything_else_is_shared() {
        assert_eq!(Source::parse(Some("203.0.113.7")).as_str(), "203.0.113.7");
        assert_eq!(Source::parse(Some(" 2001:db8:1:2:3:4:5:6 ")).as_str(), "2001:db8:1:2::/64");
        assert_eq!(Source::parse(Some("2001:db8:1:2:ffff::1")).as_str(), "2001:db8:1:2::/64");
        assert_eq!(Source::parse(Some("::ffff:198.51.100.1")).as_str(), "198.51.100.1");
        assert_eq!(Source::parse(Some("not an address")).as_str(), "-");
        assert_eq!(Source::parse(None).as_str(), "-");
    }

    #[test]
    fn the_account_delay_doubles_from_the_limit_up_to_the_cap() {
        let cap = Duration::from_secs(2);
        assert_eq!(account_delay(5, 5, cap), Duration::ZERO);
        assert_eq!(account_delay(6, 5, cap), Duration::from_millis(100));
        assert_eq!(account_delay(8, 5, cap), Duration::from_millis(400));
        assert_eq!(account_delay(60, 5, cap), cap);
        assert_eq!(account_delay(u32::MAX, 5, cap), cap);
    }
}
