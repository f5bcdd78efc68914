//! http-bridge: REST on `http.listen` (default 127.0.0.1:8080) onto the NATS subjects; the routes
//! are the table in `routes.rs`. Run: `cargo run --release -p http-bridge` (settings:
//! `services/http-bridge/defaults.toml`, `config/http-bridge.toml`, `MEDIABUS__SECTION__KEY`).
//! Prints `READY <address>` on stdout once listening (`http.listen` may use port 0: the address
//! says which port it got); SIGTERM/SIGINT stop it after the requests in flight.

use std::process::ExitCode;

use http_bridge::config::Settings;
use http_bridge::{AppState, app};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            mediabus_telemetry::init();
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = mediabus_telemetry::setup("http-bridge", &settings.telemetry, &settings.metrics).await {
        tracing::error!(error = %e, "cannot start telemetry");
        return ExitCode::FAILURE;
    }
    // Before connecting anywhere: a production start with a development secret stops here.
    if let Err(e) = settings.refuse_dev_secrets() {
        tracing::error!(error = %e, "refusing to start");
        return ExitCode::FAILURE;
    }
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
    http_bridge::tus::spawn_sweeper(&state);
    let http = &settings.http;
    let listener = match tokio::net::TcpListener::bind(&http.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, listen = %http.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    // The bound address, not the configured one: with port 0 (tests) the system picks the port.
    let local = listener.local_addr().map_or_else(|_| http.listen.clone(), |a| a.to_string());
    tracing::info!(listen = %local, "bridge listening");
    println!("READY {local}");
    let limits = http_bridge::server::Limits::of(http);
    let analytics = state.analytics();
    http_bridge::server::serve(listener, app(state), limits, mediabus_rpc::shutdown_signal()).await;
    // The counts gathered since the last periodic flush.
    analytics.flush().await;
    // The spans still queued for OTLP export (a no-op without `telemetry.otlp_endpoint`).
    mediabus_telemetry::shutdown().await;
    ExitCode::SUCCESS
}
