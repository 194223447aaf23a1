"""The HTML report: links, numbers and escaping from the file, then a real browser loads it.

The browser test drives Debian's Chromium through Selenium and Debian's chromedriver (the flags
are DESIGN.md section 6's: without the background-networking ones it stalls on a closed network).
It installs both with apt when they are missing and the test runs as root, as in CI.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from fade.eval.report import ConceptGrid, write_report

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SEEDS = 4

METRICS = {
    "H": 87.1,
    "H_o": 85.4,
    "acc": {
        "target": {"before": 97.0, "after": 1.5},
        "synonyms": {"before": 95.0, "after": 3.0},
        "retained": {"before": 96.0, "after": 94.5},
    },
    "fidelity": {"metric": "FD_toy", "before": 4.1, "after": 4.3},
    "alignment": {"metric": "adherence", "before": 91.0, "after": 90.2},
    "per_concept": {
        "circle": {
            "target": {"before": 98.5, "after": 2.5},
            "synonyms": {"before": 93.5, "after": 4.5},
        },
        "a<b & 'c'": {"target": {"before": 96.5, "after": 0.5}},
    },
    "surrogate": {"concept": "square", "before": 5.0, "after": 80.0},
    "samples": {"target": 32, "synonyms": 31, "retained": 48, "neutral": 128},
    "detector": "toy-detector-v1",
}
MANIFEST = {
    "concepts": ["circle", "a<b & 'c'"],
    "config_hash": "cfg-3f2a9c",
    "model": {"id": "toy/tiny-flux", "revision": "r7"},
    "wall_seconds": 412.0,
}


def _images(generator: torch.Generator, hue: float) -> torch.Tensor:
    """Seeded 32x32 images: a coloured disc on noise, so a screenshot has real content."""
    noise = torch.rand(SEEDS, 3, 32, 32, generator=generator) * 0.4
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2) < 90).float()
    colour = torch.tensor([hue, 1 - hue, 0.5]).view(1, 3, 1, 1)
    return (noise + disc * colour).clamp(0, 1)


def synthetic_grids() -> list[ConceptGrid]:
    generator = torch.Generator().manual_seed(0)
    grids = []
    for concept in ("circle", "a<b & 'c'"):
        rows = [
            (f"{kind}: a red {concept}", _images(generator, 0.9), _images(generator, 0.2))
            for kind in ("target", "synonym", "retained", "neutral")
        ]
        grids.append(ConceptGrid(concept, rows))
    grids[1].rows[0] = ("target: <script>alert(1)</script>", *grids[1].rows[0][1:])
    return grids


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.alts: list[str | None] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if values.get(key):
                self.links.append(values[key])
        if tag == "img":
            self.alts.append(values.get("alt"))


@pytest.fixture
def report(tmp_path: Path) -> Path:
    return write_report(tmp_path / "run", METRICS, synthetic_grids(), MANIFEST)


def _values(tree: object):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _values(value)
    elif isinstance(tree, int | float | str):
        yield tree


def test_links_are_relative_and_exist(report: Path) -> None:
    parser = _Links()
    parser.feed(report.read_text(encoding="utf-8"))
    images = [link for link in parser.links if link.endswith(".png")]
    assert len(images) == 2 * 4 * 2  # concepts x prompt rows x (before, after)
    assert "script" not in parser.tags and "link" not in parser.tags  # self-contained
    for link in parser.links:
        url = urlparse(link)
        assert not url.scheme and not url.netloc and not link.startswith("/"), link
        target = (report.parent / unquote(url.path)).resolve()
        assert target.is_file() and report.parent.resolve() in target.parents, link
    assert all(alt and "erasure" in alt for alt in parser.alts)
    # Nearest-neighbour upscaled: 32 px images become 96 px cells, still pixel-exact.
    strip = np.asarray(Image.open(report.parent / images[0]))
    assert strip.shape[0] == 96 and strip.shape[1] == SEEDS * 98 - 2
    first = synthetic_grids()[0].rows[0][1][0]
    expected = first.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(strip[::3, :96:3], expected)


def test_every_metric_value_and_context_appears(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    for value in _values({k: v for k, v in METRICS.items() if k != "per_concept"}):
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        assert shown in text, value
    for entry in METRICS["per_concept"].values():
        for pair in entry.values():
            assert f"{pair['before']:.1f}" in text and f"{pair['after']:.1f}" in text
    assert "-95.5" in text and "+75.0" in text  # changes: target Acc, surrogate
    assert ">176<" in text  # adherence samples: retained + neutral
    for fact in ("cfg-3f2a9c", "toy/tiny-flux @ r7", "412 s", "toy classifier features"):
        assert fact in text


def test_text_is_escaped(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "a&lt;b &amp; &#x27;c&#x27;" in text
    assert "a<b" not in text and "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_partial_metrics_and_rerun(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_report(run, METRICS, synthetic_grids())
    page = write_report(run, {"acc": {"target": {"before": 50.0, "after": 0.25}}}, [])
    text = page.read_text(encoding="utf-8")
    assert "50.0" in text and "0.25" in text and "Fidelity" not in text
    assert not list((run / "report").glob("*.png"))  # the earlier run's images are gone


# --- the browser -----------------------------------------------------------------------------


def _ensure_chromium() -> None:
    """Install Debian's chromium + chromedriver when missing and we may (root with apt)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium/chromedriver not installed and not root with apt-get to install")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
        check=True,
        env=env,
        capture_output=True,
    )


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(PID, start time) of every process below `pid`: chromedriver's browser and its helpers.

    The start time lets clean-up tell our process from a later one that reused its PID.
    """
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def _kill_leftovers(processes: set[tuple[int, str]]) -> None:
    """SIGKILL those of `processes` still alive with the same start time (ours, not a reuse)."""
    for pid, started in processes:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    _ensure_chromium()
    from selenium import webdriver  # a dev dependency: missing it is an error, not a skip
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        yield driver
    finally:
        ours: set[tuple[int, str]] = set()
        if service.process is not None:
            ours = _descendants(service.process.pid)
        if driver is not None:
            driver.quit()
        else:
            service.stop()
        time.sleep(0.5)
        _kill_leftovers(ours)


def _load(driver, page: Path) -> list[dict]:
    """Open the page and wait until every <img> finished loading (or failing)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete)"
        )
    )
    return driver.execute_script(
        "return Array.from(document.images).map(i => "
        "({src: i.getAttribute('src'), width: i.naturalWidth, height: i.naturalHeight}))"
    )


def screenshot(driver, path: Path | None = None) -> Image.Image:
    """The whole page as one image, beyond the window's height (Chrome DevTools protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    if path is not None:
        image.save(path)
    return image


def test_browser_loads_every_image_and_renders(browser, report: Path) -> None:
    images = _load(browser, report)
    assert len(images) == 16
    assert all(i["width"] > 0 and i["height"] > 0 for i in images), images
    title = browser.title
    assert title.startswith("FADE erasure report") and "a<b & 'c'" in title
    shot = np.asarray(screenshot(browser))
    assert shot.std() > 10  # not a blank page
    packed = shot.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    assert len(np.unique(packed)) > 500  # text, tables and the images, not a flat page


def test_browser_check_catches_a_missing_image(browser, report: Path) -> None:
    broken = report.parent / "report" / sorted(os.listdir(report.parent / "report"))[0]
    broken.unlink()
    images = _load(browser, report)
    failed = [i["src"] for i in images if i["width"] == 0]
    assert failed == [f"report/{broken.name}"]
