//! test-worker: serves the test subjects (`mediabus_e2e::test_router`) on queue group `test`, or
//! with `--raw`, a bare async-nats echo responder on `bench.raw` (the benchmark's baseline).
//!
//! Usage: `NATS_URL=nats://127.0.0.1:4222 [NATS_USER=demo NATS_PASSWORD=..] test-worker [--raw]
//! [--name NAME]` (no user: no credentials). Prints `READY` on stdout once subscribed;
//! SIGTERM/SIGINT drain and exit 0.

use futures_util::StreamExt;
use mediabus_e2e::{TestState, test_router};
use mediabus_rpc::{Service, ServiceConfig, shutdown_signal};

// One thread, as the real workers: see services/media-service/src/main.rs.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    mediabus_telemetry::init();
    let args: Vec<String> = std::env::args().collect();
    let name = args.iter().position(|a| a == "--name").and_then(|i| args.get(i + 1)).map_or("worker", |s| s);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut settings = mediabus_rpc::NatsSettings::new(url);
    if let Ok(user) = std::env::var("NATS_USER") {
        settings = settings.with_user(user, std::env::var("NATS_PASSWORD").unwrap_or_default());
    }
    let nats = settings.connect(name, 4096).await?;

    if args.iter().any(|a| a == "--raw") {
        let mut requests = nats.queue_subscribe("bench.raw", "raw".into()).await?;
        let responder = nats.clone();
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                if let Some(reply) = msg.reply {
                    let _ = responder.publish(reply, msg.payload).await;
                }
            }
        });
        println!("READY");
        shutdown_signal().await;
        return Ok(());
    }

    let mut config = ServiceConfig::new("test", "0.1.0");
    if let Ok(ms) = std::env::var("REQUEST_TIMEOUT_MS") {
        config.request_timeout = std::time::Duration::from_millis(ms.parse()?);
    }
    let running = Service::new(config, test_router(), TestState::new(name, nats.clone())).serve(nats).await?;
    println!("READY");
    running.run_until_signal().await;
    Ok(())
}
