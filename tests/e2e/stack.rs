//! The in-process stack of the bridge tests: a nats-server, the media service, optionally the auth
//! service, and the bridge's router, each service on its own NATS user, sharing one temp dir.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mediabus_auth::SigningKeyConfig;
use mediabus_rpc::NatsSettings;
use mediabus_testkit::{NatsServer, jwt_keys};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The key id of the RS256 test key ([`jwt_keys::RSA_PRIVATE`]) the auth service signs with and
/// both services verify.
pub const KID: &str = "k";
/// The admin account the auth service creates at start-up.
pub const ADMIN: (&str, &str) = ("admin@example.com", "admin password 1");
/// A backend allowed to obtain `service` tokens (`auth.serviceToken`), and its secret.
pub const SERVICE: (&str, &str) = ("courses-service", "courses-service-secret-0123456789abcdef");

pub struct Stack {
    pub nats: NatsServer,
    _dir: tempfile::TempDir,
    _media: mediabus_rpc::Running,
    _auth: Option<mediabus_rpc::Running>,
    pub router: axum::Router,
}

impl Stack {
    /// Starts the stack; the auth service only `with_auth`; `/readyz` waits for `ready_services`.
    pub async fn start(with_auth: bool, ready_services: &[&str]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let files = media_service::config::StorageConfig::Local { root: dir.path().join("files") };
        let store = mediabus_store::StoreConfig::Sqlite { path: dir.path().join("mediabus.db") };
        let signing = signing_key();

        let mut media = media_service::Settings::defaults();
        media.nats = NatsSettings::new(nats.url()).with_user("media", nats.password("media"));
        media.storage = files.clone();
        media.store = store.clone();
        media.auth.keys = vec![verification_key()];
        let client = media.nats.connect("media", 1024).await.unwrap();
        let media = media_service::start(media, client).await.unwrap();

        let auth = if with_auth {
            let mut auth = auth_service::Settings::defaults();
            auth.nats = NatsSettings::new(nats.url()).with_user("auth", nats.password("auth"));
            auth.store = store;
            auth.auth.signing_key = signing;
            auth.auth.keys = vec![verification_key()];
            // Every registration hashes a password: the lowest cost keeps hundreds of them quick.
            auth.auth.bcrypt_cost = 4;
            // Requests through `send` and `axum::serve` carry no client address: they all share one
            // source, and tests register many accounts.
            auth.auth.max_registrations = 0;
            (auth.auth.admin_email, auth.auth.admin_password) = (ADMIN.0.into(), ADMIN.1.into());
            auth.auth.service_accounts = vec![auth_service::config::ServiceAccount {
                id: SERVICE.0.into(),
                secret_sha256: sha256_hex(SERVICE.1.as_bytes()),
            }];
            let client = auth.nats.connect("auth", 1024).await.unwrap();
            Some(auth_service::start(auth, client).await.unwrap())
        } else {
            None
        };

        let mut bridge = http_bridge::config::Settings::defaults();
        bridge.storage = files;
        bridge.http.request_timeout_ms = 10_000;
        // The bridge verifies tokens itself before an upload's body (and for /api/events).
        bridge.auth.keys = vec![verification_key()];
        // /api/events streams end after a moment, so clients that read whole bodies (schemathesis) finish.
        bridge.events.max_stream_ms = 200;
        bridge.http.ready_services = ready_services.iter().map(|s| s.to_string()).collect();
        let client = NatsSettings::new(nats.url())
            .with_user("bridge", nats.password("bridge"))
            .connect("http-bridge", 1024)
            .await
            .unwrap();
        let router = http_bridge::app(http_bridge::AppState::new(client, &bridge).await.unwrap());
        Self { nats, _dir: dir, _media: media, _auth: auth, router }
    }

    /// Serves the bridge on a free 127.0.0.1 port until the test ends; returns the address.
    pub async fn listen(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, self.router.clone()).into_future());
        addr
    }

    /// One request through the bridge; the status and the JSON reply (`Null` if not JSON).
    pub async fn send(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Registers an account through the bridge; returns its access token and user id.
    pub async fn register(&self, name: &str) -> (String, String) {
        let account = json!({"name": name, "email": format!("{name}@example.com"), "password": "correct horse"});
        let (status, session) = self.send("POST", "/api/auth/register", None, Some(&account.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        (session["accessToken"].as_str().unwrap().to_owned(), session["user"]["id"].as_str().unwrap().to_owned())
    }
}

fn signing_key() -> SigningKeyConfig {
    SigningKeyConfig::pem(KID, "RS256", jwt_keys::RSA_PRIVATE)
}

fn verification_key() -> mediabus_auth::KeyConfig {
    mediabus_auth::KeyConfig {
        kid: KID.into(),
        algorithm: "RS256".into(),
        secret: None,
        public_key_pem: Some(jwt_keys::RSA_PUBLIC.into()),
        public_key_file: None,
    }
}

/// An access token for `user` with `role`, signed with the stack's key (10 minutes).
pub fn token(user: &str, role: &str) -> String {
    let signer = mediabus_auth::Signer::new(&signing_key(), "mediabus", "mediabus-api").unwrap();
    let role = serde_json::from_value(json!(role)).unwrap();
    signer.sign(user, &[role], std::time::Duration::from_secs(600)).unwrap().0
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
