"""The demo page in a real headless browser (Debian's chromium, driven by Playwright): type a
sentence, press the button, wait for the gallery, read what it shows.

Used by ``tests/drawing/test_demo.py``, by ``make demo-shot`` (``python -m gancls.drawing.demo_browser``: a screenshot
of the page with the workspace's model, ``reports/demo.png``, or with experiments side by side: ``--exp A
--exp B``) and by ``benchmarks/demo_latency.py``.
Every request that leaves loopback is refused and recorded, so a check also shows that the page
sends nothing out (fonts, analytics).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

CHROMIUM = "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

# Which of the page's states holds: an error line the page drew after the click (press marks the status
# line it found before, so a stale error, shown while Gradio's request is pending, never counts), or a
# gallery of n loaded images other than before.
_SETTLED = """([status, gallery, n, before]) => {
  const err = document.querySelector(`${status} .gancls-status.error`);
  if (err && !err.hasAttribute("data-gancls-stale")) return "error";
  const imgs = [...document.querySelectorAll(`${gallery} img`)];
  const srcs = imgs.map((i) => i.src).join(" ");
  if (imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0) && srcs !== before.srcs)
    return "gallery";
  return false;
}"""


@contextlib.contextmanager
def open_page(url: str, executable: str = CHROMIUM, timeout_s: float = 60):
    """A headless chromium tab on ``url``; ``page.gancls`` records outside requests and page errors."""
    from playwright.sync_api import sync_playwright

    if not Path(executable).is_file():
        raise FileNotFoundError(f"{executable}: no chromium there (Debian: apt-get install -y chromium)")
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(timeout_s * 1000)
            page.gancls = {"outside": [], "errors": []}

            def route(r):
                if urlparse(r.request.url).hostname in LOOPBACK or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    page.gancls["outside"].append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda exc: page.gancls["errors"].append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: page.gancls["errors"].append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.goto(url)
            page.wait_for_selector("#draw")
            yield page
        finally:
            browser.close()


def press(page, button: str, status: str, gallery: str, n: int) -> dict:
    """Click ``button`` and wait until the gallery shows ``n`` new images or the status an error."""
    before = page.evaluate(
        """([status, gallery]) => {
             document.querySelectorAll(`${status} .gancls-status`).forEach((e) => e.setAttribute("data-gancls-stale", ""));
             return {srcs: [...document.querySelectorAll(`${gallery} img`)].map((i) => i.src).join(" ")};
           }""",
        [status, gallery],
    )
    t0 = time.perf_counter()
    page.click(button)
    handle = page.wait_for_function(_SETTLED, arg=[status, gallery, n, before], polling="raf")
    seconds = time.perf_counter() - t0
    return {"state": handle.json_value(), "seconds": seconds, **read_gallery(page, status, gallery)}


def read_gallery(page, status: str = "#status", gallery: str = "#gallery") -> dict:
    """The gallery's images (decoded from what the page loaded), their captions, the status line, and
    the error toasts Gradio shows."""
    from PIL import Image

    srcs = page.eval_on_selector_all(f"{gallery} img", "imgs => imgs.map((i) => i.src)")
    images = [np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")) for src in srcs]
    captions = page.eval_on_selector_all(
        f"{gallery} .caption-label, {gallery} figcaption", "els => els.map((e) => e.textContent.trim())"
    )
    toasts = page.eval_on_selector_all(
        "[data-testid='toast-body'], .toast-body", "els => els.map((e) => e.textContent.trim())"
    )
    return {
        "images": images,
        "captions": captions,
        "status": page.inner_text(status).strip(),
        "toasts": toasts,
    }


def draw(page, text: str, n: int | None = None, seed: int | None = None) -> dict:
    """Type ``text`` (and the number of images, the seed) into the first tab and press Draw."""
    page.fill("#sentence textarea", text)
    if n is not None:
        page.fill("#n-images input[type=number]", str(n))
        page.press("#n-images input[type=number]", "Enter")
    if seed is not None:
        page.fill("#seed input", str(seed))
        page.press("#seed input", "Tab")
    if n is None:
        n = int(page.input_value("#n-images input[type=number]"))
    got = press(page, "#draw", "#status", "#gallery", n)
    # The other models' galleries (gancls demo --exp A --exp B): filled by the same answer as the first.
    got["others"] = [read_gallery(page, "#status", f"#gallery-{i}") for i in range(1, models(page))]
    return got


def models(page) -> int:
    """How many models the page shows side by side (one #model-info element each)."""
    return page.eval_on_selector_all("[id^='model-info']", "els => els.length")


def main(argv: list[str] | None = None) -> int:
    """``make demo-shot``: the page with the workspace's model (or the --exp experiments' side by side),
    one sentence drawn, a screenshot."""
    import tempfile

    from .. import __version__  # noqa: F401  (telemetry variables)
    from ..config import load_params
    from .demo import experiment_model, start, workspace_model

    ap = argparse.ArgumentParser(prog="python -m gancls.drawing.demo_browser", description=main.__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/demo.png")
    ap.add_argument("--text", help="sentence to draw (default the first of demo.examples)")
    ap.add_argument("--exp", action="append", default=[], help="an experiment to show (repeat: side by side)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    with tempfile.TemporaryDirectory(prefix="gancls-demo-shot-") as tmp:
        if args.exp:
            shown = [experiment_model(e, params, Path(tmp) / str(i)) for i, e in enumerate(args.exp)]
        else:
            shown = [workspace_model(params, args.params)]
        page_app, url = start([m.load(params.demo.device) for m in shown], params.demo, port=0)
        try:
            with open_page(url) as page:
                got = draw(page, args.text or params.demo.examples[0], params.demo.n_images)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
        finally:
            page_app.close()
    print(
        f"{args.out}: {url}, {len(shown)} model(s), {len(got['images'])} images each in {got['seconds']:.2f} s "
        f"({got['state']}: {got['status']}); requests leaving loopback: {len(page.gancls['outside'])}"
    )
    return 0 if got["state"] == "gallery" and all(len(o["images"]) == len(got["images"]) for o in got["others"]) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
