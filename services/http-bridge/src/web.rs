//! The media library at `/` (DESIGN §13): static files of `web.dir` (`services/http-bridge/web`:
//! `index.html` and `app/*`, plain ES modules, no build step) and the three npm packages it uses,
//! installed there by `scripts/setup` (no CDN) and served under fixed names in `/vendor/`.
//!
//! Every response carries a Content-Security-Policy that allows only this origin (plus `blob:`
//! and `data:` for images, media and hls.js's worker), `nosniff`, and `Referrer-Policy:
//! no-referrer`, because signed content URLs carry their token in the query string.

use std::path::Path;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of the app's pages and scripts.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
                   worker-src 'self' blob:; style-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// `/vendor/<name>` → file under `web.dir/node_modules`.
const VENDOR: [(&str, &str); 3] = [
    ("tus.js", "tus-js-client/dist/tus.min.js"),
    ("hls.mjs", "hls.js/dist/hls.min.mjs"),
    ("thumbhash.js", "thumbhash/thumbhash.js"),
];

/// `/` (index.html), `/app/*` and `/vendor/*` from `dir` (relative: from the working directory).
/// Missing files are 404s, so the API works without the app installed.
pub fn router<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let mut router = Router::new()
        .route_service("/", ServeFile::new(dir.join("index.html")))
        .nest_service("/app", ServeDir::new(dir.join("app")));
    for (name, file) in VENDOR {
        router = router.route_service(&format!("/vendor/{name}"), ServeFile::new(dir.join("node_modules").join(file)));
    }
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        // Revalidated on every load (ETag / Last-Modified from ServeFile), so a deploy shows at once.
        .layer(set(header::CACHE_CONTROL, "no-cache"))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, uri: &str) -> (StatusCode, String, String, Vec<u8>) {
        let response = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let text = |name| {
            response.headers().get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_owned()).unwrap_or_default()
        };
        let (kind, csp) = (text(header::CONTENT_TYPE), text(header::CONTENT_SECURITY_POLICY));
        let status = response.status();
        (status, kind, csp, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn serves_the_page_its_modules_and_the_installed_packages() {
        let dir = mediabus_testkit::repo_root().join("services/http-bridge/web");
        assert!(dir.join("node_modules/hls.js").is_dir(), "run scripts/setup: web/node_modules missing");
        let router: Router = router(&dir);
        let (status, kind, csp, body) = get(&router, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(String::from_utf8(body).unwrap().contains("/app/app.js"));
        let (status, kind, ..) = get(&router, "/app/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(kind.contains("javascript"), "{kind}");
        for (name, _) in VENDOR {
            let (status, kind, ..) = get(&router, &format!("/vendor/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert!(kind.contains("javascript"), "{name}: {kind}");
        }
        assert_eq!(get(&router, "/app/../Cargo.toml").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&router, "/vendor/other.js").await.0, StatusCode::NOT_FOUND);
    }
}
