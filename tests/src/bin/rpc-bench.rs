//! rpc-bench: request-reply throughput and latency of the framework's echo subject (`rust.echo`
//! served by `test-worker`) next to a bare async-nats responder (`test-worker --raw`), on one
//! nats-server, in one run. Run by `scripts/bench`, not in CI.
//!
//! Usage: `rpc-bench [--seconds N]` (default 5 s per round, after 1 s of warm-up; 3 rounds each).
//! Prints, for concurrency 1 and 64: requests/s, p50 and p99 in µs, and framework/raw ratios.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabus_e2e::WorkerProcess;
use mediabus_testkit::NatsServer;

/// Client connections the load is spread over, so one connection's reader is not the bottleneck.
const CONNECTIONS: usize = 4;
/// Measured rounds per responder and concurrency.
const ROUNDS: usize = 3;

struct Sample {
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn measure(clients: &[async_nats::Client], subject: &str, body: Bytes, concurrency: usize, seconds: u64) -> Sample {
    // Warm-up, then the measured run.
    for (duration, keep) in [(Duration::from_secs(1), false), (Duration::from_secs(seconds), true)] {
        let running = Arc::new(AtomicBool::new(true));
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let (client, running, body, subject) = (clients[i % clients.len()].clone(), running.clone(), body.clone(), subject.to_owned());
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while running.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        client.request(subject.clone(), body.clone()).await.expect("request");
                        latencies.push(start.elapsed().as_micros() as u64);
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        running.store(false, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("load task"));
        }
        if keep {
            all.sort_unstable();
            let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
            return Sample { throughput: all.len() as f64 / duration.as_secs_f64(), p50_us: at(0.50), p99_us: at(0.99) };
        }
    }
    unreachable!("the second round returns")
}

/// The round with the median throughput.
fn median(mut rounds: Vec<Sample>) -> Sample {
    rounds.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    rounds.swap_remove(rounds.len() / 2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)).map_or(5, |s| s.parse().expect("--seconds N"));
    let worker = std::env::current_exe().expect("own path").with_file_name("test-worker");
    let worker = worker.to_str().expect("utf-8 path");

    let server = NatsServer::start();
    let _framework = WorkerProcess::spawn(worker, &server.url(), &["--name", "bench"]);
    let _raw = WorkerProcess::spawn(worker, &server.url(), &["--raw"]);
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(async_nats::connect(server.url()).await.expect("connect"));
    }

    // The same bytes to both: a NestJS request packet as ClientProxy.send writes it.
    let body = Bytes::from_static(br#"{"pattern":"rust.echo","data":{"text":"hello","n":42},"id":"6311e0d955b769e75d1e5"}"#);
    println!("echo request-reply, median of {ROUNDS} rounds of {seconds} s, {CONNECTIONS} client connections, one nats-server");
    println!("{:<11} {:>5} {:>12} {:>9} {:>9}", "responder", "conc", "req/s", "p50 µs", "p99 µs");
    for concurrency in [1, 64] {
        // Rounds alternate the two responders so drift on a shared machine hits both alike;
        // each is reported by its median round.
        let (mut raw, mut framework) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            raw.push(measure(&clients, "bench.raw", body.clone(), concurrency, seconds).await);
            framework.push(measure(&clients, "rust.echo", body.clone(), concurrency, seconds).await);
        }
        let (raw, framework) = (median(raw), median(framework));
        for (name, s) in [("raw", &raw), ("framework", &framework)] {
            println!("{name:<11} {concurrency:>5} {:>12.0} {:>9} {:>9}", s.throughput, s.p50_us, s.p99_us);
        }
        println!(
            "ratio framework/raw at {concurrency}: throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
            framework.throughput / raw.throughput,
            framework.p50_us as f64 / raw.p50_us.max(1) as f64,
            framework.p99_us as f64 / raw.p99_us.max(1) as f64,
        );
    }
    println!("targets at 64: throughput ratio >= 0.85, p99 <= 1.2x raw");
}
