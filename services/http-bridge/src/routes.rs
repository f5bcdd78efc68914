//! The route table: every REST route of DESIGN §7 that maps onto a subject, one line each.
//!
//! A route's `data` is assembled from, in this order (later wins): the JSON body (for [`Source::Body`]),
//! the query string (for [`Source::Query`]), then the path parameters, named as the subject's
//! fields (`/api/media/{id}` → `{"id": ...}`).

use axum::http::{Method, StatusCode};

/// Where a route's `data` comes from besides its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A JSON object body.
    Body,
    /// Query-string filters (`?limit=10&type=IMAGE`).
    Query,
    /// Path parameters only.
    Path,
}

/// One REST route and the subject it calls.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// axum path syntax: `/api/media/{id}`.
    pub path: &'static str,
    pub subject: &'static str,
    pub source: Source,
    /// Status of a successful reply.
    pub ok: StatusCode,
}

const fn route(method: Method, path: &'static str, subject: &'static str, source: Source, ok: StatusCode) -> Route {
    Route { method, path, subject, source, ok }
}

use Source::{Body, Path, Query};
const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

/// method, path, subject, data source, success status.
pub static ROUTES: [Route; 12] = [
    route(Method::POST, "/api/auth/register", "auth.register", Body, CREATED),
    route(Method::POST, "/api/auth/login", "auth.login", Body, OK),
    route(Method::POST, "/api/auth/refresh", "auth.refresh", Body, OK),
    route(Method::POST, "/api/auth/logout", "auth.logout", Body, OK),
    route(Method::GET, "/api/auth/me", "auth.me", Path, OK),
    route(Method::POST, "/api/media", "media.create", Body, CREATED),
    route(Method::GET, "/api/media", "media.findAll", Query, OK),
    route(Method::GET, "/api/media/{id}", "media.findOne", Path, OK),
    route(Method::PATCH, "/api/media/{id}", "media.update", Body, OK),
    route(Method::DELETE, "/api/media/{id}", "media.remove", Path, OK),
    route(Method::GET, "/api/users/{userId}/media", "media.findByUser", Query, OK),
    route(Method::GET, "/api/entities/{entityType}/{entityId}/media", "media.findByEntity", Query, OK),
];

/// Query parameters that are not strings on the subject side. Everything else stays a string
/// (so `?q=123` searches for the text "123").
pub fn typed_query_value(key: &str, value: &str) -> serde_json::Value {
    match key {
        "limit" => value.parse::<u64>().map_or_else(|_| value.into(), Into::into),
        "isPublic" => match value {
            "true" => true.into(),
            "false" => false.into(),
            _ => value.into(),
        },
        _ => value.into(),
    }
}
