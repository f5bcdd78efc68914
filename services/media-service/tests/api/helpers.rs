//! `TestApp`: the real media service (one or more workers) on a fresh nats-server and stores.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use media_service::Settings;
use media_service::config::StorageConfig;
use mediabus_auth::KeyConfig;
use mediabus_rpc::{NatsSettings, RpcClient, RpcError, Running};
use mediabus_store::StoreConfig;
use mediabus_testkit::{MongoServer, NatsServer, SeaweedS3};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const SECRET: &str = "media-service-test-secret-0123456789";

/// Which file store the workers use.
#[derive(Clone, Copy, Debug)]
pub enum Files {
    Local,
    S3,
}

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
    /// Direct access to the documents the workers write.
    pub store: std::sync::Arc<dyn mediabus_store::MediaStore>,
    pub workers: Vec<Running>,
    pub dir: TempDir,
    _s3: Option<SeaweedS3>,
    _mongo: Option<MongoServer>,
}

impl TestApp {
    /// One worker on SQLite and the local file store.
    pub async fn spawn() -> Self {
        Self::spawn_with(Files::Local, Docs::Sqlite, 1).await
    }

    pub async fn spawn_with(files: Files, docs: Docs, workers: usize) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            mediabus_telemetry::init();
        }
        let dir = tempfile::tempdir().unwrap();
        let nats_server = NatsServer::start();
        let mut settings = Settings::defaults();
        settings.nats = NatsSettings::new(nats_server.url()).with_user("media", nats_server.password("media"));
        let mut s3_server = None;
        settings.storage = match files {
            Files::Local => StorageConfig::Local { root: dir.path().join("files") },
            Files::S3 => {
                let s3 = SeaweedS3::start();
                let storage = StorageConfig::S3 {
                    endpoint: Some(s3.endpoint()),
                    region: "us-east-1".into(),
                    bucket: "mediabus-test".into(),
                    access_key: "test".into(),
                    secret_key: "test".into(),
                };
                s3_server = Some(s3);
                storage
            }
        };
        let mut mongo = None;
        settings.store = match docs {
            Docs::Sqlite => StoreConfig::Sqlite { path: dir.path().join("media.db") },
            Docs::Mongo => {
                let server = MongoServer::start();
                let store = StoreConfig::Mongodb { uri: server.uri().into(), database: server.database().to_owned() };
                mongo = Some(server);
                store
            }
        };
        settings.auth.keys = vec![KeyConfig {
            kid: "test".into(),
            algorithm: "HS256".into(),
            secret: Some(SECRET.into()),
            public_key_pem: None,
            public_key_file: None,
        }];
        settings.media.sweep_interval_secs = 3600;
        let mut running = Vec::new();
        for i in 0..workers {
            let nats = settings.nats.connect(&format!("media-{i}"), 1024).await.unwrap();
            running.push(media_service::start(settings.clone(), nats).await.expect("media service starts"));
        }
        // The test's own handle on the documents, opened before the stand-in fix-up below.
        let store = mediabus_store::open(&settings.store).await.unwrap();
        if let Some(server) = mongo.as_ref().filter(|m| m.is_stand_in()) {
            drop_stand_in_indexes(server).await;
        }
        // The test calls the subjects as a backend service would.
        let backend = NatsSettings::new(nats_server.url()).with_user("backend", nats_server.password("backend"));
        let rpc = RpcClient::new(backend.connect("backend", 1024).await.unwrap()).with_timeout(Duration::from_secs(30));
        Self { _nats_server: nats_server, rpc, settings, store, workers: running, dir, _s3: s3_server, _mongo: mongo }
    }

    /// Stops every worker and starts one with `app.settings` as `change` leaves them (the app's
    /// own `settings` stay as they were).
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut Settings)) {
        for worker in self.workers.drain(..) {
            worker.shutdown().await;
        }
        let mut settings = self.settings.clone();
        change(&mut settings);
        let nats = settings.nats.connect("media-restarted", 1024).await.unwrap();
        self.workers.push(media_service::start(settings, nats).await.expect("media service starts"));
        if let Some(server) = self._mongo.as_ref().filter(|m| m.is_stand_in()) {
            // The restarted worker created them again.
            drop_stand_in_indexes(server).await;
        }
    }

    /// Whether documents live in the nx-27017 stand-in (not a real MongoDB).
    pub fn on_mongo_stand_in(&self) -> bool {
        self._mongo.as_ref().is_some_and(|m| m.is_stand_in())
    }

    /// The nats-server (its URL and the users' passwords, e.g. for a NestJS client).
    pub fn nats_server(&self) -> &NatsServer {
        &self._nats_server
    }

    /// Calls `subject` as the holder of `token` (anonymous when `None`).
    pub async fn call(&self, subject: &str, data: Value, token: Option<&str>) -> Result<Value, RpcError> {
        self.call_with(subject, data, token, HeaderMap::new()).await
    }

    /// [`TestApp::call`] with extra NATS headers.
    pub async fn call_with(
        &self,
        subject: &str,
        data: Value,
        token: Option<&str>,
        mut headers: HeaderMap,
    ) -> Result<Value, RpcError> {
        if let Some(token) = token {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
        }
        self.rpc.call_with_headers(subject, &data, headers).await
    }

    /// Uploads `bytes` through `upload_file` (base64) as `token`.
    pub async fn upload(&self, token: &str, name: &str, bytes: &[u8], extra: Value) -> Result<Value, RpcError> {
        let mut data =
            json!({"file": {"buffer": b64(bytes), "originalname": name, "mimetype": "application/octet-stream"}});
        merge(&mut data, extra);
        self.call("upload_file", data, Some(token)).await
    }
}

/// nx-27017 gap (see libs/store/tests/contract.rs): compound indexes that include `_id` make all
/// its later inserts fail, so on the stand-in the listing indexes a starting worker creates are
/// dropped. Real MongoDB keeps them.
async fn drop_stand_in_indexes(server: &MongoServer) {
    let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
    client.database(server.database()).collection::<mongodb::bson::Document>("media").drop_indexes().await.unwrap();
}

/// An access token for `user` with `role`, signed with the test key.
pub fn token(user: &str, role: &str) -> String {
    token_with(json!({"sub": user, "roles": [role]}))
}

/// A token with `claims` on top of valid defaults (iss, aud, iat, exp in 10 min).
pub fn token_with(claims: Value) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut all = json!({"iss": "mediabus", "aud": "mediabus-api", "iat": now, "exp": now + 600});
    merge(&mut all, claims);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("test".into());
    encode(&header, &all, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Status and code of an error, for compact assertions.
pub fn status(result: Result<Value, RpcError>) -> (u16, String) {
    match result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => (e.status, e.code),
    }
}
