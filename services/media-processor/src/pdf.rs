//! PDF `details` (DESIGN §9: `{pageCount, width, height}`, page 1 in points) and the image of
//! page 1, by poppler-utils' `pdfinfo` and `pdftoppm` (Debian's, installed by `scripts/setup`) run
//! as bounded child processes (killed when dropped or after their time limit).
//!
//! Encrypted PDFs that need a password to open are refused; PDFs with only an owner password
//! (permission flags, no user password) open in every viewer and are processed like others.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::error::{ProcessError, Result};
use crate::video::tool::{self, Stdout, host_fault, owner_reason};

/// Time `pdfinfo` may take: it only parses the document structure.
const INFO_LIMIT: Duration = Duration::from_secs(30);
/// Time `pdftoppm` may take for one page.
const RENDER_LIMIT: Duration = Duration::from_secs(60);

/// PDF `details` of DESIGN §9, as JSON: `{pageCount, width, height}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PdfDetails {
    /// Number of pages, at least 1.
    pub page_count: u32,
    /// Page 1 width as displayed (its /Rotate applied), points (1/72 in).
    pub width: f64,
    /// Page 1 height as displayed, points.
    pub height: f64,
}

/// Reads the page count and the size of page 1 with `pdfinfo -f 1 -l 1` (30 s at most).
///
/// Errors ([`ProcessError::Rejected`], with a reason for the owner): not a PDF, damaged beyond
/// poppler's repair, password-protected, no pages, too slow to parse. `pdfinfo` missing →
/// [`ProcessError::Transient`].
pub async fn probe(path: &Path) -> Result<PdfDetails> {
    let path = std::path::absolute(path)?;
    let args: Vec<OsString> = vec!["-f".into(), "1".into(), "-l".into(), "1".into(), path.clone().into()];
    let done = tool::run("pdfinfo", &args, Some(INFO_LIMIT), "reading the PDF", Stdout::Collect).await?;
    if !done.status.success() {
        return Err(refusal(&done.stderr, &path));
    }
    details_from_info(&String::from_utf8_lossy(&done.stdout))
}

/// Renders page 1 of `path` as a PNG whose longer side is `max_side_px` pixels
/// (`pdftoppm -png -f 1 -l 1 -scale-to <max_side_px> -singlefile`, 60 s at most) into `out_png`.
///
/// Errors: as [`probe`]; the file system → [`ProcessError::Transient`].
pub async fn render_first_page(path: &Path, out_png: &Path, max_side_px: u32) -> Result<()> {
    let path = std::path::absolute(path)?;
    // pdftoppm appends ".png" to the prefix it is given: render beside the target, then rename.
    let mut prefix = std::path::absolute(out_png)?.into_os_string();
    prefix.push(".render");
    let mut rendered = prefix.clone();
    rendered.push(".png");
    let args: Vec<OsString> = ["-png", "-f", "1", "-l", "1", "-scale-to"]
        .into_iter()
        .map(OsString::from)
        .chain([max_side_px.max(1).to_string().into(), "-singlefile".into(), path.clone().into(), prefix])
        .collect();
    let done = tool::run("pdftoppm", &args, Some(RENDER_LIMIT), "rendering the PDF", Stdout::Collect).await;
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&rendered).await;
            return Err(e);
        }
    };
    if !done.status.success() {
        let _ = tokio::fs::remove_file(&rendered).await;
        return Err(refusal(&done.stderr, &path));
    }
    tokio::fs::rename(&rendered, out_png)
        .await
        .map_err(|e| ProcessError::rejected(format!("page 1 of the PDF could not be rendered ({e})")))
}

/// The error for a failed poppler tool: password and damage are the file's fault, a full disk
/// or a missing permission the host's.
fn refusal(stderr: &str, path: &Path) -> ProcessError {
    if stderr.contains("Incorrect password") {
        ProcessError::rejected("the PDF is password-protected")
    } else if host_fault(stderr) {
        ProcessError::transient(format!("poppler: {}", owner_reason(stderr, path)))
    } else {
        ProcessError::rejected(format!("the file is not a readable PDF ({})", owner_reason(stderr, path)))
    }
}

/// [`PdfDetails`] out of `pdfinfo -f 1 -l 1` output (`Pages:  3`, `Page    1 size: 595.28 x
/// 841.89 pts (A4)`, `Page    1 rot:   90`).
fn details_from_info(info: &str) -> Result<PdfDetails> {
    let mut pages = None;
    let mut size = None;
    let mut rotation = 0_i64;
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.split_whitespace().collect::<Vec<_>>();
        match key.as_slice() {
            ["Pages"] => pages = value.trim().parse::<u32>().ok(),
            ["Page", "1", "size"] | ["Page", "size"] => {
                let mut numbers = value.split_whitespace().filter_map(|w| w.parse::<f64>().ok());
                size = numbers.next().zip(numbers.next());
            }
            ["Page", "1", "rot"] => rotation = value.trim().parse::<f64>().map_or(0, |r| r.round() as i64),
            _ => {}
        }
    }
    let page_count = pages.filter(|n| *n > 0).ok_or_else(|| ProcessError::rejected("the PDF has no pages"))?;
    let (w, h) = size
        .filter(|(w, h)| *w > 0.0 && *h > 0.0)
        .ok_or_else(|| ProcessError::rejected("the PDF's page size cannot be read"))?;
    let (width, height) = if (rotation / 90).rem_euclid(2) == 1 { (h, w) } else { (w, h) };
    Ok(PdfDetails { page_count, width, height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdfinfo_output_parses() {
        let info = "Producer:        PyFPDF\nPages:           3\nEncrypted:       no\n\
                    Page    1 size:  595.28 x 841.89 pts (A4)\nPage    1 rot:   0\nFile size:       1722 bytes\n";
        assert_eq!(details_from_info(info).unwrap(), PdfDetails { page_count: 3, width: 595.28, height: 841.89 });
        let rotated = info.replace("rot:   0", "rot:   90");
        assert_eq!(details_from_info(&rotated).unwrap(), PdfDetails { page_count: 3, width: 841.89, height: 595.28 });
        assert!(matches!(details_from_info("Pages: 0\n"), Err(ProcessError::Rejected(_))));
        let json = serde_json::to_value(details_from_info(info).unwrap()).unwrap();
        assert_eq!(json["pageCount"], 3);
    }

    #[test]
    fn password_errors_are_named() {
        let e = refusal("Command Line Error: Incorrect password\n", Path::new("/t/x.pdf"));
        assert!(matches!(e, ProcessError::Rejected(m) if m == "the PDF is password-protected"));
        let e = refusal("Syntax Error: Couldn't read xref table\n", Path::new("/t/x.pdf"));
        assert!(matches!(e, ProcessError::Rejected(m) if m.contains("Couldn't read xref table")));
    }
}
