//! `TestApp`: the real auth service (one or more workers) on a fresh nats-server and store.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use auth_service::Settings;
use mediabus_auth::{KeyConfig, SigningKeyConfig};
use mediabus_rpc::{NatsSettings, RpcClient, RpcError, Running};
use mediabus_store::{StoreConfig, UserStore};
use mediabus_testkit::{MongoServer, NatsServer};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const SECRET: &str = "auth-service-test-secret-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery";

/// Which document store the workers use.
#[derive(Clone, Copy, Debug)]
pub enum Docs {
    Sqlite,
    Mongo,
}

pub struct TestApp {
    _nats_server: NatsServer,
    pub rpc: RpcClient,
    pub settings: Settings,
    /// Direct access to what the workers store.
    pub store: Arc<dyn UserStore>,
    pub workers: Vec<Running>,
    _dir: TempDir,
    _mongo: Option<MongoServer>,
}

/// Test settings: SQLite in `dir`, bcrypt cost 4, HS256 key `test`, no sweeping.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults();
    settings.store = StoreConfig::Sqlite { path: dir.path().join("auth.db") };
    settings.auth.bcrypt_cost = 4;
    settings.auth.signing_key = SigningKeyConfig::hs256("test", SECRET);
    settings.auth.sweep_interval_secs = 3600;
    settings
}

/// The verification key of the test HS256 key, as the media service would configure it.
pub fn test_key() -> KeyConfig {
    SigningKeyConfig::hs256("test", SECRET).verification_key().unwrap()
}

impl TestApp {
    /// One worker with [`test_settings`].
    pub async fn spawn() -> Self {
        Self::spawn_with(Docs::Sqlite, |_| {}).await
    }

    /// One worker on `docs`, with `configure` applied to the test settings.
    pub async fn spawn_with(docs: Docs, configure: impl FnOnce(&mut Settings)) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            mediabus_telemetry::init();
        }
        let dir = tempfile::tempdir().unwrap();
        let nats_server = NatsServer::start();
        let mut settings = test_settings(&dir);
        settings.nats = NatsSettings::new(nats_server.url()).with_user("auth", nats_server.password("auth"));
        let mut mongo = None;
        if let Docs::Mongo = docs {
            let server = MongoServer::start();
            settings.store = StoreConfig::Mongodb { uri: server.uri().into(), database: server.database().to_owned() };
            mongo = Some(server);
        }
        configure(&mut settings);
        // The test calls the subjects as a backend service would.
        let backend = NatsSettings::new(nats_server.url()).with_user("backend", nats_server.password("backend"));
        let rpc = RpcClient::new(backend.connect("backend", 1024).await.unwrap()).with_timeout(Duration::from_secs(30));
        let store = mediabus_store::open_users(&settings.store).await.unwrap();
        let mut app =
            Self { _nats_server: nats_server, rpc, settings, store, workers: Vec::new(), _dir: dir, _mongo: mongo };
        app.add_worker().await;
        app
    }

    /// Starts one more worker with the app's settings (joins the same queue group).
    pub async fn add_worker(&mut self) {
        let running = self.start_worker(self.settings.clone()).await.expect("auth service starts");
        self.workers.push(running);
        self.wait_until_served().await;
    }

    /// Starts a worker with `settings` on this app's NATS server (for start-up checks).
    pub async fn start_worker(&self, settings: Settings) -> Result<Running, auth_service::StartError> {
        let name = format!("auth-{}", self.workers.len());
        let nats = settings.nats.connect(&name, 1024).await.unwrap();
        let running = auth_service::start(settings, nats.clone()).await?;
        nats.flush().await.unwrap();
        Ok(running)
    }

    /// Waits until a worker answers (the server may still be registering the subscriptions of
    /// a worker that just started, and would answer "no responders" meanwhile).
    async fn wait_until_served(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.call("auth.me", json!({}), None).await {
                Err(e) if e.status == 503 && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) if e.status == 503 => panic!("auth service never answered: {e}"),
                _ => return,
            }
        }
    }

    /// Calls `subject` as the holder of `token` (anonymous when `None`).
    pub async fn call(&self, subject: &str, data: Value, token: Option<&str>) -> Result<Value, RpcError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        self.rpc.call_with_headers(subject, &data, headers).await
    }

    /// Calls `subject` anonymously for a client at `source` (an IP address), as the HTTP bridge
    /// does with the client's address.
    pub async fn call_from(&self, source: &str, subject: &str, data: Value) -> Result<Value, RpcError> {
        let mut headers = HeaderMap::new();
        headers.insert(auth_service::throttle::CLIENT_ADDR_HEADER, source);
        self.rpc.call_with_headers(subject, &data, headers).await
    }

    /// `auth.login` for a client at `source`.
    pub async fn login_from(&self, source: &str, email: &str, password: &str) -> Result<Value, RpcError> {
        self.call_from(source, "auth.login", json!({"email": email, "password": password})).await
    }

    /// `auth.register` with [`PASSWORD`]; panics unless it succeeds.
    pub async fn register(&self, name: &str, email: &str) -> Value {
        self.call("auth.register", json!({"name": name, "email": email, "password": PASSWORD}), None)
            .await
            .unwrap_or_else(|e| panic!("register {email}: {e}"))
    }

    /// `auth.login`.
    pub async fn login(&self, email: &str, password: &str) -> Result<Value, RpcError> {
        self.call("auth.login", json!({"email": email, "password": password}), None).await
    }

    /// `auth.refresh`.
    pub async fn refresh(&self, refresh_token: &Value) -> Result<Value, RpcError> {
        self.call("auth.refresh", json!({"refreshToken": refresh_token}), None).await
    }

    /// `auth.me` with `token`.
    pub async fn me(&self, token: &str) -> Result<Value, RpcError> {
        self.call("auth.me", json!({}), Some(token)).await
    }
}

/// Status and code of an error, for compact assertions.
pub fn status(result: Result<Value, RpcError>) -> (u16, String) {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => (e.status, e.code),
    }
}

/// The access token of a session answer.
pub fn access(session: &Value) -> &str {
    session["accessToken"].as_str().expect("accessToken")
}
