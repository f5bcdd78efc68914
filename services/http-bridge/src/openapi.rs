//! The bridge's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Generated, not written: the JSON routes come from [`crate::routes::ROUTES`] (each row carries
//! an [`Api`]: summary, access, input, reply schema, error statuses), the schemas from the
//! contract types (`#[derive(ToSchema)]` in mediabus-contracts, feature `openapi`) and from the
//! documentation-only shapes in [`schemas`] (auth payloads, the error object). The routes that
//! are not subject calls (upload, content, tus, HLS, events, health) are described in [`paths`].

use std::sync::LazyLock;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
};
use utoipa::{IntoParams, ToSchema};

use crate::routes::{ROUTES, Route};

// The routes outside the route table: file transfer, tus, HLS, events, health.
mod paths;

/// Named schemas collected while the document is built: `(name, schema)`, duplicates allowed
/// (the last one wins; they are the same type).
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// Registers a schema (and every schema it references) in `Schemas`; returns a `$ref` to it.
/// Use [`json`]`::<T>` for a contract type.
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// The query parameters of a route, e.g. [`query`]`::<ListQuery>`.
pub type ParamsFn = fn() -> Vec<Parameter>;

/// [`SchemaFn`] of a `ToSchema` type: registers it as `#/components/schemas/<name>`.
pub fn json<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
    Ref::from_schema_name(T::name()).into()
}

/// [`ParamsFn`] of an `IntoParams` type: its fields as query parameters. A query parameter is
/// absent or a value, never `null`, so the nullability of `Option` fields is dropped.
pub fn query<T: IntoParams>() -> Vec<Parameter> {
    let mut params = T::into_params(|| Some(ParameterIn::Query));
    for param in &mut params {
        if let Some(RefOr::T(schema)) = param.schema.take() {
            param.schema = Some(not_null(schema));
        }
    }
    params
}

/// `T | null` → `T`, for the two shapes utoipa gives `Option<T>`: a type list, or `oneOf` with a
/// `null` branch.
fn not_null(schema: Schema) -> RefOr<Schema> {
    let is_null =
        |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    match schema {
        Schema::Object(mut object) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                object.schema_type =
                    if kept.len() == 1 { SchemaType::Type(kept[0].clone()) } else { SchemaType::Array(kept) };
            }
            RefOr::T(Schema::Object(object))
        }
        Schema::OneOf(mut one_of) => {
            one_of.items.retain(|s| !is_null(s));
            if one_of.items.len() == 1 { one_of.items.remove(0) } else { RefOr::T(Schema::OneOf(one_of)) }
        }
        other => RefOr::T(other),
    }
}

/// Who may call a route; becomes the operation's `security` and adds 401 to its responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: the auth routes that issue or end tokens (their 401s, if any, are listed).
    Public,
    /// Anonymous callers get what is public; a bearer token shows the caller's own media too.
    /// An invalid or expired token is still 401.
    Optional,
    /// `Authorization: Bearer <access JWT>` required (401 without).
    Bearer,
}

/// What a route reads besides its path parameters; must agree with the row's [`crate::routes::Source`].
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// Path parameters only.
    Nothing,
    /// A JSON object body of this schema (`Source::Body`).
    Json(SchemaFn),
    /// Query-string parameters (`Source::Query`).
    Params(ParamsFn),
}

/// The OpenAPI description of one route of the table.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    /// One line for the operation's `summary`.
    pub summary: &'static str,
    pub access: Access,
    pub input: Input,
    /// The JSON body of the success status.
    pub reply: SchemaFn,
    /// Error statuses the subject answers with, besides those every route of its kind can
    /// return: 503 and 504 (no responders, timeout), 400 for a body or query, 401 unless
    /// [`Access::Public`].
    pub errors: &'static [u16],
    /// Honours `Idempotency-Key` (documented as a header parameter).
    pub idempotent: bool,
}

/// Descriptions of the path parameters used in the table, by name (`{id}` → `id`).
const PATH_PARAMS: [(&str, &str); 4] = [
    ("id", "Media id (cuid2)."),
    ("userId", "The owner's user id."),
    ("entityType", "Kind of the linked entity (`course`, `lesson`, ...): 1 to 128 printable characters."),
    ("entityId", "Id of the linked entity: 1 to 128 printable characters."),
];

/// The name of the bearer security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// The document, built once per process.
static DOCUMENT: LazyLock<Result<bytes::Bytes, String>> =
    LazyLock::new(|| serde_json::to_vec(&document()).map(Into::into).map_err(|e| e.to_string()));

/// `GET /openapi.json`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// The document as `application/json`; 500 with the error object if it could not be serialised
/// (it always can: the shapes are fixed at compile time).
async fn openapi_json() -> Response {
    match &*DOCUMENT {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "OpenAPI document");
            let err = mediabus_rpc::RpcError::internal();
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(err)).into_response()
        }
    }
}

/// Builds the whole document: the route table, the file and service routes, the schemas and the
/// bearer (JWT) security scheme.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::new();
    let mut paths = Paths::new();
    for route in &ROUTES {
        let Some(method) = http_method(&route.method) else {
            tracing::error!(method = %route.method, path = route.path, "route method has no OpenAPI form");
            continue;
        };
        paths.add_path_operation(route.path, vec![method], operation(route, &mut schemas));
    }
    paths::file_routes(&mut paths, &mut schemas);
    paths::service_routes(&mut paths, &mut schemas);
    // Referenced by query parameters, which do not register what they use.
    json::<mediabus_contracts::MediaType>(&mut schemas);
    json::<mediabus_contracts::MediaStatus>(&mut schemas);
    json::<schemas::Error>(&mut schemas);

    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some("Access token from /api/auth/login, /api/auth/register or /api/auth/refresh."))
        .build();
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(BEARER, SecurityScheme::Http(bearer))
        .build();
    let info = InfoBuilder::new()
        .title("mediabus HTTP bridge")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "REST routes onto the mediabus NATS subjects. Errors are `{status, code, message, details?}` \
             with HTTP status = `status`; 503 when no worker serves the subject, 504 when it does not \
             answer in time.",
        ))
        .build();
    OpenApiBuilder::new().info(info).paths(paths).components(Some(components)).build()
}

/// The operation of one table row.
fn operation(route: &Route, schemas: &mut Schemas) -> Operation {
    let api = &route.api;
    let mut builder = OperationBuilder::new()
        .operation_id(Some(route.subject))
        .summary(Some(api.summary))
        .description(Some(format!("Subject `{}`.", route.subject)))
        .tag(route.subject.split('.').next().unwrap_or(route.subject))
        .parameters(Some(path_params(route.path)));
    let mut errors: Vec<u16> = api.errors.to_vec();
    match api.input {
        Input::Nothing => {}
        Input::Json(schema) => {
            let content = ContentBuilder::new().schema(Some(schema(schemas))).build();
            // The bridge reads an empty body as `{}` (a PATCH without fields is a no-op), so the
            // body is optional on the wire; missing fields are the subject's 400.
            let body = RequestBodyBuilder::new()
                .required(Some(Required::False))
                .description(Some("A JSON object; an empty body counts as `{}`."))
                .content("application/json", content);
            builder = builder.request_body(Some(body.build()));
            errors.push(400);
        }
        Input::Params(params) => {
            builder = builder.parameters(Some(params()));
            errors.push(400);
        }
    }
    if api.idempotent {
        builder = builder.parameter(idempotency_key());
    }
    builder = secured(builder, api.access, &mut errors);
    let ok = ResponseBuilder::new()
        .description(route.ok.canonical_reason().unwrap_or("Success"))
        .content("application/json", ContentBuilder::new().schema(Some((api.reply)(schemas))).build());
    let mut responses = ResponsesBuilder::new().response(route.ok.as_str(), ok);
    for status in with_transport_errors(errors) {
        responses = responses.response(status.to_string(), error_response(status));
    }
    builder.responses(responses.build()).build()
}

/// Adds the security requirement of `access`, and 401 for non-public routes.
fn secured(builder: OperationBuilder, access: Access, errors: &mut Vec<u16>) -> OperationBuilder {
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    match access {
        Access::Public => builder,
        Access::Optional => {
            errors.push(401);
            // `{}` as an alternative: the route also answers anonymous callers.
            builder.securities(Some([bearer, SecurityRequirement::default()]))
        }
        Access::Bearer => {
            errors.push(401);
            builder.securities(Some([bearer]))
        }
    }
}

/// `errors` plus 503 and 504, sorted, without duplicates.
fn with_transport_errors(mut errors: Vec<u16>) -> Vec<u16> {
    errors.extend([503, 504]);
    errors.sort_unstable();
    errors.dedup();
    errors
}

/// A response with the error object.
fn error_response(status: u16) -> ResponseBuilder {
    let error = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
    ResponseBuilder::new().description(error_description(status)).content("application/json", error)
}

/// What an error status means on this API.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Invalid request: malformed JSON, a field of the wrong type, or a value out of range",
        401 => "Missing, invalid or expired credentials",
        403 => "Signed in, but not the owner (or an admin)",
        404 => "Not found, or not visible to the caller",
        409 => "Conflict (email taken, or a request with the same Idempotency-Key still in progress)",
        413 => "Body or file too large",
        415 => "File type not accepted",
        416 => "Range not satisfiable",
        422 => "Unprocessable input",
        429 => "Too many attempts: retry after `details.retryAfterSecs` seconds",
        503 => "No worker serves the subject, or a backend is unavailable",
        504 => "The subject did not answer in time",
        _ => "Error",
    }
}

/// The path parameters of an axum/OpenAPI path (`/api/media/{id}` → `id`), required strings.
fn path_params(path: &str) -> Vec<Parameter> {
    path_param_names(path)
        .map(|name| {
            let description = PATH_PARAMS.iter().find(|(n, _)| *n == name).map_or("Path parameter.", |(_, d)| *d);
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1))))
                .build()
        })
        .collect()
}

/// `{name}` segments of a path, in order.
fn path_param_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn http_method(method: &Method) -> Option<HttpMethod> {
    Some(match *method {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => return None,
    })
}

/// An optional header parameter of type string.
fn header_param(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn idempotency_key() -> Parameter {
    header_param(
        "Idempotency-Key",
        "1 to 256 bytes: a retry with the same key (same caller) returns the first result instead of creating again.",
    )
}

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn binary_schema() -> ObjectBuilder {
    string_schema().format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
}

/// A response header of type string.
fn response_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new().schema(string_schema()).description(Some(description)).build()
}

/// Documentation-only shapes: payloads of subjects whose types live in service crates (which the
/// bridge does not depend on), the error object (`RpcError` in mediabus-rpc, which stays free of
/// utoipa), and bodies that differ from the subject's data because the path supplies a field.
/// The schemathesis e2e test checks them against the real services' replies.
#[allow(dead_code)] // never constructed: only their `ToSchema` is used
pub mod schemas {
    use serde_json::Value;
    use utoipa::ToSchema;

    /// The error object of every failure (DESIGN §3); the HTTP status equals `status`.
    #[derive(ToSchema)]
    pub struct Error {
        /// HTTP-equivalent status.
        #[schema(minimum = 400, maximum = 599)]
        pub status: u16,
        /// Stable UPPER_SNAKE code, e.g. `NOT_FOUND`, `VALIDATION_FAILED`, `UNAVAILABLE`.
        pub code: String,
        /// Human-readable, safe to show.
        pub message: String,
        /// Optional structured detail (e.g. `retryAfterSecs` for 429).
        #[schema(required = false)]
        pub details: Option<Value>,
    }

    /// An empty object (`auth.logout`).
    #[derive(ToSchema)]
    pub struct Empty {}

    /// Body of `PATCH /api/media/{id}` (`media.update`; the id comes from the path): only the
    /// fields present change, `null` clears.
    #[derive(ToSchema)]
    #[schema(rename_all = "camelCase")]
    pub struct MediaPatch {
        #[schema(required = false)]
        pub original_name: Option<String>,
        /// Caller-supplied JSON object, stored as given (size-limited); `null` clears.
        #[schema(required = false, value_type = Option<Object>)]
        pub metadata: Option<Value>,
        #[schema(required = false)]
        pub is_public: Option<bool>,
        #[schema(required = false)]
        pub entity_id: Option<String>,
        #[schema(required = false)]
        pub entity_type: Option<String>,
    }

    /// Reply of `GET /healthz`.
    #[derive(ToSchema)]
    pub struct Health {
        /// Always `ok`.
        pub status: String,
    }

    /// Reply of `GET /readyz`.
    #[derive(ToSchema)]
    pub struct Readiness {
        /// NATS connected and every listed service answered.
        pub ready: bool,
        /// NATS connected.
        pub nats: bool,
        /// Service name → answered `$SRV.PING.<name>`.
        pub services: std::collections::BTreeMap<String, bool>,
    }
}

/// The `userId` query parameter of listings where admin and service callers act for a user.
fn acting_for_param() -> Parameter {
    ParameterBuilder::new()
        .name("userId")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("Admin and service callers: list as this user. Ignored for other callers."))
        .schema(Some(string_schema()))
        .build()
}

/// [`ParamsFn`]: the listing filters ([`mediabus_contracts::requests::ListQuery`]) plus `userId`.
pub fn listing_for_user() -> Vec<Parameter> {
    let mut params = query::<mediabus_contracts::requests::ListQuery>();
    params.push(acting_for_param());
    params
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::routes::Source;

    fn doc() -> Value {
        serde_json::to_value(document()).expect("serialisable")
    }

    #[test]
    fn every_route_of_the_table_is_documented_with_its_method() {
        let doc = doc();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        for route in &ROUTES {
            let method = route.method.as_str().to_ascii_lowercase();
            let op = &doc["paths"][route.path][&method];
            assert_eq!(op["operationId"], route.subject, "{} {}", route.method, route.path);
            assert!(op["responses"][route.ok.as_str()]["content"]["application/json"].is_object(), "{}", route.path);
            for status in ["503", "504"] {
                assert!(op["responses"][status].is_object(), "{} {} lacks {status}", route.method, route.path);
            }
        }
    }

    #[test]
    fn inputs_agree_with_where_the_bridge_reads_data() {
        let doc = doc();
        for route in &ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            let has_query = op["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
            match (route.source, route.api.input) {
                (Source::Body, Input::Json(_)) => assert!(op["requestBody"].is_object()),
                (Source::Query, Input::Params(_)) => assert!(has_query, "{}", route.path),
                (Source::Path, Input::Nothing) => assert!(op["requestBody"].is_null() && !has_query),
                (source, input) => panic!("{} {}: source {source:?} but input {input:?}", route.method, route.path),
            }
        }
    }

    #[test]
    fn path_parameters_are_declared_and_described() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert_eq!(declared, path_param_names(path).collect(), "{method} {path}");
            }
        }
        for route in &ROUTES {
            for name in path_param_names(route.path) {
                assert!(PATH_PARAMS.iter().any(|(n, _)| *n == name), "describe {{{name}}} in PATH_PARAMS");
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "unresolved {r}");
        }
    }

    #[test]
    fn contract_schemas_keep_the_wire_names() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let media: BTreeSet<&str> =
            schemas["Media"]["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["id", "type", "originalName", "mimeType", "userId", "isPublic", "createdAt", "variants"] {
            assert!(media.contains(key), "Media lacks {key}: {media:?}");
        }
        assert_eq!(schemas["MediaType"]["enum"], serde_json::json!(["IMAGE", "VIDEO", "AUDIO", "DOCUMENT", "OTHER"]));
        assert_eq!(schemas["Timestamp"]["format"], "date-time");
        let error_required = &schemas["Error"]["required"];
        assert_eq!(error_required, &serde_json::json!(["status", "code", "message"]));
        let list = &doc["paths"]["/api/media"]["get"]["parameters"];
        let names: BTreeSet<&str> = list.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        for name in ["limit", "cursor", "type", "status", "isPublic", "q", "sort"] {
            assert!(names.contains(name), "{names:?}");
        }
        let schema_of = |name: &str| {
            list.as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["schema"].clone()).unwrap()
        };
        assert_eq!(schema_of("limit")["type"], "integer", "query parameters are never null");
        assert_eq!(schema_of("isPublic")["type"], "boolean");
        assert_eq!(schema_of("type")["$ref"], "#/components/schemas/MediaType");
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
    }

    #[test]
    fn upload_and_content_routes_are_described() {
        let doc = doc();
        let upload = &doc["paths"]["/api/media/upload"]["post"];
        let form = &upload["requestBody"]["content"]["multipart/form-data"]["schema"];
        assert_eq!(form["required"], serde_json::json!(["file"]));
        for status in ["201", "400", "401", "413", "415", "503", "504"] {
            assert!(upload["responses"][status].is_object(), "upload lacks {status}");
        }
        let content = &doc["paths"]["/api/media/{id}/content"]["get"]["responses"];
        for status in ["200", "206", "304", "401", "404", "416", "503"] {
            assert!(content[status].is_object(), "content lacks {status}");
        }
        assert!(content["206"]["headers"]["Content-Range"].is_object());
        assert!(content["200"]["headers"]["ETag"].is_object());
        let content = &doc["paths"]["/api/media/{id}/content"]["get"];
        let variant = content["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "variant").unwrap();
        assert_eq!(variant["schema"]["enum"], serde_json::json!(["thumb", "preview"]));
        let hls = &doc["paths"]["/api/media/{id}/hls/{path}"]["get"]["responses"];
        assert!(hls["200"]["content"]["application/vnd.apple.mpegurl"].is_object());
        assert!(hls["206"].is_object() && hls["400"].is_object());
        let events = &doc["paths"]["/api/events"]["get"]["responses"];
        // One event per schema (OpenAPI 3.1 reading of an event stream), not the stream as a string.
        let event = &events["200"]["content"]["text/event-stream"]["schema"];
        assert_eq!(event["required"], serde_json::json!(["event", "id", "data"]));
        assert_eq!(event["properties"]["data"]["contentMediaType"], "application/json");
        assert!(events["401"].is_object());
    }
}
