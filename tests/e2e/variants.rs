//! Generated renditions through the bridge (DESIGN §9) over real HTTP: `?variant=thumb|preview`
//! with the original's HTTP semantics and access rules, and an fMP4 HLS tree made by ffmpeg played
//! from a signed content URL alone (the token carried through the playlists), with strict paths.
//! The variant files are planted in the file store as the processor lays them out
//! (`mediabus_contracts::variants`), so these tests need no processor.

use std::path::Path;
use std::process::Command;

use crate::events::ProcStack;
use mediabus_e2e::dev_token;
use mediabus_testkit::media_files;

/// Runs ffmpeg (quiet, no stdin) with `args`; panics unless it succeeds.
fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg").args(["-nostdin", "-v", "error", "-y"]).args(args).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// Copies the file `from` to the local file store under `variants/<media>/<file>`.
fn plant(stack: &ProcStack, media: &str, file: &str, from: &Path) {
    let target = stack.files_root().join("variants").join(media).join(file);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(from, &target).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_variants_are_served_like_the_original() {
    let stack = ProcStack::start(false);
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let media = stack.upload(&alice, &media_files().png, &[]).await;
    let bare = stack.upload(&alice, &media_files().jpeg, &[]).await;
    let (id, bare_id) = (media["id"].as_str().unwrap(), bare["id"].as_str().unwrap());

    let work = tempfile::tempdir().unwrap();
    let (thumb, preview) = (work.path().join("thumb.webp"), work.path().join("preview.jpg"));
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=256x192", "-frames:v", "1", thumb.to_str().unwrap()]);
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=640x480", "-frames:v", "1", preview.to_str().unwrap()]);
    plant(&stack, id, "thumb.webp", &thumb);
    plant(&stack, id, "preview.jpg", &preview);
    let thumb_bytes = std::fs::read(&thumb).unwrap();

    let path = format!("/api/media/{id}/content?variant=thumb");
    let got = stack.call("GET", &path, Some(&alice), &[]).await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert!(got.body == thumb_bytes[..], "the thumb's bytes");
    assert_eq!(got.header("content-type"), "image/webp");
    assert_eq!(got.header("content-length"), thumb_bytes.len().to_string());
    assert_eq!(got.header("cache-control"), "private, no-cache");
    assert_eq!(got.header("accept-ranges"), "bytes");
    assert!(!got.header("last-modified").is_empty());
    let etag = got.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert_ne!(etag, format!("\"{}\"", media["checksum"].as_str().unwrap().trim_start_matches("sha256:")));
    assert!(got.header("content-disposition").contains("thumb.webp"), "{}", got.header("content-disposition"));

    let not_modified = stack.call("GET", &path, Some(&alice), &[("if-none-match", &etag)]).await;
    assert_eq!((not_modified.status.as_u16(), not_modified.body.len()), (304, 0));
    let part = stack.call("GET", &path, Some(&alice), &[("range", "bytes=0-9")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), format!("bytes 0-9/{}", thumb_bytes.len()));
    assert!(part.body == thumb_bytes[..10]);

    let preview_reply = stack.call("GET", &format!("/api/media/{id}/content?variant=preview"), Some(&alice), &[]).await;
    assert_eq!(preview_reply.status, 200);
    assert_eq!(preview_reply.header("content-type"), "image/jpeg");
    assert!(preview_reply.body == std::fs::read(&preview).unwrap()[..]);

    // A signed content URL works for the variants too, without a bearer token.
    let ticket = stack.call("GET", &format!("/api/media/{id}/content-url"), Some(&alice), &[]).await.json();
    let token = ticket["token"].as_str().unwrap();
    let signed = stack.call("GET", &format!("{path}&token={token}"), None, &[]).await;
    assert_eq!((signed.status.as_u16(), signed.header("content-type")), (200, "image/webp"));

    // Not there (yet): 404; unknown names: 400, whoever asks; private: 404 to others.
    let missing = stack.call("GET", &format!("/api/media/{bare_id}/content?variant=thumb"), Some(&alice), &[]).await;
    assert_eq!((missing.status.as_u16(), missing.json()["code"].as_str()), (404, Some("NOT_FOUND")));
    for name in ["poster", "hls", "", "../thumb"] {
        let bad = stack.call("GET", &format!("/api/media/{id}/content?variant={name}"), Some(&alice), &[]).await;
        assert_eq!((bad.status.as_u16(), bad.json()["status"].as_u64()), (400, Some(400)), "{name:?}");
    }
    for token in [Some(bob.as_str()), None] {
        let hidden = stack.call("GET", &path, token, &[]).await;
        assert_eq!((hidden.status.as_u16(), hidden.json()["code"].as_str()), (404, Some("NOT_FOUND")));
    }
}

/// `uri` (relative, as in a playlist) resolved against the request path `base` (RFC 3986 §5.2,
/// for the relative paths the playlists hold).
fn resolve(base: &str, uri: &str) -> String {
    let dir = &base[..=base.split('?').next().unwrap().rfind('/').unwrap()];
    format!("{dir}{uri}")
}

/// URIs of a playlist: URI lines and `URI="..."` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in playlist.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(tag) = line.strip_prefix('#') {
            if let Some((_, rest)) = tag.split_once("URI=\"") {
                found.push(rest.split('"').next().unwrap().to_owned());
            }
        } else {
            found.push(line.to_owned());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_video_plays_from_a_signed_content_url_alone() {
    let stack = ProcStack::start(false);
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let video = stack.upload(&alice, &media_files().mp4, &[]).await;
    let id = video["id"].as_str().unwrap();

    // A real fMP4 HLS rendition (2 s, 1 s segments), laid out as the processor writes it.
    let work = tempfile::tempdir().unwrap();
    let rung = work.path().join("240p");
    std::fs::create_dir_all(&rung).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        "-sc_threshold",
        "0",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_type",
        "fmp4",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-hls_segment_filename",
        rung.join("seg_%05d.m4s").to_str().unwrap(),
        rung.join("index.m3u8").to_str().unwrap(),
    ]);
    let master = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x240,CODECS=\"avc1.64000d\"\n240p/index.m3u8\n";
    std::fs::write(work.path().join("master.m3u8"), master).unwrap();
    plant(&stack, id, "hls/master.m3u8", &work.path().join("master.m3u8"));
    for entry in std::fs::read_dir(&rung).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        plant(&stack, id, &format!("hls/240p/{name}"), &entry.path());
    }

    let ticket = stack.call("GET", &format!("/api/media/{id}/content-url"), Some(&alice), &[]).await.json();
    let token = ticket["token"].as_str().unwrap().to_owned();
    let master_path = format!("/api/media/{id}/hls/master.m3u8?token={token}");
    let got = stack.call("GET", &master_path, None, &[]).await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert_eq!(got.header("content-type"), "application/vnd.apple.mpegurl");
    let master_text = String::from_utf8(got.body.to_vec()).unwrap();
    let renditions = uris(&master_text);
    assert_eq!(renditions, [format!("240p/index.m3u8?token={token}")], "{master_text}");

    // Rendition playlist → init section and segments, each URI carrying the token.
    let rendition_path = resolve(&master_path, &renditions[0]);
    let rendition = stack.call("GET", &rendition_path, None, &[]).await;
    assert_eq!(rendition.status, 200, "{:?}", rendition.json());
    let rendition_text = String::from_utf8(rendition.body.to_vec()).unwrap();
    let files = uris(&rendition_text);
    assert!(files.len() >= 3, "init and at least two segments: {rendition_text}");
    assert!(rendition_text.contains(&format!("#EXT-X-MAP:URI=\"init.mp4?token={token}\"")), "{rendition_text}");
    let mut played = Vec::new();
    for uri in &files {
        assert!(uri.ends_with(&format!("?token={token}")), "{uri}");
        let name = uri.split('?').next().unwrap();
        let file = stack.call("GET", &resolve(&rendition_path, uri), None, &[]).await;
        assert_eq!(file.status, 200, "{uri}: {:?}", file.json());
        let expected_type = if name == "init.mp4" { "video/mp4" } else { "video/iso.segment" };
        assert_eq!(file.header("content-type"), expected_type, "{uri}");
        assert!(file.body == std::fs::read(rung.join(name)).unwrap()[..], "{uri}: bytes differ");
        played.extend_from_slice(&file.body);
    }
    // What a player receives decodes: init + segments is a playable fragmented MP4.
    let joined = work.path().join("played.mp4");
    std::fs::write(&joined, &played).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0", joined.to_str().unwrap()])
        .output()
        .expect("ffprobe");
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "50", "2 s at 25 fps");

    // Segments take ranges and validators like content.
    let segment_path = resolve(&rendition_path, &files[1]);
    let part = stack.call("GET", &segment_path, None, &[("range", "bytes=0-99")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body.len(), 100);
    let etag = part.header("etag").to_owned();
    let cached = stack.call("GET", &segment_path, None, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);

    // With a bearer token instead, playlists stay as stored (relative URIs resolve on the same
    // path and the player sends its header again).
    let plain = stack.call("GET", &format!("/api/media/{id}/hls/master.m3u8"), Some(&alice), &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, master.as_bytes());

    // Private: 404 to others and to anonymous callers; a token of another media is refused.
    for caller in [Some(bob.as_str()), None] {
        let hidden = stack.call("GET", &format!("/api/media/{id}/hls/master.m3u8"), caller, &[]).await;
        assert_eq!(hidden.status, 404, "{caller:?}");
    }
    let other = stack.upload(&alice, &media_files().png, &[]).await;
    let other_id = other["id"].as_str().unwrap();
    let foreign = stack.call("GET", &format!("/api/media/{other_id}/hls/master.m3u8?token={token}"), None, &[]).await;
    assert_eq!(foreign.status, 401);

    // Strict paths: traversal, hidden files, other extensions, other layouts: 400 in the contract's
    // shape; a well-formed path that does not exist: 404.
    for bad in [
        "../../content",
        "%2e%2e/%2e%2e/content",
        "240p/..%2f..%2fmaster.m3u8",
        "240p/.init.mp4",
        "240p/seg_00000.ts",
        "240P/index.m3u8",
        "a/240p/index.m3u8",
        "240p//index.m3u8",
    ] {
        let refused = stack.call("GET", &format!("/api/media/{id}/hls/{bad}?token={token}"), None, &[]).await;
        assert_eq!((refused.status.as_u16(), refused.json()["status"].as_u64()), (400, Some(400)), "{bad}");
    }
    let absent = stack.call("GET", &format!("/api/media/{id}/hls/240p/seg_99999.m4s?token={token}"), None, &[]).await;
    assert_eq!((absent.status.as_u16(), absent.json()["code"].as_str()), (404, Some("NOT_FOUND")));
}
