//! `GET /docs`: Swagger UI over `/openapi.json`.
//!
//! The UI's files come from the npm package `swagger-ui-dist` (installed by `scripts/setup` into
//! `services/http-bridge/docs/node_modules`, no CDN), served from `docs.assets_dir` under
//! `/docs/assets/`. `/docs` itself is a small page that loads them and points them at the
//! document. Without the files, `/docs` answers 503 with the error object instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use mediabus_rpc::RpcError;
use tower_http::services::ServeDir;

/// The file whose presence means the assets are installed.
const BUNDLE: &str = "swagger-ui-bundle.js";

/// The page at `/docs`. Relative URLs, so it also works behind a path prefix.
const INDEX: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>mediabus API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: true });
  </script>
</body>
</html>
"##;

/// `/docs` (the page), `/docs/` (redirects to it) and `/docs/assets/*` (files of `assets_dir`).
/// A relative `assets_dir` is taken from the working directory (the repository root for
/// `scripts/dev`).
pub fn router<S: Clone + Send + Sync + 'static>(assets_dir: &Path) -> Router<S> {
    let dir: Arc<PathBuf> = Arc::new(assets_dir.to_path_buf());
    Router::new()
        .route("/docs", get(move || index(dir.clone())))
        .route("/docs/", get(|| async { Redirect::permanent("/docs") }))
        .nest_service("/docs/assets", ServeDir::new(assets_dir))
}

/// The page, or 503 `DOCS_UNAVAILABLE` when the assets are not installed (checked per request,
/// so installing them needs no restart).
async fn index(dir: Arc<PathBuf>) -> Response {
    if tokio::fs::try_exists(dir.join(BUNDLE)).await.unwrap_or(false) {
        return Html(INDEX).into_response();
    }
    tracing::warn!(dir = %dir.display(), "Swagger UI assets missing: run scripts/setup or set docs.assets_dir");
    let err = RpcError::new(
        503,
        "DOCS_UNAVAILABLE",
        "Swagger UI is not installed on this server (scripts/setup installs it); /openapi.json is available",
    );
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(err)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, header};
    use tower::ServiceExt;

    use super::*;

    /// Where `scripts/setup` installs the package.
    fn installed() -> PathBuf {
        mediabus_testkit::repo_root().join("services/http-bridge/docs/node_modules/swagger-ui-dist")
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let kind = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        (status, kind, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn serves_the_page_and_the_installed_assets() {
        let dir = installed();
        assert!(dir.join(BUNDLE).is_file(), "run scripts/setup: {} missing", dir.display());
        let router: Router = router(&dir);
        let (status, kind, body) = get(&router, "/docs").await;
        assert_eq!(status, StatusCode::OK);
        assert!(kind.unwrap().starts_with("text/html"));
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains(r#"url: "openapi.json""#) && page.contains("docs/assets/swagger-ui-bundle.js"));

        let (status, kind, body) = get(&router, "/docs/assets/swagger-ui-bundle.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(kind.unwrap().contains("javascript"));
        assert!(body.windows(14).any(|w| w == b"SwaggerUIBundl"), "not the Swagger UI bundle");
        let (status, kind, _) = get(&router, "/docs/assets/swagger-ui.css").await;
        assert_eq!((status, kind.as_deref()), (StatusCode::OK, Some("text/css")));
        assert_eq!(get(&router, "/docs/assets/../Cargo.toml").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&router, "/docs/").await.0, StatusCode::PERMANENT_REDIRECT);
    }

    #[tokio::test]
    async fn missing_assets_are_a_clear_503() {
        let empty = tempfile::tempdir().unwrap();
        let router: Router = router(&empty.path().join("absent"));
        let (status, kind, body) = get(&router, "/docs").await;
        assert_eq!((status, kind.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("application/json")));
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(err["code"], "DOCS_UNAVAILABLE");
        assert_eq!(get(&router, "/docs/assets/swagger-ui-bundle.js").await.0, StatusCode::NOT_FOUND);
    }
}
