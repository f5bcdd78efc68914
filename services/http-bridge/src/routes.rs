//! The route table: every REST route of DESIGN §7 that maps onto a subject, one line each.
//!
//! A route's `data` is assembled from, in this order (later wins): the JSON body (for [`Source::Body`]),
//! the query string (for [`Source::Query`]), then the path parameters, named as the subject's
//! fields (`/api/media/{id}` → `{"id": ...}`).
//!
//! Each row also carries its OpenAPI description ([`Api`], via [`Row::doc`]): `GET /openapi.json`
//! is generated from this table (`crate::openapi`), so a new route is documented in its own row.

use axum::http::{Method, StatusCode};
use mediabus_contracts::auth::{Login, Refresh, Register, Session, UserView};
use mediabus_contracts::lifecycle::{MediaStats, Usage};
use mediabus_contracts::requests::{ContentTicket, CreateMedia, ListQuery};
use mediabus_contracts::{Media, Page};

use crate::openapi::Access::{Bearer, Optional, Public};
use crate::openapi::Input::{Json, Nothing, Params};
use crate::openapi::schemas::{Empty, MediaPatch};
use crate::openapi::{Access, Api, Input, SchemaFn, json, listing_for_user, query};

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
    /// The OpenAPI description (`crate::openapi`).
    pub api: Api,
}

/// A row of the table: method, path, subject, data source, success status, and its [`doc`].
const fn route(
    method: Method,
    path: &'static str,
    subject: &'static str,
    source: Source,
    ok: StatusCode,
    api: Api,
) -> Route {
    Route { method, path, subject, source, ok, api }
}

/// A route's OpenAPI description: a one-line summary, who may call it, what it reads (must match
/// the row's `source`: `Json` for `Body`, `Params` for `Query`, `Nothing` for `Path`; a unit test
/// checks), the success reply's schema, and the error statuses the subject returns besides those
/// every route gets (see [`Api::errors`]). E.g. for `media.content`:
/// `doc("A signed URL to the bytes", Optional, Nothing, json::<ContentTicket>, &[404])`.
const fn doc(summary: &'static str, access: Access, input: Input, reply: SchemaFn, errors: &'static [u16]) -> Api {
    Api { summary, access, input, reply, errors, idempotent: false }
}

impl Api {
    /// Documents the `Idempotency-Key` header (the subject makes retries with one safe).
    const fn idempotent(mut self) -> Api {
        self.idempotent = true;
        self
    }
}

use Source::{Body, Path, Query};
const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

/// method, path, subject, data source, success status; then the OpenAPI [`doc`]: summary, access,
/// input, reply, error statuses. Kept as a table by hand (rustfmt would spread each row over ten lines).
#[rustfmt::skip]
pub static ROUTES: [Route; 15] = [
    route(Method::POST, "/api/auth/register", "auth.register", Body, CREATED,
        doc("Create an account (role user) and sign in", Public, Json(json::<Register>), json::<Session>, &[409, 429])),
    route(Method::POST, "/api/auth/login", "auth.login", Body, OK,
        doc("Sign in with email and password", Public, Json(json::<Login>), json::<Session>, &[401, 429])),
    route(Method::POST, "/api/auth/refresh", "auth.refresh", Body, OK,
        doc("Rotate a refresh token: new access and refresh tokens", Public, Json(json::<Refresh>), json::<Session>, &[401])),
    route(Method::POST, "/api/auth/logout", "auth.logout", Body, OK,
        doc("End the session of a refresh token", Public, Json(json::<Refresh>), json::<Empty>, &[401])),
    route(Method::GET, "/api/auth/me", "auth.me", Path, OK,
        doc("The caller's account", Bearer, Nothing, json::<UserView>, &[400, 404])),
    route(Method::POST, "/api/media", "media.create", Body, CREATED,
        doc("Register media that lives at a URL", Bearer, Json(json::<CreateMedia>), json::<Media>, &[409]).idempotent()),
    route(Method::GET, "/api/media", "media.findAll", Query, OK,
        doc("List the media the caller may see", Optional, Params(listing_for_user), json::<Page>, &[])),
    route(Method::GET, "/api/media/{id}", "media.findOne", Path, OK,
        doc("One media document", Optional, Nothing, json::<Media>, &[404])),
    route(Method::PATCH, "/api/media/{id}", "media.update", Body, OK,
        doc("Change a media's fields (owner or admin)", Bearer, Json(json::<MediaPatch>), json::<Media>, &[403, 404])),
    route(Method::DELETE, "/api/media/{id}", "media.remove", Path, OK,
        doc("Soft-delete a media: status DELETED (owner or admin)", Bearer, Nothing, json::<Media>, &[403, 404])),
    route(Method::GET, "/api/users/{userId}/media", "media.findByUser", Query, OK,
        doc("Media owned by a user, as the caller may see them", Optional, Params(query::<ListQuery>), json::<Page>, &[])),
    route(Method::GET, "/api/entities/{entityType}/{entityId}/media", "media.findByEntity", Query, OK,
        doc("Media linked to an entity", Optional, Params(listing_for_user), json::<Page>, &[])),
    route(Method::GET, "/api/media/{id}/content-url", "media.content", Path, OK,
        doc("A signed URL to the bytes, valid without Authorization until expiresAt", Optional, Nothing, json::<ContentTicket>, &[404])),
    route(Method::GET, "/api/media/{id}/stats", "media.stats", Path, OK,
        doc("Views and downloads of a media (owner or admin; counts arrive within seconds)", Bearer, Nothing, json::<MediaStats>, &[404])),
    route(Method::GET, "/api/users/{userId}/usage", "media.usage", Path, OK,
        doc("A user's stored bytes, media and open uploads, and its quotas (0: none); the user or an admin", Bearer, Nothing, json::<Usage>, &[403])),
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
