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
    mediabus_telemetry::init();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let nats = settings.nats.clone();
    mediabus_rpc::run_worker("media-service", &nats, |nats| media_service::start(settings, nats)).await
}
