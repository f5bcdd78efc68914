//! rpc-bench: request-reply throughput and latency of the framework's echo subject (`rust.echo`
//! served by `test-worker`) next to a bare async-nats responder (`test-worker --raw`), on one
//! nats-server, in one run. Run by `scripts/bench`, not in CI.
//!
//! Usage: `rpc-bench [--seconds N]` (default 5 s per round, after 1 s of warm-up; 5 rounds each).
//! Prints, for concurrency 1 and 64: requests/s, p50 and p99 in µs, and framework/raw ratios.

use bytes::Bytes;
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{
    CONNECTIONS, ROUNDS, Target, compare, connect_clients, report, seconds_arg, sibling_bin, summary,
};
use mediabus_testkit::NatsServer;

#[tokio::main]
async fn main() {
    let seconds = seconds_arg();
    let worker = &sibling_bin("test-worker");

    let server = NatsServer::start();
    let _framework = WorkerProcess::spawn(worker, &server.url(), &["--name", "bench"]);
    let _raw = WorkerProcess::spawn(worker, &server.url(), &["--raw"]);
    let clients = connect_clients(&server.url()).await;

    // The same bytes to both: a NestJS request packet as ClientProxy.send writes it.
    let body =
        Bytes::from_static(br#"{"pattern":"rust.echo","data":{"text":"hello","n":42},"id":"6311e0d955b769e75d1e5"}"#);
    let (raw, framework) = (Target::new("bench.raw", body.clone()), Target::new("rust.echo", body));
    println!(
        "echo request-reply, median of {ROUNDS} rounds of {seconds} s, {CONNECTIONS} client connections, one nats-server"
    );
    println!("{:<11} {:>5} {:>12} {:>9} {:>9}", "responder", "conc", "req/s", "p50 µs", "p99 µs");
    for concurrency in [1, 64] {
        let c = compare(&clients, &raw, &framework, concurrency, seconds).await;
        report(concurrency, "raw", "framework", &c);
        let target = if concurrency == 64 { ">= 0.85" } else { "-" };
        let name = format!("echo via framework, conc {concurrency}");
        summary(&name, c.other.throughput, "req/s", "bare async-nats responder", Some(c.ratio()), target);
        let p99 = c.other.p99_us as f64 / c.base.p99_us.max(1) as f64;
        let target = if concurrency == 64 { "<= 1.2" } else { "-" };
        summary(
            &format!("echo p99, conc {concurrency}"),
            c.other.p99_us as f64,
            "µs",
            "bare responder p99",
            Some(p99),
            target,
        );
    }
    println!("targets at 64: throughput ratio >= 0.85, p99 <= 1.2x raw");
}
