//! Variant names (DESIGN §9) and where their files live in the blob store, shared by the
//! processor that writes them, the bridge that serves them and the purge that removes them.
//!
//! Layout under `variants/<mediaId>/` (see `mediabus_storage::variant_prefix`):
//! - `thumb.webp`: WebP fitting 256×256;
//! - `preview.jpg`: JPEG fitting 1280×1280;
//! - `hls/master.m3u8`: the HLS master playlist, with one directory per rendition
//!   (`hls/<height>p/index.m3u8`, `hls/<height>p/init.mp4`, `hls/<height>p/seg_<n>.m4s`).

/// `thumb`: image, video poster frame, PDF page 1.
pub const THUMB: &str = "thumb";
/// `preview`: image, video poster frame.
pub const PREVIEW: &str = "preview";
/// `hls`: video; its `url` is the master playlist.
pub const HLS: &str = "hls";

/// File of a variant under the media's variant prefix, for the single-file variants and the HLS
/// master: `thumb` → `thumb.webp`, `preview` → `preview.jpg`, `hls` → `hls/master.m3u8`.
/// `None` for any other name.
pub fn file_name(variant: &str) -> Option<&'static str> {
    match variant {
        THUMB => Some("thumb.webp"),
        PREVIEW => Some("preview.jpg"),
        HLS => Some("hls/master.m3u8"),
        _ => None,
    }
}

/// Blob-store key of `file` (a [`file_name`] or a path under `hls/`) of media `media_id`:
/// `variants/<mediaId>/<file>`.
pub fn key(media_id: &str, file: &str) -> String {
    format!("variants/{media_id}/{file}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_files_have_fixed_names() {
        assert_eq!(file_name(THUMB), Some("thumb.webp"));
        assert_eq!(file_name(PREVIEW), Some("preview.jpg"));
        assert_eq!(file_name(HLS), Some("hls/master.m3u8"));
        assert_eq!(file_name("../x"), None);
        assert_eq!(key("abc", "hls/720p/index.m3u8"), "variants/abc/hls/720p/index.m3u8");
    }
}
