"""Screenshots of an ETL report with headless Chromium, and a check that it reads at that width.

    .venv/bin/python scripts/screenshot_report.py demo_out/etl/report/report.html docs/etl/ --width 1400

Writes ``report-top.png`` (the first screen) and ``report-full.png`` (the whole page) into the
folder, and exits 1 when the page is wider than the window (horizontal overflow). Needs Chromium
(Debian: ``apt-get install -y chromium``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

MEASURE = ("<script>document.title = JSON.stringify({scroll: document.documentElement.scrollWidth, "
           "client: document.documentElement.clientWidth, height: document.documentElement.scrollHeight});</script>")
MAX_HEIGHT = 16000  # Chromium's largest screenshot


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("error: no chromium on PATH (Debian: apt-get install -y chromium)")


def run(binary: str, width: int, height: int, *args: str) -> str:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={width},{height}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout


def measure(binary: str, page: Path, width: int) -> dict:
    """The page's scroll width, window width and height, as Chromium lays it out."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        dom = run(binary, width, 1000, "--dump-dom", probe.as_uri())
    found = re.search(r"<title>(.*?)</title>", dom, re.S)
    return json.loads(found.group(1).replace("&quot;", '"'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to photograph")
    parser.add_argument("folder", type=Path, help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1400, help="window width in CSS pixels (default 1400)")
    parser.add_argument("--top-height", type=int, default=1100, help="height of the first-screen shot (default 1100)")
    args = parser.parse_args(argv)
    binary = chromium()
    page = args.report.resolve()
    size = measure(binary, page, args.width)
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, height in (("report-top.png", args.top_height), ("report-full.png", min(size["height"], MAX_HEIGHT))):
        shot = args.folder.resolve() / name
        run(binary, args.width, height, f"--screenshot={shot}", page.as_uri())
        Image.open(shot).convert("RGB").quantize(256).save(shot, optimize=True)  # a third of the bytes, same look
    print(f"{page}: {size['scroll']} px wide in a {size['client']} px window, {size['height']} px tall")
    if size["scroll"] > size["client"]:
        print(f"error: horizontal overflow ({size['scroll']} > {size['client']} px)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
