//! auth-service: serves `auth.register`, `auth.login`, `auth.refresh`, `auth.logout`, `auth.me`
//! (and `auth.serviceToken`) on NATS queue group `auth` (DESIGN §5, §6). Start more processes to
//! scale; SIGTERM drains one.
//!
//! Run: `cargo run --release -p auth-service` (settings: `services/auth-service/defaults.toml`,
//! then `config/auth-service.toml`, then `MEDIABUS__SECTION__KEY` variables, e.g.
//! `MEDIABUS__AUTH__BCRYPT_COST`, `MEDIABUS__AUTH__ADMIN_EMAIL`). Prints `READY` on stdout once
//! serving.

use std::process::ExitCode;

use auth_service::Settings;

// One thread per process, as the media worker: handlers mostly wait on the store, and bcrypt (the
// CPU-heavy part) runs on tokio's blocking pool, one hash per core. Scale with more processes.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            mediabus_telemetry::init();
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = mediabus_telemetry::setup("auth-service", &settings.telemetry, &settings.metrics).await {
        tracing::error!(error = %e, "cannot start telemetry");
        return ExitCode::FAILURE;
    }
    // Before connecting anywhere: a production start with a development secret stops here.
    if let Err(e) = settings.refuse_dev_secrets() {
        tracing::error!(error = %e, "refusing to start");
        return ExitCode::FAILURE;
    }
    let nats = settings.nats.clone();
    let code = mediabus_rpc::run_worker("auth-service", &nats, |nats| auth_service::start(settings, nats)).await;
    // The spans still queued for OTLP export (a no-op without `telemetry.otlp_endpoint`).
    mediabus_telemetry::shutdown().await;
    code
}
