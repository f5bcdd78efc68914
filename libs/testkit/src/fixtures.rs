//! Real media files made by real encoders (ffmpeg from Debian, fpdf2 from PyPI in `.venv`), once
//! per test binary, for upload tests: PNG, JPEG, MP4 (H.264), MP3, WAV and PDF.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

/// Paths of the generated files (they live as long as the test binary).
pub struct MediaFiles {
    _dir: TempDir,
    pub png: PathBuf,
    pub jpeg: PathBuf,
    pub mp4: PathBuf,
    pub mp3: PathBuf,
    pub wav: PathBuf,
    pub pdf: PathBuf,
}

impl MediaFiles {
    /// `(path, sniffed MIME type, media type)` of every file.
    pub fn all(&self) -> [(&Path, &'static str, &'static str); 6] {
        [
            (&self.png, "image/png", "IMAGE"),
            (&self.jpeg, "image/jpeg", "IMAGE"),
            (&self.mp4, "video/mp4", "VIDEO"),
            (&self.mp3, "audio/mpeg", "AUDIO"),
            (&self.wav, "audio/x-wav", "AUDIO"),
            (&self.pdf, "application/pdf", "DOCUMENT"),
        ]
    }
}

/// A PNG whose valid IHDR declares `width`×`height` (RGB, 8 bits), then a tiny valid IDAT (one
/// stored, empty, final zlib block) and IEND: a decompression bomb's shape, for tests that must
/// see it refused from its header before any pixel is allocated. Chunks as in the PNG
/// specification (W3C, 3rd edition, §5.3): length, type, data, CRC-32 of type and data.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The files, generated on first use. Panics if ffmpeg or the venv's fpdf2 is missing
/// (`scripts/setup` installs both).
pub fn media_files() -> &'static MediaFiles {
    static FILES: OnceLock<MediaFiles> = OnceLock::new();
    FILES.get_or_init(generate)
}

fn generate() -> MediaFiles {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name);
    let video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"];
    let tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"];
    ffmpeg(&video, &["-frames:v", "1"], &path("frame.png"));
    ffmpeg(&video, &["-frames:v", "1"], &path("frame.jpg"));
    ffmpeg(&video, &["-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264"], &path("clip.mp4"));
    ffmpeg(&tone, &["-c:a", "libmp3lame"], &path("tone.mp3"));
    ffmpeg(&tone, &[], &path("tone.wav"));
    let python = crate::repo_root().join(".venv/bin/python");
    let script = "import sys\nfrom fpdf import FPDF\npdf = FPDF()\npdf.add_page()\npdf.set_font('helvetica', size=14)\npdf.cell(text='mediabus test document')\npdf.output(sys.argv[1])\n";
    run(Command::new(python).arg("-c").arg(script).arg(path("doc.pdf")), "fpdf2 (run scripts/setup)");
    MediaFiles {
        png: path("frame.png"),
        jpeg: path("frame.jpg"),
        mp4: path("clip.mp4"),
        mp3: path("tone.mp3"),
        wav: path("tone.wav"),
        pdf: path("doc.pdf"),
        _dir: dir,
    }
}

fn ffmpeg(input: &[&str], output_options: &[&str], out: &Path) {
    let mut command = Command::new("ffmpeg");
    command.args(["-y", "-loglevel", "error"]).args(input).args(output_options).arg(out);
    run(&mut command, "ffmpeg (run scripts/setup)");
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
}
