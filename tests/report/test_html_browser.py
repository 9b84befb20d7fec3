"""The report in a real browser: headless Chromium (Debian's `chromium`, installed by
`.ci/run`) opens it from disk, with no server, and shows the labels, plots and sparklines.

Skipped only when no Chromium is installed and ``TOKENLABEL_REQUIRE_BROWSER`` is unset; CI sets
it, so there a missing browser is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from saelens_tokenlabel import LabelSet
from saelens_tokenlabel.report import write_report
from saelens_tokenlabel.report.series import visible

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EVIL = "<script>document.title='pwned'</script>&"


@pytest.fixture(scope="module")
def browser() -> str:
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        if os.environ.get("TOKENLABEL_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail("TOKENLABEL_REQUIRE_BROWSER is set but no Chromium is installed "
                        f"(looked for {', '.join(BROWSERS)}): apt-get install -y chromium")
        pytest.skip("no headless Chromium (apt-get install -y chromium); set "
                    "TOKENLABEL_REQUIRE_BROWSER=1 to make this a failure")
    return found


def headless(browser: str, profile: Path, url: Path, *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
           url.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Dom(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(toy_run_labels, tmp_path_factory) -> Path:
    import copy

    labels = copy.deepcopy(toy_run_labels)
    # A label that would run script if it were not escaped.
    evil = copy.deepcopy(labels[0])
    evil.feature, evil.label, evil.label_tokens = 7, EVIL, [EVIL]
    out = tmp_path_factory.mktemp("browser") / "report"
    write_report(LabelSet([*labels.values(), evil], labels.info), out)
    return out


def test_index_shows_every_label(browser, report, toy_run_labels, tmp_path):
    dom_html = headless(browser, tmp_path / "profile", report / "index.html", "--dump-dom")
    dom = Dom(dom_html)
    rows = {a["id"] for t, a in dom.tags if t == "tr" and a.get("id")}
    assert rows == {f"f-{f}" for f in [*toy_run_labels, 7]}
    text = "".join(dom.text)
    labels = [r.label for r in toy_run_labels.values() if r.status == "ok"]
    assert "animal" in labels and "number" in labels
    for label in labels:
        assert f'<code class="tok">{label}</code>' in dom_html
    # Escaped, so the browser shows it as text and never ran it.
    assert EVIL in text and "pwned" not in dom_html.split("<body")[0]
    assert [t for t, _ in dom.tags].count("script") == 1
    assert sum(1 for t, a in dom.tags if t == "svg" and a.get("class") == "spark") == 4


def test_feature_page_shows_plot_contexts_and_output_tokens(browser, report, toy_run_labels,
                                                            tmp_path):
    dom_html = headless(browser, tmp_path / "profile", report / "features" / "0.html",
                        "--dump-dom")
    dom = Dom(dom_html)
    text = "".join(dom.text)
    assert "Feature 0:" in text and "animal" in text
    assert [a["src"] for t, a in dom.tags if t == "img"] == ["../plots/0.png"]
    words = {e.word for e in toy_run_labels[0].extra.examples if e.activation > 0}
    marked = [a for t, a in dom.tags if t == "mark" and a.get("class") == "act"]
    assert len(marked) >= min(len(words), 5)
    # As the page shows it: a control character spelled out (`visible`).
    promoted = visible(toy_run_labels[0].extra.output_side.promoted[0].token)
    assert "promoted" in text and promoted.strip() in text


def pixels(path: Path):
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return img.size, np.asarray(img).reshape(-1, 3).astype(int)


def n_red(px) -> int:  # the winning token's line, #d62728
    r, g, b = px.T
    return int(((r > 180) & (g < 90) & (b < 90)).sum())


def test_screenshots_are_rendered_pages(browser, report, tmp_path):
    pytest.importorskip("PIL", reason="reads the screenshot (installed with the plot extra)")
    shots = {}
    for name, page in (("index", report / "index.html"),
                       ("feature", report / "features" / "0.html")):
        shot = tmp_path / f"{name}.png"
        headless(browser, tmp_path / f"profile-{name}", page, f"--screenshot={shot}",
                 "--window-size=1400,1300")
        assert shot.is_file()
        (w, h), px = pixels(shot)
        assert (w, h) == (1400, 1300)
        assert len({tuple(p) for p in px[::7]}) > 50  # text, tables, plots: not blank
        shots[name] = n_red(px)
    # Red pixels: the sparklines on the index, the PNG's red line on the feature page (so
    # the plot image loaded from its relative path).
    assert shots["index"] > 30
    assert shots["feature"] > 300


def test_clicking_a_header_sorts_the_table(browser, report, toy_run_labels, tmp_path):
    # The page as shipped, plus two clicks on the "probability" header (descending).
    html = (report / "index.html").read_text(encoding="utf-8")
    table = html[html.index('id="feature-table"'):]
    col = re.findall(r"<th[^>]*>([^<]*)</th>", table).index("probability")
    click = (f'<script>const th = document.querySelectorAll("table.features th")[{col}];'
             "th.click(); th.click();</script></body>")
    page = report / "sorted.html"
    page.write_text(html.replace("</body>", click), encoding="utf-8")
    dom = headless(browser, tmp_path / "profile", page, "--dump-dom")
    order = [int(f) for f in re.findall(r'<tr id="f-(\d+)"', dom)]
    probs = {f: r.probability for f, r in toy_run_labels.items()}
    probs[7] = toy_run_labels[0].probability  # the copy with the escaped label
    assert sorted(order) == sorted(probs)
    assert [probs[f] for f in order] == sorted(probs.values(), reverse=True)
