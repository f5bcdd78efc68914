"""The web app at / in a real browser: Debian's Chromium driven by Playwright (PyPI), never a
browser that Playwright downloads.

Run by tests/e2e/web.rs against a live stack (bridge, media service, processor, auth service):

    library.py --url http://127.0.0.1:PORT --shots DIR --image photo.jpg --video clip.mp4 [--readme docs/library.png]

Steps, each with a screenshot in DIR: register; upload a JPEG and an MP4 through the file input;
both appear without a reload and turn READY (live, over /api/events); open the image (preview
loaded: naturalWidth > 0); play the video (HLS through hls.js: currentTime advances); make one
public; delete one; open a card from the keyboard; a phone-sized viewport without horizontal
scrolling. Any console error or page error fails the run. Exit 0 on success, 1 with the reason.
"""

import argparse
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"]
READY_TIMEOUT_MS = 180_000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--shots", required=True, type=Path)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--readme", type=Path, help="also save the library screenshot here (README)")
    args = ap.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        shot = lambda name: page.screenshot(path=str(args.shots / f"{name}.png"), full_page=True)

        page.goto(args.url)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("01-sign-in")
        auth = page.locator("#auth")
        auth.get_by_role("button", name="Create an account").click()
        auth.get_by_label("Name").fill("Grace Hopper")
        email, password = f"grace-{int(time.time() * 1000)}@example.com", "correct horse battery"
        auth.get_by_label("Email").fill(email)
        auth.get_by_label("Password").fill(password)
        auth.get_by_role("button", name="Create account").click()
        expect(page.locator("#library")).to_be_visible()
        expect(page.locator("#empty")).to_be_visible()
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
        expect(image_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        expect(video_card.locator("img.loaded")).to_have_count(1, timeout=30_000)
        page.wait_for_function(  # the thumbnails' fade-in has finished (for the picture)
            "() => [...document.querySelectorAll('#grid img.loaded')].every(i => getComputedStyle(i).opacity === '1')"
        )
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
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_be_hidden()

        # The video plays from HLS.
        video_card.get_by_role("button").click()
        expect(dialog).to_be_visible()
        page.wait_for_function("() => !!document.querySelector('#player')", timeout=15_000)
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

        # A reload keeps the session and shows what is left.
        page.reload()
        expect(cards).to_have_count(1, timeout=15_000)

        # A phone-sized viewport: sign in, the library, no horizontal scrolling.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        mobile = phone.new_page()
        mobile.on("pageerror", lambda e: problems.append(f"page error (phone): {e}"))
        mobile.goto(args.url)
        expect(mobile.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(mobile.get_by_role("button", name="Sign out")).to_be_hidden()
        mobile.locator("#auth").get_by_label("Email").fill(email)
        mobile.locator("#auth").get_by_label("Password").fill(password)
        mobile.locator("#auth").get_by_role("button", name="Sign in").click()
        expect(mobile.locator("#grid > li")).to_have_count(1, timeout=15_000)
        overflow = mobile.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append(f"the library scrolls sideways on a phone by {overflow}px")
        mobile.screenshot(path=str(args.shots / "09-phone.png"), full_page=True)
        phone.close()

        browser.close()

    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"web app OK; screenshots in {args.shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
