//! media-service against real parts: a nats-server, SQLite or MongoDB-wire (nx-27017 or
//! `MONGODB_URI`), the local file store or S3 (SeaweedFS), and files made by real encoders.
//!
//! - `subjects`: every subject, happy path and each error.
//! - `access`: the access matrix (owner, other user, admin, service, anonymous × public, private ×
//!   every subject).
//! - `lifecycle`: cascades from NestJS events, retention purges, orphan sweeps, counters.
//! - `quota`: per-user quotas (413 `QUOTA_EXCEEDED` before any byte) and `media.usage`.
//! - `hardening`: issue 12's race, validation and upload fixes.
//! - `uploads`: real files, the chunked path over two workers on both file stores, bad input.

mod access;
mod hardening;
mod helpers;
mod lifecycle;
mod quota;
mod subjects;
mod uploads;
