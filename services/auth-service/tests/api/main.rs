//! auth-service against real parts: a nats-server, SQLite or MongoDB-wire (nx-27017 or
//! `MONGODB_URI`), bcrypt at a low cost for speed (one test uses a realistic cost for timing).
//!
//! - `accounts`: register, login, me; validation; one error for unknown email and wrong password.
//! - `sessions`: refresh rotation, reuse detection, logout; the same flow on MongoDB.
//! - `throttle`: failed logins per account answer 429.
//! - `tokens`: what auth-service mints and what auth.me refuses (forged, expired, wrong keys),
//!   key rotation, and the media service's verifier accepting minted tokens.
//! - `admin`: the first admin from configuration, service tokens acting for users.

mod accounts;
mod admin;
mod helpers;
mod sessions;
mod throttle;
mod tokens;
