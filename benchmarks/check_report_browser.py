"""Open a robustcompress HTML report in headless Chromium: fail on console errors and on images
that do not load, and save a full-page screenshot.

    python benchmarks/check_report_browser.py runs/study/report.html [--screenshot shot.png]

Uses the system browser (Debian: `apt-get install chromium`), no driver and no download: the
report is copied next to itself with a small probe script appended that, once the page has loaded,
records uncaught errors, console.error calls and every <img> that failed to decode into a <pre>
element; `chromium --headless --dump-dom` prints the DOM with that element, and the browser's own
console log (--enable-logging=stderr) is scanned too. A second run takes the screenshot, with the
window as tall as the page. Exit code 0 when the page is clean, 1 otherwise (the problems are
printed), 2 when no browser is found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (ev) {
    if (ev.target && ev.target.tagName) {
      errors.push("resource failed: " + String(ev.target.src || ev.target.href).slice(0, 60));
    }
    else { errors.push("uncaught: " + ev.message); }
  }, true);
  var original = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.from(arguments).join(" "));
    original.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = Array.from(document.images), broken = [];
    images.forEach(function (img, i) {
      if (!img.complete || img.naturalWidth === 0) {
        broken.push(i + ": " + (img.alt || img.src.slice(0, 60)));
      }
    });
    var out = document.createElement("pre");
    out.id = "rc-browser-check";
    out.textContent = JSON.stringify({
      errors: errors, images: images.length, broken: broken,
      height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth
    });
    document.body.appendChild(out);
  });
})();
</script>
"""
CONSOLE = re.compile(r"CONSOLE\(\d+\)\]? ?\"?(.*)", re.IGNORECASE)


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def chromium(browser: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=timeout)


def check(report: Path, screenshot: Path, browser: str) -> list[str]:
    """Problems found (empty: the page is clean); writes the screenshot."""
    problems: list[str] = []
    html = report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp, "probed.html")
        # first thing in <head>, so it hears errors of everything after it
        head = re.search(r"<head[^>]*>", html)
        at = head.end() if head else 0
        probed.write_text(html[:at] + PROBE + html[at:], encoding="utf-8")
        done = chromium(browser, "--window-size=1280,800", "--dump-dom", probed.as_uri())
        match = re.search(r'<pre id="rc-browser-check">(.*?)</pre>', done.stdout, re.S)
        if not match:
            return [
                f"the page did not finish loading (chromium exit {done.returncode}): {done.stderr[-2000:]}"
            ]
        state = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        problems += state["errors"]
        problems += [f"image did not load: {b}" for b in state["broken"]]
        problems += [
            f"console: {m.group(1)}"
            for line in done.stderr.splitlines()
            if (m := CONSOLE.search(line)) and "rc-browser-check" not in line
        ]
        height = min(max(int(state["height"]) + 40, 600), 16000)
        shot = chromium(
            browser, f"--screenshot={screenshot}", f"--window-size=1280,{height}", report.resolve().as_uri()
        )
        if not screenshot.is_file():
            problems.append(f"no screenshot written (chromium exit {shot.returncode}): {shot.stderr[-1000:]}")
        print(f"{report}: {state['images']} image(s), page {state['width']}x{state['height']} px")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="PNG to write (default: beside the report)"
    )
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"no report at {args.report}", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(
            "no Chromium found: install Debian's chromium package (apt-get install chromium)", file=sys.stderr
        )
        return 2
    screenshot = args.screenshot or args.report.with_suffix(".png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HOME", tempfile.gettempdir())
    problems = check(args.report, screenshot, browser)
    for p in problems:
        print(f"FAIL {p}")
    print(f"screenshot: {screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
