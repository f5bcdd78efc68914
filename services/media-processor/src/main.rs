//! media-processor: takes processing jobs from the JetStream work-queue stream `MEDIA_JOBS`
//! (DESIGN §9) and turns stored uploads into `details`, `variants` and a final `READY` or
//! `FAILED`, emitting `media.processed`. Start more processes to scale: they share one durable
//! consumer. SIGTERM/SIGINT: stop pulling, finish the jobs in hand (or hand them back after
//! `jobs.shutdown_grace_secs`), exit 0.
//!
//! Run: `cargo run --release -p media-processor` (settings: `services/media-processor/defaults.toml`,
//! then `config/media-processor.toml`, then `MEDIABUS__SECTION__KEY` variables). Prints `READY` on
//! stdout once pulling.

use std::process::ExitCode;

use media_processor::config::Settings;

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
    if let Err(e) = mediabus_telemetry::setup("media-processor", &settings.telemetry, &settings.metrics).await {
        tracing::error!(error = %e, "cannot start telemetry");
        return ExitCode::FAILURE;
    }
    let nats = match settings.nats.connect("media-processor", 64).await {
        Ok(nats) => nats,
        Err(e) => {
            tracing::error!(error = %e, url = %settings.nats.url, user = %settings.nats.user, "cannot connect to NATS");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match media_processor::jobs::start(settings, nats).await {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    println!("READY");
    mediabus_rpc::shutdown_signal().await;
    tracing::info!("signal received, draining");
    runtime.shutdown().await;
    // The spans still queued for OTLP export (a no-op without `telemetry.otlp_endpoint`).
    mediabus_telemetry::shutdown().await;
    ExitCode::SUCCESS
}
