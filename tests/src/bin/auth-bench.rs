//! auth-bench: `auth.login` throughput and latency against a real auth-service at the default
//! bcrypt cost (12), next to raw `bcrypt::verify` at the same cost on the same machine, on one
//! thread and on every core. A login is one bcrypt verification by design, so the raw figures are
//! its ceiling: this reports how close the service gets, it sets no target.
//!
//! Usage: `auth-bench [--seconds N]` (default 5 s per measurement, after 1 s of warm-up), run by
//! `scripts/bench`, which builds the release `auth-service` next to this binary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{CONNECTIONS, Sample, Target, measure, seconds_arg, sibling_bin, summary};
use mediabus_rpc::RpcClient;
use mediabus_testkit::NatsServer;
use serde_json::json;

/// auth-service's default `auth.bcrypt_cost`.
const COST: u32 = 12;
const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "correct horse battery";

#[tokio::main]
async fn main() {
    let seconds = seconds_arg();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let db = dir.path().join("auth.db").to_str().unwrap().to_owned();

    let server = NatsServer::start();
    let (url, password) = (server.url(), server.password("auth"));
    let env = [
        ("MEDIABUS__NATS__URL", url.as_str()),
        ("MEDIABUS__NATS__PASSWORD", password.as_str()),
        ("MEDIABUS__STORE__PATH", db.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let _auth = WorkerProcess::spawn_with_env(&sibling_bin("auth-service"), &env, &[]);
    // The callers are backend services: the `backend` user, on the default inbox prefix.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let options = async_nats::ConnectOptions::with_user_and_password("backend".into(), server.password("backend"));
        clients.push(options.connect(&url).await.expect("connect as backend"));
    }
    let rpc = RpcClient::new(clients[0].clone()).with_timeout(Duration::from_secs(30));
    rpc.call::<_, serde_json::Value>("auth.register", &json!({"name": "Bench", "email": EMAIL, "password": PASSWORD}))
        .await
        .expect("auth.register");

    println!("auth.login (bcrypt cost {COST}) vs raw bcrypt::verify at the same cost, {cores} cores, {seconds} s each");
    println!("{:<26} {:>5} {:>9} {:>9} {:>9}", "what", "conc", "per s", "p50 ms", "p99 ms");
    let hash = bcrypt::hash(PASSWORD, COST).expect("bcrypt hash");
    let one = verify_rate(&hash, 1, seconds);
    row("bcrypt::verify, 1 thread", 1, &one);
    let all = verify_rate(&hash, cores, seconds);
    row(&format!("bcrypt::verify, {cores} threads"), cores, &all);

    let body = json!({"pattern": "auth.login", "data": {"email": EMAIL, "password": PASSWORD}, "id": "bench-1"});
    let login = Target::new("auth.login", Bytes::from(body.to_string()));
    let mut best: f64 = 0.0;
    for concurrency in [1, 2 * cores] {
        let sample = measure(&clients, &login, concurrency, seconds).await;
        row("auth.login", concurrency, &sample);
        best = best.max(sample.throughput);
    }
    println!(
        "ratio auth.login/bcrypt::verify: {:.2} of one thread, {:.2} of {cores} threads (login = one verify, \
         plus a refresh token stored per login)",
        best / one.throughput,
        best / all.throughput
    );
    let reference = format!("bcrypt::verify, {cores} threads");
    summary("auth.login (bcrypt cost 12)", best, "logins/s", &reference, Some(best / all.throughput), "-");
}

fn row(what: &str, concurrency: usize, s: &Sample) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!("{what:<26} {concurrency:>5} {:>9.1} {:>9.0} {:>9.0}", s.throughput, ms(s.p50_us), ms(s.p99_us));
}

/// `threads` threads verify `PASSWORD` against `hash` for 1 s of warm-up, then `seconds`
/// measured; returns verifications per second and their latency.
fn verify_rate(hash: &str, threads: usize, seconds: u64) -> Sample {
    let run = |duration: Duration| {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(move || {
                        let (start, mut latencies) = (Instant::now(), Vec::new());
                        while start.elapsed() < duration {
                            let one = Instant::now();
                            assert!(bcrypt::verify(PASSWORD, hash).expect("verify"), "password matches");
                            latencies.push(one.elapsed().as_micros() as u64);
                        }
                        latencies
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("verify thread")).collect::<Vec<u64>>()
        })
    };
    run(Duration::from_secs(1));
    let start = Instant::now();
    let mut all = run(Duration::from_secs(seconds));
    let wall = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Sample { throughput: all.len() as f64 / wall, p50_us: at(0.50), p99_us: at(0.99) }
}
