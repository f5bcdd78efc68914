//! thumb-bench: images per second of the 256 px thumbnail made by the media processor's image
//! module, next to `vipsthumbnail --size 256` (libvips, Debian's libvips-tools) on the same files
//! in the same run, one vips process for the whole set (as it runs best).
//!
//! The corpus is generated first with ffmpeg: 19 photo-like JPEGs of 2 to 12 MP (a Mandelbrot
//! render upscaled as a lens would blur it, plus sensor-like noise; 4:2:0 at ffmpeg `-q:v 2`,
//! about 2 bits per pixel like a camera's) and one of 24 MP, timed separately (run
//! [`LARGE_REPEAT`] times per round, in one vips process too, so vips' start-up is amortised
//! alike). Contenders, in [`ROUNDS`] alternating rounds:
//! - vipsthumbnail with its default JPEG output, and with WebP at Q=80 like ours;
//! - vipsthumbnail making both of our renditions: the WebP thumb, then a second process for the
//!   1280 px JPEG preview (`--size 1280x1280>`, never upscaled), each decoding the file again
//!   (vips has no one command for two sizes): the like-for-like reference of `process_image()`;
//! - `thumbnail()`: our thumb alone (a JPEG shrunk on load by up to 1/8), WebP written; compared
//!   with vips' JPEG thumbnail;
//! - `process_image()`: thumb + 1280 px JPEG preview + thumbhash from one decode; compared with
//!   vips' thumb + preview;
//!
//! ours on one thread (one image at a time), then on every core (one image per core, as
//! concurrent jobs run). Printed: images/s of the median round and CPU ms per image (this
//! process's or vips' CPU time, which other load on the machine distorts less than wall time);
//! the ratios to vips (wall clock paired round by round, and per CPU second); our peak RSS
//! (`VmHWM`, reset between the one-thread and all-core phases).
//!
//! Usage: `thumb-bench [--rounds N]`, run by `scripts/bench`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use media_processor::image::{ImageLimits, process_image, thumbnail};
use mediabus_e2e::bench::{ROUNDS, peak_rss_kib, summary};

/// Sizes of the small photos (2 to 12 MP, landscape and portrait).
const SMALL: [(u32, u32); 19] = [
    (1632, 1224),
    (1920, 1280),
    (2048, 1536),
    (1536, 2048),
    (2304, 1728),
    (2560, 1440),
    (2592, 1944),
    (1944, 2592),
    (2816, 2112),
    (3000, 2000),
    (3264, 2448),
    (2448, 3264),
    (3456, 2304),
    (3648, 2736),
    (3840, 2160),
    (4000, 2664),
    (4000, 3000),
    (3000, 4000),
    (4032, 3024),
];
/// The large photo: 24 MP.
const LARGE: (u32, u32) = (6000, 4000);
/// Times the large photo is processed per round (one vips process for all of them).
const LARGE_REPEAT: usize = 4;

fn main() {
    let rounds = rounds_arg();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    eprintln!("thumb-bench: generating the corpus with ffmpeg");
    let small = generate(dir.path(), &SMALL, cores);
    let large = generate(dir.path(), &[LARGE], cores).remove(0);
    let large_set = vec![large.clone(); LARGE_REPEAT];
    let tiny = dir.path().join("tiny.jpg");
    ffmpeg_photo(&tiny, (64, 48), 0);
    let megapixels: f64 = SMALL.iter().map(|&(w, h)| f64::from(w * h) / 1e6).sum();
    let bytes: u64 = small.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    let large_bytes = std::fs::metadata(&large).unwrap().len();
    // Warm the page cache and check every file once.
    for path in small.iter().chain([&large]) {
        process_image(path, &ImageLimits::default()).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        vips(std::slice::from_ref(path), &out, "256", "jpg");
    }

    println!(
        "thumbnails, 256 px: {} photos of 2-12 MP ({megapixels:.0} MP, {:.1} MB) and one of 24 MP ({:.1} MB, x{LARGE_REPEAT} per round); {rounds} rounds, {cores} cores",
        small.len(),
        bytes as f64 / 1e6,
        large_bytes as f64 / 1e6,
    );
    let vips_start =
        median((0..rounds).map(|_| measure(|| vips(std::slice::from_ref(&tiny), &out, "256", "jpg")).wall).collect());
    let mut rows: Vec<Row> = Vec::new();
    let mut peaks = Vec::new();
    for threads in if cores > 1 { vec![1, cores] } else { vec![1] } {
        reset_peak_rss();
        for _ in 0..rounds {
            for (name, ext) in [("vipsthumbnail, JPEG out", "jpg"), ("vipsthumbnail, WebP Q=80 out", "webp[Q=80]")] {
                let s = measure(|| vips(&small, &out, "256", ext));
                let l = measure(|| vips(&large_set, &out, "256", ext));
                Row::add(&mut rows, &phase(name, threads), s, l);
            }
            let both = |files: &[PathBuf]| {
                vips(files, &out, "256", "webp[Q=80]");
                vips(files, &out, "1280x1280>", "jpg[Q=82]");
            };
            let (s, l) = (measure(|| both(&small)), measure(|| both(&large_set)));
            Row::add(&mut rows, &phase(VIPS_BOTH, threads), s, l);
            for (what, full) in [("thumbnail()", false), ("process_image()", true)] {
                let s = measure(|| ours(&small, &out, threads, full));
                let l = measure(|| ours(&large_set, &out, threads, full));
                Row::add(&mut rows, &format!("{what} on {threads} thread(s)"), s, l);
            }
        }
        peaks.push((threads, peak_rss_kib(std::process::id()).unwrap_or(0)));
    }
    println!("{:<40} {:>9} {:>10} {:>9} {:>10}", "median round", "small/s", "CPU ms/img", "24MP/s", "CPU ms/img");
    for row in &rows {
        let (s, l) = (row.median(&row.small, small.len()), row.median(&row.large, LARGE_REPEAT));
        println!("{:<40} {:>9.1} {:>10.1} {:>9.2} {:>10.1}", row.name, s.0, s.1, l.0, l.1);
    }
    println!(
        "(vipsthumbnail start-up, one 64x48 image: {:.0} ms; included above, once per process)",
        vips_start * 1000.0
    );

    // Ratios against the vips JPEG run of the same round (wall clock, paired round by round), and
    // of CPU time per image (medians), which a busy machine distorts less.
    let find = |name: &str| rows.iter().find(|r| r.name == name).expect("row");
    for threads in if cores > 1 { vec![1, cores] } else { vec![1] } {
        for (what, reference) in [("thumbnail()", VIPS_JPEG), ("process_image()", VIPS_BOTH)] {
            let base = find(&phase(reference, threads));
            let row = find(&format!("{what} on {threads} thread(s)"));
            let wall = |a: &[Sample], b: &[Sample]| median(a.iter().zip(b).map(|(x, y)| y.wall / x.wall).collect());
            let cpu = |a: &[Sample], b: &[Sample]| {
                median(b.iter().map(|x| x.cpu).collect()) / median(a.iter().map(|x| x.cpu).collect())
            };
            let (s, l) = (wall(&row.small, &base.small), wall(&row.large, &base.large));
            let verdict = |r: f64| if r >= 1.0 { "met" } else { "NOT met" };
            println!(
                "ratio {what} on {threads} thread(s) / {reference}, images/s: {s:.2} on 2-12 MP ({}), {l:.2} on 24 MP ({}) \
                 (target >= 1.0); per CPU second: {:.2} and {:.2}",
                verdict(s),
                verdict(l),
                cpu(&row.small, &base.small),
                cpu(&row.large, &base.large),
            );
            let name = format!("thumbs 256px 2-12 MP, {what} on {threads} thread(s)");
            let rate = row.median(&row.small, small.len()).0;
            summary(&name, rate, "images/s", reference, Some(s), ">= 1.0");
            let name = format!("thumbs 256px 24 MP, {what} on {threads} thread(s)");
            let rate = row.median(&row.large, LARGE_REPEAT).0;
            summary(&name, rate, "images/s", reference, Some(l), ">= 1.0");
        }
    }
    for (threads, kib) in peaks {
        println!("our peak RSS on {threads} thread(s): {:.0} MiB", kib as f64 / 1024.0);
    }
}

/// One timed run: wall-clock seconds, and CPU seconds of this process plus its waited-for
/// children (vipsthumbnail).
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
}

/// The rounds of one contender, on the small photos and on the large one.
struct Row {
    name: String,
    small: Vec<Sample>,
    large: Vec<Sample>,
}

impl Row {
    fn add(rows: &mut Vec<Row>, name: &str, small: Sample, large: Sample) {
        match rows.iter_mut().find(|r| r.name == name) {
            Some(row) => {
                row.small.push(small);
                row.large.push(large);
            }
            None => rows.push(Row { name: name.to_owned(), small: vec![small], large: vec![large] }),
        }
    }

    /// (images/s of the median-wall round, median CPU ms per image) of `samples` of `n` images.
    fn median(&self, samples: &[Sample], n: usize) -> (f64, f64) {
        let wall = median(samples.iter().map(|s| s.wall).collect());
        let cpu = median(samples.iter().map(|s| s.cpu).collect());
        (n as f64 / wall, cpu * 1000.0 / n as f64)
    }
}

fn measure(f: impl FnOnce()) -> Sample {
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    f();
    Sample { wall: start.elapsed().as_secs_f64(), cpu: cpu_seconds() - cpu0 }
}

/// CPU time (user + system) of this process and of its waited-for children, in seconds, from
/// `/proc/self/stat` (fields utime, stime, cutime, cstime; clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime..cstime are fields 14..=17.
    let ticks: u64 = fields[11..15].iter().map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    ticks as f64 / 100.0
}

/// Writes one photo-like JPEG per size into `dir`, `jobs` ffmpeg processes at a time.
fn generate(dir: &Path, sizes: &[(u32, u32)], jobs: usize) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = sizes.iter().map(|&(w, h)| dir.join(format!("photo-{w}x{h}.jpg"))).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&size) = sizes.get(i) else { break };
                    ffmpeg_photo(&paths[i], size, i);
                }
            });
        }
    });
    paths
}

/// A photo-like JPEG of `size`: a Mandelbrot view (chosen by `seed`) rendered at half size and
/// upscaled (soft like a lens), sensor-like noise, 4:2:0 at `-q:v 2`.
fn ffmpeg_photo(path: &Path, (w, h): (u32, u32), seed: usize) {
    let views =
        [(-0.75, 0.1, 1.2), (-0.7436, 0.1318, 0.02), (-1.25, 0.02, 0.15), (0.285, 0.01, 0.6), (-0.16, 1.04, 0.1)];
    let (x, y, scale) = views[seed % views.len()];
    let source = format!(
        "mandelbrot=s={}x{}:maxiter=150:start_x={x}:start_y={y}:start_scale={scale},scale={w}:{h}:flags=bicubic,format=yuv420p,noise=alls=6:allf=t",
        w.div_ceil(2),
        h.div_ceil(2)
    );
    let status = Command::new("ffmpeg")
        .args(["-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", &source])
        .args(["-frames:v", "1", "-q:v", "2", "-pix_fmt", "yuvj420p"])
        .arg(path)
        .status()
        .expect("run ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg failed for {path:?}");
}

/// The reference of `thumbnail()`: vips' thumbnail with its default JPEG output.
const VIPS_JPEG: &str = "vipsthumbnail, JPEG out";
/// The reference of `process_image()`: vips making the same two renditions.
const VIPS_BOTH: &str = "vipsthumbnail, WebP thumb + JPEG preview";

/// The row name of vips contender `name` in the phase of `threads` (vips runs alike in both
/// phases; its rows are measured again next to ours on every core).
fn phase(name: &str, threads: usize) -> String {
    if threads == 1 { name.to_owned() } else { format!("{name} (again)") }
}

/// One `vipsthumbnail --size <size>` process for all of `files`, writing `out/tn_<name>.<ext>`
/// (`ext` may carry save options, e.g. `webp[Q=80]`).
fn vips(files: &[PathBuf], out: &Path, size: &str, ext: &str) {
    let status = Command::new("vipsthumbnail")
        .args(["--size", size, "-o"])
        .arg(out.join(format!("tn_%s.{ext}")))
        .args(files)
        .status()
        .expect("run vipsthumbnail (scripts/setup installs libvips-tools)");
    assert!(status.success(), "vipsthumbnail failed");
}

/// Our thumbnails (`full`: thumb and preview) of `files` on `threads` threads, written to `out`.
fn ours(files: &[PathBuf], out: &Path, threads: usize, full: bool) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let name = path.file_stem().unwrap().to_str().unwrap();
                    let limits = ImageLimits::default();
                    if full {
                        let o = process_image(path, &limits).expect("process_image");
                        std::fs::write(out.join(format!("{name}.thumb.webp")), &o.thumb.bytes).unwrap();
                        std::fs::write(out.join(format!("{name}.preview.jpg")), &o.preview.bytes).unwrap();
                    } else {
                        let thumb = thumbnail(path, &limits).expect("thumbnail");
                        std::fs::write(out.join(format!("{name}.thumb.webp")), &thumb.bytes).unwrap();
                    }
                }
            });
        }
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The value of `--rounds N` on the command line (default [`ROUNDS`]).
fn rounds_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map_or(ROUNDS, |s| s.parse().expect("--rounds N"))
}
