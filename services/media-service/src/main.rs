//! media-service: serves `media.create`, `media.findAll`, `media.findByUser`, `media.findByEntity`,
//! `media.findOne`, `media.update`, `media.remove`, `upload_file` and `upload.create/part/complete/abort`
//! on NATS queue group `media` (DESIGN §5). Start more processes to scale; SIGTERM drains one.
//!
//! Run: `cargo run --release -p media-service` (settings: `services/media-service/defaults.toml`,
//! then `config/media-service.toml`, then `MEDIABUS__SECTION__KEY` variables). Prints `READY` on
//! stdout once serving.

use std::process::ExitCode;

use media_service::Settings;

// One thread per process: measured faster for request-reply than a work-stealing pool (fewer
// cross-thread wake-ups); blocking file and SQLite work still uses tokio's blocking pool. Scale
// with more processes in the queue group.
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
    if let Err(e) = mediabus_telemetry::setup("media-service", &settings.telemetry, &settings.metrics).await {
        tracing::error!(error = %e, "cannot start telemetry");
        return ExitCode::FAILURE;
    }
    // Before connecting anywhere: a production start with a development secret stops here.
    if let Err(e) = settings.refuse_dev_secrets() {
        tracing::error!(error = %e, "refusing to start");
        return ExitCode::FAILURE;
    }
    let nats = settings.nats.clone();
    let code = mediabus_rpc::run_worker("media-service", &nats, |nats| media_service::start(settings, nats)).await;
    // The spans still queued for OTLP export (a no-op without `telemetry.otlp_endpoint`).
    mediabus_telemetry::shutdown().await;
    code
}
