"""The web app at / in a real browser: Debian's Chromium driven by Playwright (PyPI), never a
browser that Playwright downloads.

Run by tests/e2e/web.rs against a live stack (bridge, media service, processor, auth service):

    library.py --url http://127.0.0.1:PORT --shots DIR --image photo.jpg --video clip.mp4 \
        --audio tone.mp3 --pdf doc.pdf [--readme docs/library.png]

Steps, each with a screenshot in DIR: register; upload a JPEG and an MP4 through the file input;
both appear without a reload, as PROCESSING first, and turn READY (live, over /api/events; the
card's data-status history is recorded in the page); open the image (preview loaded:
naturalWidth > 0); play the video (HLS through hls.js: currentTime advances; its duration is
shown); make one public; delete one; open a card from the keyboard; an MP3 (an <audio> that loads)
and a PDF (thumbnail loaded) with download links; rename the image (the card follows, and keeps
the name across a reload); pause a tus upload mid-way (its offset stops), resume it to READY;
cancel another (its tus URL is gone: 404, no card); a phone-sized viewport without horizontal
scrolling. Copy link: a public media's plain content URL and a private one's signed URL, both
fetched from Python without a bearer token (the private one refused without its token). Token
refresh: the stack issues access tokens that live seconds (tests/e2e/web.rs), so the page
refreshes them throughout the run; by the end the sign-up token is refused, every refresh was
answered 200, and a PNG dropped on the drop zone (a File in a DataTransfer, dragenter / dragover
/ drop) uploads and turns READY live. Any console error or page error, in any browser context,
fails the run (so no request met a 401 on the way). Exit 0 on success, 1 with the reason.
"""

import argparse
import base64
import json
import os
import struct
import sys
import time
import traceback
import urllib.error
import urllib.request
import wave
import zlib
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"]
READY_TIMEOUT_MS = 180_000
# The app's tus chunk (services/http-bridge/web/app/uploads.js): one PATCH per 10 MiB.
CHUNK = 10 * 1024 * 1024

# Records, per card (data-id), the data-status values it shows in order: the SSE-driven history
# that must go PROCESSING → READY. Attribute records carry the old value, so two changes between
# observer callbacks still show both.
STATUS_LOG_JS = """() => {
  const log = (window.__statusLog = {});
  const push = (id, status) => {
    if (!id || !status) return;
    const seen = (log[id] ??= []);
    if (seen.at(-1) !== status) seen.push(status);
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "attributes") {
        push(r.target.dataset.id, r.oldValue);
        push(r.target.dataset.id, r.target.dataset.status);
      } else {
        for (const n of r.addedNodes) if (n.nodeType === 1) push(n.dataset.id, n.dataset.status);
      }
    }
  }).observe(document.getElementById("grid"), {
    subtree: true, childList: true, attributes: true, attributeOldValue: true, attributeFilter: ["data-status"],
  });
}"""

# The thumbnails' fade-in has finished (for the pictures).
FADED_IN_JS = "() => [...document.querySelectorAll('#grid img.loaded')].every(i => getComputedStyle(i).opacity === '1')"


def noise_wav(path: Path, mib: int) -> Path:
    """A WAV of `mib` MiB of noise (48 kHz stereo 16-bit): an accepted, processable audio type
    that is large enough for several tus PATCHes."""
    frames = mib * 1024 * 1024 // 4
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(os.urandom(frames * 4))
    return path


def tiny_png(width: int, height: int) -> bytes:
    """An RGB PNG of a colour gradient (zlib, no imaging library): the file the page drops."""
    raw = b"".join(
        b"\0" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def main() -> int:
    problems: list[str] = []
    try:
        run(problems)
    except Exception:
        # The problems seen before the step that failed say more than its traceback alone.
        traceback.print_exc()
        problems.append("the run stopped at the exception above")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


def run(problems: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--shots", required=True, type=Path)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--audio", required=True, type=Path)
    ap.add_argument("--pdf", required=True, type=Path)
    ap.add_argument("--readme", type=Path, help="also save the library screenshot here (README)")
    ap.add_argument("--auth-metrics", required=True, help="the auth service's /metrics URL")
    args = ap.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    big = noise_wav(args.shots / "long-take.wav", 24)
    doomed = noise_wav(args.shots / "cancelled-take.wav", 24)

    def watch(page, where: str) -> None:
        """Every console error and uncaught exception of `page` fails the run."""
        page.on("console", lambda m: problems.append(f"console {m.type} ({where}): {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error ({where}): {e}"))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        watch(page, "desktop")
        shot = lambda name: page.screenshot(path=str(args.shots / f"{name}.png"), full_page=True)

        def wait_until(condition, seconds: float, what: str) -> None:
            """Polls `condition` (letting Playwright dispatch its events) until true or the deadline."""
            deadline = time.monotonic() + seconds
            while not condition():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {seconds} s waiting for {what}")
                page.wait_for_timeout(50)

        email, password = f"grace-{int(time.time() * 1000)}@example.com", "correct horse battery"
        api_token = {"value": None}

        def own_token(renew: bool = False) -> str:
            """An access token of the test's user for requests from Python, from its own login: the
            page's token may expire under a short TTL before the page refreshes it."""
            if renew or api_token["value"] is None:
                body = json.dumps({"email": email, "password": password}).encode()
                request = urllib.request.Request(
                    f"{args.url}/api/auth/login", data=body, method="POST", headers={"content-type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=10) as reply:
                    api_token["value"] = json.load(reply)["accessToken"]
            return api_token["value"]

        def tus_head(url: str) -> tuple[int, dict]:
            """HEAD on a tus upload URL with the user's access token: (status, headers)."""
            for renew in (False, True):
                headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {own_token(renew)}"}
                request = urllib.request.Request(url, method="HEAD", headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=10) as reply:
                        return reply.status, {k.lower(): v for k, v in reply.headers.items()}
                except urllib.error.HTTPError as e:
                    if e.code == 401 and not renew:
                        continue  # that token expired: log in again
                    return e.code, {k.lower(): v for k, v in e.headers.items()}
            raise AssertionError("unreachable")

        def get(url: str, token: str | None = None) -> tuple[int, bytes]:
            """GET from Python, outside the browser: (status, body); a bearer token only if given."""
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
                    return reply.status, reply.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        def copy_link(expected_note: str) -> str:
            """Clicks Copy link in the open detail view; returns what the clipboard then holds."""
            page.evaluate("() => navigator.clipboard.writeText('')")
            dialog.get_by_role("button", name="Copy link").click()
            expect(dialog.locator("#edit-note")).to_have_text(expected_note, timeout=15_000)
            expect(dialog.locator("#edit-error")).to_be_empty()
            return page.evaluate("() => navigator.clipboard.readText()")

        def session_token() -> str:
            return page.evaluate("() => JSON.parse(sessionStorage.getItem('mediabus.session')).accessToken")

        def count_refreshes(target, sent: list[str], answers: list[int]) -> None:
            """Records the token refreshes `target` sends, and the status of each answer it gets."""
            is_refresh = lambda url: url.endswith("/api/auth/refresh")  # noqa: E731
            target.on("request", lambda r: sent.append(r.url) if is_refresh(r.url) else None)
            target.on("response", lambda r: answers.append(r.status) if is_refresh(r.url) else None)

        refreshes: list[str] = []
        refreshed: list[int] = []
        count_refreshes(page, refreshes, refreshed)
        phone_refreshes: list[str] = []
        phone_refreshed: list[int] = []

        def history(card) -> list[str]:
            media_id = card.get_attribute("data-id")
            return page.evaluate("(id) => window.__statusLog[id] ?? []", media_id)

        def require_processing_then_ready(card, name: str) -> None:
            seen = history(card)
            ok = "PROCESSING" in seen and seen[-1] == "READY" and seen.index("PROCESSING") < seen.index("READY")
            if not ok:
                problems.append(f"{name}: the card showed {seen}, not PROCESSING then READY")

        page.goto(args.url)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("01-sign-in")
        auth = page.locator("#auth")
        auth.get_by_role("button", name="Create an account").click()
        auth.get_by_label("Name").fill("Grace Hopper")
        auth.get_by_label("Email").fill(email)
        auth.get_by_label("Password").fill(password)
        auth.get_by_role("button", name="Create account").click()
        expect(page.locator("#library")).to_be_visible()
        expect(page.locator("#empty")).to_be_visible()
        first_token = session_token()
        user_id = page.evaluate("() => JSON.parse(sessionStorage.getItem('mediabus.session')).user.id")
        page.evaluate(STATUS_LOG_JS)
        shot("02-empty-library")

        # Upload through the file input; the cards come from the live event stream.
        page.set_input_files("#file-input", [str(args.image), str(args.video)])
        cards = page.locator("#grid > li")
        expect(cards).to_have_count(2, timeout=60_000)
        shot("03-uploaded")
        image_card = page.locator("#grid > li", has_text=args.image.name)
        video_card = page.locator("#grid > li", has_text=args.video.name)
        for card in (image_card, video_card):
            expect(card).to_have_attribute("data-status", "READY", timeout=READY_TIMEOUT_MS)
        require_processing_then_ready(image_card, args.image.name)
        require_processing_then_ready(video_card, args.video.name)
        expect(image_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        expect(video_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        page.wait_for_function(FADED_IN_JS)
        shot("04-ready")
        if args.readme:
            args.readme.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.readme))

        # The image: its preview variant loads.
        image_card.get_by_role("button").click()
        dialog = page.locator("#detail")
        expect(dialog).to_be_visible()
        preview = page.locator("#preview")
        expect(preview).to_have_attribute("alt", args.image.name)
        page.wait_for_function("() => document.querySelector('#preview')?.naturalWidth > 0", timeout=30_000)
        expect(dialog.locator("#facts")).to_contain_text("Dimensions")
        shot("05-image")

        # Make it public.
        dialog.get_by_label("Public (anyone with the link can see it)").check()
        dialog.get_by_role("button", name="Save").click()
        expect(dialog.locator("#facts")).to_contain_text("public", timeout=15_000)
        shot("06-made-public")

        # Copy link on a public media: its plain content URL, which serves the original without
        # any token.
        link = copy_link("Link copied")
        image_id = image_card.get_attribute("data-id")
        if link != f"{args.url}/api/media/{image_id}/content":
            problems.append(f"the public image's copied link is {link!r}")
        status, body = get(link)
        if (status, body) != (200, args.image.read_bytes()):
            problems.append(f"the public link without a token: {status}, {len(body)} bytes")
        shot("06a-public-link-copied")
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_be_hidden()

        # The video plays from HLS; its details show the duration (a 1 s clip).
        video_card.get_by_role("button").click()
        expect(dialog).to_be_visible()
        expect(dialog.locator("#facts dt", has_text="Duration")).to_have_count(1)
        expect(dialog.locator("#facts dt:text-is('Duration') + dd")).to_have_text("0:01")
        # play() before hls.js has attached its source would be cut off by that load.
        page.wait_for_function("() => document.querySelector('#player')?.readyState >= 1", timeout=30_000)
        page.evaluate("() => document.querySelector('#player').play()")
        page.wait_for_function("() => document.querySelector('#player').currentTime > 0.5", timeout=60_000)
        src = page.evaluate("() => document.querySelector('#player').currentSrc")
        if not src.startswith("blob:"):
            problems.append(f"the video did not play through hls.js (MSE): src={src}")
        shot("07-video-playing")
        dialog.get_by_role("button", name="Close").click()

        # Keyboard: a card opens with Enter; Escape closes.
        image_card.get_by_role("button").focus()
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # Delete the video.
        page.once("dialog", lambda d: d.accept())
        video_card.get_by_role("button").click()
        dialog.get_by_role("button", name="Delete").click()
        expect(cards).to_have_count(1, timeout=15_000)
        shot("08-deleted")

        # An MP3 and a PDF: each turns READY live; the detail view has an audio player that loads
        # the song, the PDF's page thumbnail, and a download link for both.
        page.set_input_files("#file-input", [str(args.audio), str(args.pdf)])
        audio_card = page.locator("#grid > li", has_text=args.audio.name)
        pdf_card = page.locator("#grid > li", has_text=args.pdf.name)
        for card, name in ((audio_card, args.audio.name), (pdf_card, args.pdf.name)):
            expect(card).to_have_attribute("data-status", "READY", timeout=READY_TIMEOUT_MS)
            require_processing_then_ready(card, name)
        expect(pdf_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        audio_card.get_by_role("button").click()
        expect(dialog.locator("#viewer audio")).to_have_count(1, timeout=15_000)
        expect(dialog.locator("#viewer audio")).to_have_attribute("aria-label", args.audio.name)
        # The signed URL plays: the browser read the file's header (a 1 s tone).
        page.wait_for_function("() => document.querySelector('#viewer audio')?.duration > 0.5", timeout=30_000)
        download = dialog.get_by_role("link", name="Download")
        expect(download).to_have_attribute("download", args.audio.name)
        if "/content" not in (download.get_attribute("href") or ""):
            problems.append(f"the audio's download link is {download.get_attribute('href')!r}")
        expect(dialog.locator("#facts dt:text-is('Duration') + dd")).to_have_text("0:01")
        shot("09-audio")
        dialog.get_by_role("button", name="Close").click()
        pdf_card.get_by_role("button").click()
        expect(preview).to_have_attribute("alt", args.pdf.name)
        page.wait_for_function("() => document.querySelector('#preview')?.naturalWidth > 0", timeout=30_000)
        expect(download).to_have_attribute("download", args.pdf.name)
        if "/content" not in (download.get_attribute("href") or ""):
            problems.append(f"the PDF's download link is {download.get_attribute('href')!r}")
        expect(dialog.locator("#facts dt:text-is('Pages') + dd")).to_have_text("1")
        expect(dialog.locator("#facts dt:text-is('Dimensions') + dd")).to_have_text("595 × 842 pt")  # A4
        shot("10-pdf")

        # Copy link on a private media: a signed URL that serves it with no Authorization header;
        # the same URL without its token is refused (the PDF is private).
        link = copy_link("Private link copied: it works for a few minutes")
        pdf_id = pdf_card.get_attribute("data-id")
        if not link.startswith(f"{args.url}/api/media/{pdf_id}/content?token="):
            problems.append(f"the private PDF's copied link is {link!r}")
        status, body = get(link)
        if (status, body) != (200, args.pdf.read_bytes()):
            problems.append(f"the private signed link without a bearer token: {status}, {len(body)} bytes")
        status, _ = get(link.split("?")[0])
        if status not in (401, 404):  # 404: private media are not even shown to exist
            problems.append(f"the private PDF's content URL without its token answers {status}")
        shot("10a-private-link-copied")
        dialog.get_by_role("button", name="Close").click()

        # Rename the image in the detail view: its card follows, and a reload keeps the name.
        renamed_card = page.locator(f'#grid > li[data-id="{image_id}"]')
        renamed_card.get_by_role("button").click()
        dialog.get_by_label("Name").fill("Test card (renamed).jpg")
        dialog.get_by_role("button", name="Save").click()
        expect(dialog.locator("#detail-title")).to_have_text("Test card (renamed).jpg", timeout=15_000)
        dialog.get_by_role("button", name="Close").click()
        expect(renamed_card.locator(".name")).to_have_text("Test card (renamed).jpg")
        shot("11-renamed")
        page.reload()
        expect(renamed_card.locator(".name")).to_have_text("Test card (renamed).jpg", timeout=15_000)
        expect(renamed_card.get_by_role("button")).to_have_attribute("aria-label", "Open Test card (renamed).jpg (image, ready)")
        page.evaluate(STATUS_LOG_JS)

        # tus pause / resume / cancel. PATCHes are held at the browser (page.route): the first of
        # an upload goes through, the second waits, so the upload is mid-way when Pause is clicked.
        gate = {"hold": False, "let_through": 0}
        held = []
        patches: list[str] = []

        def route_uploads(route) -> None:
            if route.request.method == "PATCH" and gate["hold"]:
                if gate["let_through"] > 0:
                    gate["let_through"] -= 1
                    route.continue_()
                else:
                    held.append(route)
                return
            route.continue_()

        page.on("request", lambda r: patches.append(r.url) if r.method == "PATCH" else None)
        page.route("**/api/uploads/*", route_uploads)

        def fail_held() -> None:
            # Requests the page has aborted are gone already (failing them is then a no-op); one
            # it still waits for fails like a dropped connection, which tus-js-client retries at
            # once unless the upload is paused or cancelled.
            while held:
                try:
                    held.pop().abort("connectionreset")
                except Exception:
                    pass

        def upload_held_midway(path: Path) -> str:
            """Starts the tus upload of `path`, holds its second PATCH; returns the upload URL."""
            held.clear()
            gate.update(hold=True, let_through=1)
            page.set_input_files("#file-input", str(path))
            wait_until(lambda: len(held) == 1, 60, f"the second PATCH of {path.name}")
            url = held[0].request.url
            status, headers = tus_head(url)
            if (status, headers.get("upload-offset")) != (200, str(CHUNK)):
                raise AssertionError(f"{path.name} mid-way: HEAD {status} {headers}")
            return url

        row = page.locator("#uploads > li", has_text=big.name)
        url = upload_held_midway(big)
        shown = int(row.locator("progress").get_attribute("value"))
        if not CHUNK * 100 // big.stat().st_size <= shown < 100:
            problems.append(f"mid-way the progress bar shows {shown}%")
        row.get_by_role("button", name="Pause").click()
        expect(row.get_by_role("button", name="Resume")).to_be_visible()
        sent_before = len(patches)
        gate["hold"] = False
        fail_held()
        # Paused: for a while no PATCH leaves the page and the server's offset does not move.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            status, headers = tus_head(url)
            if (status, headers.get("upload-offset")) != (200, str(CHUNK)):
                raise AssertionError(f"the paused upload moved: HEAD {status} offset {headers.get('upload-offset')}")
            page.wait_for_timeout(250)
        if len(patches) != sent_before:
            raise AssertionError(f"{len(patches) - sent_before} PATCH(es) sent while paused")
        shot("12-upload-paused")
        row.get_by_role("button", name="Resume").click()
        big_card = page.locator("#grid > li", has_text=big.name)
        expect(big_card).to_have_attribute("data-status", "READY", timeout=READY_TIMEOUT_MS)
        require_processing_then_ready(big_card, big.name)
        status, headers = tus_head(url)
        if status != 200 or headers.get("media-id") != big_card.get_attribute("data-id"):
            problems.append(f"the resumed upload's HEAD: {status} {headers}")
        if headers.get("upload-offset") != str(big.stat().st_size):
            problems.append(f"the resumed upload ended at {headers.get('upload-offset')} of {big.stat().st_size}")
        expect(row).to_have_count(0, timeout=15_000)
        shot("13-resumed-ready")

        # Cancel: tus termination removes the upload at the server; no card appears.
        url = upload_held_midway(doomed)
        doomed_row = page.locator("#uploads > li", has_text=doomed.name)
        doomed_row.get_by_role("button", name="Cancel").click()
        expect(doomed_row).to_have_count(0, timeout=15_000)  # after the DELETE has been answered
        gate["hold"] = False
        fail_held()
        status, _ = tus_head(url)
        if status != 404:
            problems.append(f"the cancelled upload's URL answers HEAD with {status}, not 404")
        shot("14-cancelled")
        page.unroute("**/api/uploads/*")

        # A reload keeps the session and shows what is left: the image, the song, the PDF, the WAV.
        page.reload()
        expect(cards).to_have_count(4, timeout=15_000)
        expect(page.locator("#grid > li", has_text=doomed.name)).to_have_count(0)
        page.evaluate(STATUS_LOG_JS)

        # Token refresh (the stack's access tokens live a few seconds, tests/e2e/web.rs): the token
        # the page signed up with is refused by now, yet the page still works on tokens it
        # refreshed, none of them refused: an upload by drag-and-drop after the expiry shows up
        # live (the event stream follows the new tokens) and turns READY.
        if not refreshes or set(refreshed) != {200}:
            problems.append(f"token refreshes: {len(refreshes)} requests, answers {refreshed}")
        if session_token() == first_token:
            problems.append("the page still holds its sign-up access token")
        deadline = time.monotonic() + 30
        while get(f"{args.url}/api/users/{user_id}/media?limit=1", first_token)[0] != 401:
            if time.monotonic() > deadline:
                raise AssertionError("the sign-up access token is still accepted after 30 s")
            page.wait_for_timeout(250)

        # Drag-and-drop: a PNG made in the page from bytes, dragged over the drop zone (which
        # accepts it: dragover's default is prevented, the zone is highlighted), then dropped.
        dropped = "dropped-gradient.png"
        png = tiny_png(160, 120)
        accepted = page.evaluate(
            """([name, b64]) => {
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              const data = new DataTransfer();
              data.items.add(new File([bytes], name, { type: "image/png" }));
              window.__drag = data;
              const zone = document.getElementById("drop");
              const event = (type) => new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data });
              zone.dispatchEvent(event("dragenter"));
              return !zone.dispatchEvent(event("dragover")) && zone.classList.contains("over");
            }""",
            [dropped, base64.b64encode(png).decode()],
        )
        if not accepted:
            problems.append("the drop zone did not accept the drag (dragover not prevented, or no highlight)")
        shot("14a-dragging")
        page.evaluate(
            """() => document.getElementById("drop").dispatchEvent(
              new DragEvent("drop", { bubbles: true, cancelable: true, dataTransfer: window.__drag }))"""
        )
        expect(page.locator("#drop.over")).to_have_count(0)
        dropped_card = page.locator("#grid > li", has_text=dropped)
        expect(dropped_card).to_have_count(1, timeout=30_000)
        expect(dropped_card).to_have_attribute("data-status", "READY", timeout=READY_TIMEOUT_MS)
        require_processing_then_ready(dropped_card, dropped)
        expect(dropped_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        expect(cards).to_have_count(5)
        dropped_id = dropped_card.get_attribute("data-id")
        status, body = get(f"{args.url}/api/media/{dropped_id}/content", own_token())
        if (status, body) != (200, png):
            problems.append(f"the dropped PNG at the server: {status}, {len(body)} bytes of {len(png)}")
        if page.locator("#auth").is_visible():
            problems.append("the page signed out")
        page.wait_for_function(FADED_IN_JS)
        shot("14b-dropped-after-refresh")

        # A phone-sized viewport: sign in, the library, no horizontal scrolling.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        mobile = phone.new_page()
        watch(mobile, "phone")
        count_refreshes(mobile, phone_refreshes, phone_refreshed)
        mobile.goto(args.url)
        expect(mobile.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(mobile.get_by_role("button", name="Sign out")).to_be_hidden()
        mobile.locator("#auth").get_by_label("Email").fill(email)
        mobile.locator("#auth").get_by_label("Password").fill(password)
        mobile.locator("#auth").get_by_role("button", name="Sign in").click()
        expect(mobile.locator("#grid > li")).to_have_count(5, timeout=15_000)
        expect(mobile.locator("#grid img.loaded")).to_have_count(3, timeout=30_000)  # image, PDF, PNG
        mobile.wait_for_function(FADED_IN_JS)
        overflow = mobile.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append(f"the library scrolls sideways on a phone by {overflow}px")
        mobile.screenshot(path=str(args.shots / "15-phone.png"), full_page=True)
        phone.close()

        browser.close()

    # The auth service answered the refreshes the pages were seen to send, all with success, and
    # no others: none was sent unseen, e.g. by a page being reloaded (it would spend the refresh
    # token that the next page then presents again, and reuse revokes the session). One sent as
    # the browser closed may not have arrived: the answers the pages saw are the lower bound.
    with urllib.request.urlopen(args.auth_metrics, timeout=10) as reply:
        metrics = reply.read().decode()
    served = {}
    for line in metrics.splitlines():
        if line.startswith("mediabus_requests_total{") and 'subject="auth.refresh"' in line:
            code = line.split('code="')[1].split('"')[0]
            served[code] = served.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
    seen = len(refreshes) + len(phone_refreshes)
    answered = len(refreshed) + len(phone_refreshed)
    if set(served) - {"200"} or not answered <= served.get("200", 0) <= seen:
        problems.append(f"the auth service answered refreshes {served}; the pages sent {seen}, saw {answered} answers")

    for wav in (big, doomed):
        wav.unlink()
    if not problems:
        print(f"web app OK ({seen} token refreshes); screenshots in {args.shots}")


if __name__ == "__main__":
    sys.exit(main())
