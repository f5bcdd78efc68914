//! Load generation shared by the benchmarks (`rpc-bench`, `media-bench`, `http-bench`): closed-loop
//! callers, latency percentiles, alternating rounds and medians, transfer rates, test files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;

/// Client connections the load is spread over, so one connection's reader is not the bottleneck.
pub const CONNECTIONS: usize = 4;
/// Measured rounds per target and concurrency.
pub const ROUNDS: usize = 5;

/// One request to repeat: subject, body and headers.
#[derive(Clone)]
pub struct Target {
    pub subject: String,
    pub body: Bytes,
    pub headers: HeaderMap,
}

impl Target {
    pub fn new(subject: &str, body: Bytes) -> Self {
        Self { subject: subject.to_owned(), body, headers: HeaderMap::new() }
    }
}

/// The result of one measured run.
pub struct Sample {
    /// Requests per second.
    pub throughput: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
}

/// `concurrency` callers repeat `target` for 1 s of warm-up, then `seconds` measured.
/// Panics if a request fails (a benchmark of errors measures nothing).
pub async fn measure(clients: &[async_nats::Client], target: &Target, concurrency: usize, seconds: u64) -> Sample {
    for (duration, keep) in [(Duration::from_secs(1), false), (Duration::from_secs(seconds), true)] {
        let running = Arc::new(AtomicBool::new(true));
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let (client, running, target) = (clients[i % clients.len()].clone(), running.clone(), target.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while running.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let reply = client
                            .request_with_headers(target.subject.clone(), target.headers.clone(), target.body.clone())
                            .await
                            .expect("request");
                        assert!(!reply.payload.starts_with(b"{\"err\""), "error reply: {:?}", reply.payload);
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
            return Sample {
                throughput: all.len() as f64 / duration.as_secs_f64(),
                p50_us: at(0.50),
                p99_us: at(0.99),
            };
        }
    }
    unreachable!("the second round returns")
}

/// Two targets measured in alternating rounds: the median-throughput round of each, and the
/// ratios of `other` to `base` round by round (each pair ran back to back, so drift on a shared
/// machine hits both sides of a ratio alike).
pub struct Comparison {
    pub base: Sample,
    pub other: Sample,
    /// `other / base` throughput of each round pair, sorted.
    pub ratios: Vec<f64>,
}

impl Comparison {
    /// The median of the round-by-round throughput ratios.
    pub fn ratio(&self) -> f64 {
        self.ratios[self.ratios.len() / 2]
    }
}

/// Measures `base` and `other` in [`ROUNDS`] alternating rounds (see [`Comparison`]).
pub async fn compare(
    clients: &[async_nats::Client],
    base: &Target,
    other: &Target,
    concurrency: usize,
    seconds: u64,
) -> Comparison {
    let (mut first, mut second, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let a = measure(clients, base, concurrency, seconds).await;
        let b = measure(clients, other, concurrency, seconds).await;
        ratios.push(b.throughput / a.throughput);
        first.push(a);
        second.push(b);
    }
    ratios.sort_by(f64::total_cmp);
    Comparison { base: median(first), other: median(second), ratios }
}

fn median(mut rounds: Vec<Sample>) -> Sample {
    rounds.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    rounds.swap_remove(rounds.len() / 2)
}

/// [`CONNECTIONS`] client connections to `url`.
pub async fn connect_clients(url: &str) -> Vec<async_nats::Client> {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(async_nats::connect(url).await.expect("connect"));
    }
    clients
}

/// Prints a table row per target (its median round) and the ratios of the second to the first:
/// throughput as the median of the round-by-round ratios (with their range), latencies from the
/// median rounds.
pub fn report(concurrency: usize, base_name: &str, name: &str, c: &Comparison) {
    for (n, x) in [(base_name, &c.base), (name, &c.other)] {
        println!("{n:<11} {concurrency:>5} {:>12.0} {:>9} {:>9}", x.throughput, x.p50_us, x.p99_us);
    }
    println!(
        "ratio {name}/{base_name} at {concurrency}: throughput {:.2} (rounds {:.2} to {:.2}), p50 {:.2}x, p99 {:.2}x",
        c.ratio(),
        c.ratios[0],
        c.ratios[c.ratios.len() - 1],
        c.other.p50_us as f64 / c.base.p50_us.max(1) as f64,
        c.other.p99_us as f64 / c.base.p99_us.max(1) as f64,
    );
}

/// Prints one line per transfer of `mib` MiB: the baseline's and the measured path's median rate in
/// MiB/s (with the range over their rounds), and on the second line the ratio of the medians
/// measured/baseline against `target`, and its [`summary`] line. `*_secs` are the rounds' durations in seconds (at least one
/// each). Returns the ratio.
pub fn report_transfer(
    mib: f64,
    (base_name, base_secs): (&str, &[f64]),
    (name, secs): (&str, &[f64]),
    target: f64,
) -> f64 {
    let rates = |secs: &[f64]| {
        let mut r: Vec<f64> = secs.iter().map(|s| mib / s).collect();
        r.sort_by(f64::total_cmp);
        r
    };
    let (base, measured) = (rates(base_secs), rates(secs));
    let median = |r: &[f64]| r[r.len() / 2];
    for (n, r) in [(base_name, &base), (name, &measured)] {
        println!("{n:<34} {:>8.1} MiB/s  (rounds {:.1} to {:.1})", median(r), r[0], r[r.len() - 1]);
    }
    let ratio = median(&measured) / median(&base);
    let verdict = if ratio >= target { "met" } else { "NOT met" };
    println!("{:<34} {ratio:>8.2}        (target >= {target}: {verdict})", "ratio");
    summary(name, median(&measured), "MiB/s", base_name, Some(ratio), &format!(">= {target}"));
    ratio
}

/// Writes `mib` MiB to `path` that sniff as `video/mp4`: an ISO BMFF `ftyp` box (what content
/// sniffing reads), then xorshift pseudo-random filler (incompressible, the same on every run).
/// Returns the file's SHA-256, lowercase hex.
pub fn write_video(path: impl AsRef<std::path::Path>, mib: usize) -> String {
    use sha2::Digest;
    use std::io::Write;
    let mut hasher = sha2::Sha256::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create video file"));
    let mut block = vec![0u8; 1 << 20];
    block[..24].copy_from_slice(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2");
    let mut x: u32 = 0x9E37_79B9;
    for i in 0..mib {
        let start = if i == 0 { 24 } else { 0 };
        for byte in &mut block[start..] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        hasher.update(&block);
        out.write_all(&block).expect("write video file");
    }
    out.flush().expect("write video file");
    hex::encode(hasher.finalize())
}

/// Peak resident memory (`VmHWM`) of process `pid`, in KiB (Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The value of `--seconds N` on the command line (default 5).
pub fn seconds_arg() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map_or(5, |s| s.parse().expect("--seconds N"))
}

/// Path of binary `name` built next to the running one (same cargo profile).
pub fn sibling_bin(name: &str) -> String {
    std::env::current_exe().expect("own path").with_file_name(name).to_str().expect("utf-8 path").to_owned()
}

/// Prints one machine-readable summary line, which `scripts/bench` collects into its table (and
/// `BENCHMARKS.md`): `BENCH|name|figure|unit|reference|ratio|target`. `figure` is in `unit`;
/// `ratio` is the same run's figure over `reference`'s, in the direction the bench states (`-`
/// when there is no reference); `target` is the goal for the ratio or figure (`-`: none).
/// `|` in a field is replaced by `/`, so the line always splits into seven fields.
pub fn summary(name: &str, figure: f64, unit: &str, reference: &str, ratio: Option<f64>, target: &str) {
    let clean = |s: &str| s.replace('|', "/");
    let ratio = ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
    let figure = if figure.abs() >= 100.0 { format!("{figure:.0}") } else { format!("{figure:.3}") };
    println!("BENCH|{}|{figure}|{}|{}|{ratio}|{}", clean(name), clean(unit), clean(reference), clean(target));
}
