//! http-bridge: REST on `http.listen` (default 127.0.0.1:8080) onto the NATS subjects; the routes
//! are the table in `routes.rs`. Run: `cargo run --release -p http-bridge` (settings:
//! `services/http-bridge/defaults.toml`, `config/http-bridge.toml`, `MEDIABUS__SECTION__KEY`).
//! Prints `READY` on stdout once listening; SIGTERM/SIGINT stop it after the requests in flight.

use std::process::ExitCode;
use std::time::Duration;

use http_bridge::config::Settings;
use http_bridge::{AppState, app};

#[tokio::main]
async fn main() -> ExitCode {
    mediabus_telemetry::init();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let nats = match settings.nats.connect("http-bridge", 1024).await {
        Ok(nats) => nats,
        Err(e) => {
            tracing::error!(error = %e, url = %settings.nats.url, user = %settings.nats.user, "cannot connect to NATS");
            return ExitCode::FAILURE;
        }
    };
    let state = match AppState::new(nats, &settings).await {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let http = &settings.http;
    let listener = match tokio::net::TcpListener::bind(&http.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, listen = %http.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %http.listen, "bridge listening");
    println!("READY");
    let header_timeout = Duration::from_millis(http.header_timeout_ms);
    let drain = Duration::from_millis(http.request_timeout_ms);
    http_bridge::server::serve(listener, app(state), header_timeout, drain, mediabus_rpc::shutdown_signal()).await;
    ExitCode::SUCCESS
}
