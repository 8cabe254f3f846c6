"""Pages as a person sees them: Debian's headless Chromium takes the screenshot, kept as a test artifact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    """Where screenshots are kept: ARTIFACTS_DIR, else .artifacts/ in the repository (ignored by git)."""
    path = Path(os.environ.get("ARTIFACTS_DIR") or REPO / ".artifacts") / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium() -> str:
    """The browser binary; a missing one fails the test (CI installs it), never skips it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Chromium is not installed: `apt-get install chromium fonts-noto-cjk` (.ci/run does it)")


def screenshot(url: str, name: str, width: int = 1240, height: int = 1754, timeout_s: float = 90) -> Path:
    """A full-window PNG of the page at `url` (http:// or file://), saved under artifacts_dir()/name."""
    out = artifacts_dir() / name
    out.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=3000",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
    assert out.exists(), f"Chromium made no screenshot of {url}"
    return out


def print_to_pdf(url: str, name: str, timeout_s: float = 90) -> Path:
    out = artifacts_dir() / name
    out.unlink(missing_ok=True)
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", f"--print-to-pdf={out}", url],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
    assert out.exists(), f"Chromium printed no PDF of {url}"
    return out


def distinct_colours(png: Path) -> int:
    """How many colours the picture has: a blank or failed page has one or two, a page with text and charts
    hundreds (anti-aliased glyphs alone give many)."""
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours or [])


def colour_share(png: Path, rgb: tuple[int, int, int], tolerance: int = 8) -> float:
    """The share of the picture's pixels near one colour (a chart's bars, for instance)."""
    with Image.open(png) as image:
        rgb_image = image.convert("RGB")
        pixels = [rgb_image.getpixel((x, y)) for y in range(0, rgb_image.height, 2) for x in range(0, rgb_image.width, 2)]
    near = sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True)))  # type: ignore[arg-type]
    return near / len(pixels)
