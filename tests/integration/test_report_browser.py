"""The report page in a real headless browser (Chromium from Debian's packages; `.ci/run` installs it).

Skipped, with the reason printed in pytest's summary, where no Chromium is installed.
"""

import io
import json

import numpy as np
import pytest

from palrm.evaluation.report import build_report, render_html
from tests.browser import find_chromium, load_page
from tests.unit.evaluation.report_data import fit_three_group
from tests.unit.evaluation.test_report import SELECTION

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium, or set "
                                "PALRM_CHROMIUM=/path/to/chrome): the report's browser test cannot run")

IMAGES = "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"


def non_trivial(png: bytes) -> tuple[int, float]:
    """(number of distinct colours, fraction of pixels that are not the background colour)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return len(colours), 1 - counts.max() / len(pixels)


@pytest.mark.slow
def test_report_loads_without_errors_and_shows_the_plots(tmp_path):
    model, data = fit_three_group()
    (tmp_path / "run" / "model").mkdir(parents=True)
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(model, data, selection=SELECTION, selection_path="selection.json", n_boot=200)))
    result = load_page(CHROMIUM, page, expression=IMAGES)
    (tmp_path / "report.png").write_bytes(result.screenshot)
    print(f"screenshot: {tmp_path / 'report.png'}")
    assert result.errors == []
    assert all(url.startswith(("file:", "data:")) for url in result.requests), result.requests  # no network
    images = result.value
    assert len(images) == 4, images  # accuracy vs K, few-shot curve, per-user accuracy, simplex
    assert all(complete and width > 300 and height > 200 for _, complete, width, height in images), images
    colours, ink = non_trivial(result.screenshot)
    assert colours > 200 and ink > 0.05, (colours, ink)


def test_the_browser_check_catches_a_broken_page(tmp_path):
    """The checks above can fail: a console error, a script error and a missing image are all reported."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="missing.png"><script>console.error("boom"); undefinedFunction();</script></body></html>')
    result = load_page(CHROMIUM, page, expression=IMAGES)
    text = json.dumps(result.errors)
    assert "console.error: boom" in text and "undefinedFunction" in text and "missing.png" in text
    assert result.value[0][2] == 0  # the image did not load
    assert non_trivial(result.screenshot)[1] < 0.05  # a blank page is "trivial"
