from __future__ import annotations

import dataclasses
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from saelens_tokenlabel import LabelSet
from saelens_tokenlabel.records.extra import (
    ExampleRecord,
    FeatureExtra,
    OutputSide,
    token_logits,
)
from saelens_tokenlabel.report import ReportConfig, sparkline, write_report
from saelens_tokenlabel.report.html import highlight

from .trajectories import result

EVIL = "<script>alert(1)</script> & \"q\" 'x'\nnext"


class Page(HTMLParser):
    """Tags, attributes, ids and text of one HTML file."""

    def __init__(self, path: Path) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}

    @property
    def joined(self) -> str:
        return "".join(self.text)


def links(page: Page) -> list[str]:
    return [a[k] for _, a in page.tags for k in ("href", "src") if a.get(k)]


def test_report_of_a_real_run(toy_labels, tmp_path):
    index = write_report(toy_labels, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    page = Page(index)
    text = page.joined
    for f in toy_labels:
        r = toy_labels[f]
        assert f"f-{f}" in page.ids
        assert (tmp_path / "report" / "features" / f"{f}.html").is_file()
        if r.status == "ok":
            assert r.label in text
    assert "animal" in text and "dead" in text
    # Run info at the top: what was labeled and with what.
    for key in ("hook_name", "evaluator", "d_sae"):
        assert key in text and str(toy_labels.info[key]) in text
    # Scores: the held-out columns and the extra metrics the run has (coherence).
    heads = [a for a in re.findall(r"<th[^>]*>([^<]*)</th>", index.read_text())]
    assert "bal. acc. (held-out)" in heads and "AUROC (held-out)" in heads
    assert "coherence ratio" in heads and "steps total" not in heads
    row = re.search(r'<tr id="f-0".*?</tr>', index.read_text(), re.S).group()
    assert f'{toy_labels[0].metrics["heldout_balanced_accuracy"]:.3f}' in row
    assert f'{toy_labels[0].metrics["coherence_ratio"]:.3f}' in row
    # The verdict: a column of the index, counted in the summary, and on the feature page.
    assert "verdict" in heads
    v = toy_labels[0].verdict
    assert f'class="verdict {v.value}"' in row
    assert "verdicts " in text
    page0 = (tmp_path / "report" / "features" / "0.html").read_text()
    assert v.reason.replace("<", "&lt;").replace(">", "&gt;") in page0


def test_every_link_resolves_to_a_file_and_nothing_is_external(toy_labels, tmp_path):
    out = tmp_path / "report"
    write_report(toy_labels, out, ReportConfig(rows_per_page=3))  # two index pages
    files = sorted(out.rglob("*.html"))
    assert {p.name for p in files} >= {"index.html", "index-2.html", "0.html", "2.html"}
    pngs = 0
    for path in files:
        page = Page(path)
        for link in links(page):
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc, f"{path.name}: {link}"
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            assert target.is_file(), f"{path.name} links to missing {link}"
            if parts.fragment:
                assert parts.fragment in Page(target).ids, f"{path.name}: {link}"
            pngs += target.suffix == ".png"
        assert "http://" not in path.read_text().replace('xmlns="http://www.w3.org/2000/svg"',
                                                         "")
    plotted = [f for f in toy_labels if toy_labels[f].trajectory.top_ids]
    assert pngs >= len(plotted) == 3
    for f in plotted:
        assert (out / "plots" / f"{f}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "plots" / "2.png").exists()  # the dead feature has nothing to plot
    # Feature 3 is on the second index page; its back link says so.
    assert 'href="../index-2.html#f-3"' in (out / "features" / "3.html").read_text()


def test_sparklines_follow_the_winning_token(toy_labels, tmp_path):
    write_report(toy_labels, tmp_path)
    html = (tmp_path / "index.html").read_text()
    for f in toy_labels:
        r = toy_labels[f]
        row = re.search(rf'<tr id="f-{f}".*?</tr>', html, re.S).group()
        spark = re.findall(r'<svg class="spark".*?</svg>', row, re.S)
        if not r.trajectory.top_ids:
            assert spark == []
            continue
        (svg,) = spark
        pts = [tuple(map(float, p.split(","))) for p in
               re.search(r'points="([^"]+)"', svg).group(1).split()]
        assert len(pts) == len(r.trajectory)
        height = float(re.search(r'height="(\d+)"', svg).group(1))
        probs = r.trajectory.token_probability(r.label_token_ids[0])
        for (_, y), p in zip(pts, probs, strict=True):
            assert y == pytest.approx(1 + (height - 2) * (1 - p), abs=0.06)


def test_sparkline_subsamples_long_runs():
    r = result(0, [["a", "b", "c"]], n_steps=1000)
    svg = sparkline(r)
    pts = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(pts) == 120
    assert pts[0].startswith("1.0,") and pts[-1].startswith("119.0,")
    two = sparkline(result(0, [["a", "b"], ["c", "d"]]))
    assert two.count("<polyline") == 2


def test_text_is_escaped_everywhere(toy_labels, tmp_path):
    r = toy_labels[0]
    win = r.label_token_ids[0]
    r.trajectory.tokens[win] = EVIL
    extra = dataclasses.replace(
        r.extra,
        examples=(ExampleRecord(text="a <img src=x onerror=alert(2)> & b\n<b>c</b>",
                                word="<img", activation=2.0, kind="top"),
                  ExampleRecord(text="&amp; \ud800 \x07", word="&amp;", activation=1.0,
                                kind="top")),
        output_side=OutputSide(promoted=token_logits([("</td><td>", 1.5), ("\ud800", 0.5)]),
                               suppressed=token_logits([("<!--", -1.0)])),
        message="</table>")
    r = dataclasses.replace(r, label=EVIL, label_tokens=[EVIL], extra=extra)
    labels = LabelSet([r] + [toy_labels[f] for f in toy_labels if f != 0],
                      {**toy_labels.info, "corpus": "<i>c</i>"})
    write_report(labels, tmp_path)
    for path in (tmp_path / "index.html", tmp_path / "features" / "0.html"):
        page = Page(path)
        assert [t for t, _ in page.tags if t == "script"] == (
            ["script"] if path.name == "index.html" else [])  # only the table sorter
        assert not [a for a in page.all("img") if a.get("src") == "x"]
        assert not {"b", "i"} & {t for t, _ in page.tags}
        text = page.joined
        assert "<script>alert(1)</script> & \"q\" 'x'\\nnext" in text  # newline spelled out
        if path.name == "0.html":
            assert "a <img src=x onerror=alert(2)> & b\n<b>c</b>" in text
            assert "&amp; \\ud800 \\x07" in text
            assert "</td><td>" in text and "<!--" in text and "</table>" in text
            marks = re.findall(r"<mark[^>]*>(.*?)</mark>", path.read_text())
            assert marks == ["&lt;img", "&amp;amp;"]
        else:
            assert "<i>c</i>" in text


def test_missing_optional_fields(toy_labels, tmp_path):
    bare = result(5, [["animal", "Anim", "rabbit"]], metrics={})
    assert not bare.extra
    bare.threshold = None
    no_info = LabelSet([toy_labels[2], bare])  # a dead feature and a result with no extras
    write_report(no_info, tmp_path)
    index = Page(tmp_path / "index.html").joined
    assert "No run information" in index and "animal" in index
    page = Page(tmp_path / "features" / "5.html").joined
    assert "No examples were kept" in page and "Output tokens" not in page
    assert "No scores." in page
    dead = Page(tmp_path / "features" / "2.html").joined
    assert "No trajectory" in dead and "never fires" in dead
    assert "promoted" in dead  # a dead feature still has a decoder direction


def test_extra_entries_that_could_not_be_read_are_noted(tmp_path):
    odd = FeatureExtra.from_dict({"examples": "lost", "output_side": [1, 2]})
    r = result(6, [["animal", "Anim"]], extra=odd)
    write_report(LabelSet([r]), tmp_path, ReportConfig(plots=False))
    page = Page(tmp_path / "features" / "6.html").joined
    assert "extra['examples'] could not be read (a str: lost)" in page
    assert "extra['output_side'] could not be read (a list: [1, 2])" in page


def test_without_matplotlib_the_report_draws_svg_and_says_how_to_get_pngs(toy_labels,
                                                                           tmp_path,
                                                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    write_report(toy_labels, tmp_path)
    assert not (tmp_path / "plots").exists()
    html = (tmp_path / "features" / "0.html").read_text()
    assert 'pip install "saelens-tokenlabel[plot]"' in Page(tmp_path / "index.html").joined
    assert html.count('<polyline class="winner"') == 1
    assert html.count('<polyline class="other"') == 9
    assert 'stroke="#d62728"' in html and "animal" in html


def test_plots_off_and_a_subset_of_features(toy_labels, tmp_path):
    write_report(toy_labels, tmp_path, ReportConfig(plots=False), features=[0, 1])
    assert not (tmp_path / "plots").exists()
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["0.html", "1.html"]
    assert "turned off" in (tmp_path / "features" / "0.html").read_text()
    with pytest.raises(ValueError, match=r"Features \[9\] are not in these labels"):
        write_report(toy_labels, tmp_path, features=[0, 9])
    with pytest.raises(ValueError, match="rows_per_page"):
        ReportConfig(rows_per_page=0)


def test_highlight_marks_whole_words():
    assert highlight("a cat in a category", "cat", 1.0, 1.0).count("<mark") == 1
    assert highlight("我的猫很可爱", "猫", 1.0, 2.0).count("<mark") == 1
    assert "<mark" not in highlight("x & y", "", 1.0, 1.0)
    assert 'class="word"' in highlight("the cat", "cat", 0.0, 1.0)  # inactive: no colour


def test_feature_page_lists_every_attempt_and_marks_the_selected_one(toy_labels, tmp_path):
    write_report(toy_labels, tmp_path / "report")
    # The toy run has one cheap restart, so some features carry several attempts.
    f = next(f for f in toy_labels if len(toy_labels[f].attempts) > 1)
    attempts = toy_labels[f].attempts
    assert sum(a.selected for a in attempts) == 1
    html = (tmp_path / "report" / "features" / f"{f}.html").read_text(encoding="utf-8")
    table = html[html.index('id="attempts"'):]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr(?: class=\"selected\")?><td", table)
    assert len(rows) == len(attempts)
    assert table.count('<tr class="selected">') == 1
    chosen = next(a for a in attempts if a.selected)
    assert chosen.label in table
    # Counts print as integers (the scores table), attempts are numbered without gaps.
    assert f"<th>attempts</th><td>{len(attempts)}</td>" in html
    assert f"<th>steps_total</th><td>{sum(a.steps for a in attempts)}</td>" in html
    assert [a.attempt for a in attempts] == list(range(len(attempts)))


def _comparison(labels: LabelSet):
    """A comparison of the run's ok features with made-up explanations (no scoring)."""
    from saelens_tokenlabel.formats.comparison import (
        CompareConfig,
        Comparison,
        FeatureComparison,
        ScoredLabel,
        decide,
        summarize,
    )
    from saelens_tokenlabel.formats.explanations import SourceInfo

    rows = []
    for f, theirs in zip([f for f in labels if labels[f].status == "ok"][:2], (EVIL, "digits"),
                         strict=True):
        ours = labels[f].metrics["heldout_balanced_accuracy"]
        score = 0.25 if theirs == EVIL else 1.0
        winner, diff = decide(ours, score, 1e-9)
        rows.append(FeatureComparison(
            feature=f, ours=ScoredLabel(labels[f].label, (1,), 1, ours),
            theirs=ScoredLabel(theirs, (1, 2, 3), 3, score), winner=winner, difference=diff,
            n_heldout=10, n_heldout_active=5, stored_score=ours, where=f"x.tsv:{f}"))
    return Comparison(summary=summarize(rows, CompareConfig(bootstrap_samples=50)),
                      features=tuple(rows), source=SourceInfo("tsv", "<x>.tsv", 2),
                      evaluator="toy")


def test_a_comparison_adds_their_explanation_score_and_winner(toy_labels, tmp_path):
    from saelens_tokenlabel.report.load import load_comparison

    comparison = _comparison(toy_labels)
    assert load_comparison(tmp_path) is None
    comparison.save(tmp_path)
    loaded = load_comparison(tmp_path)
    assert loaded == comparison
    write_report(toy_labels, tmp_path / "report", ReportConfig(plots=False),
                 comparison=loaded)
    page = Page(tmp_path / "report" / "index.html")
    text = page.joined
    assert "their explanation" in text and "their balanced accuracy (held-out)" in text
    assert "Against existing explanations (tsv, <x>.tsv), scored by toy" in text
    assert comparison.summary.line() in text
    assert EVIL in text  # escaped like every other text (the one script: the table sorter)
    assert not [t for t, _ in page.tags if t == "script"][1:]
    winners = [a["class"] for a in page.all("td") if (a.get("class") or "").startswith("winner")]
    assert sorted(winners) == sorted(f"winner {r.winner}" for r in comparison.features)
    # A feature without a comparison (the dead one) gets empty cells, not a broken row.
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    dead = re.search(r'<tr id="f-2".*?</tr>', html).group()
    assert dead.count("<td") == len([a for a in page.all("th") if a.get("title")])
    # Without a comparison the index is as before.
    write_report(toy_labels, tmp_path / "plain", ReportConfig(plots=False))
    assert "their explanation" not in Page(tmp_path / "plain" / "index.html").joined
    (tmp_path / "compare.json").write_text("{broken", encoding="utf-8")
    assert load_comparison(tmp_path) is None


def test_a_many_page_report_reads_each_result_once_and_summarises_once(tmp_path,
                                                                       monkeypatch):
    """A whole SAE's report: each result is read once (its page written, its row kept), the
    summary is made once for every index page, and a page's navigation does not list every
    other page: none of the report's work grows faster than the features."""
    from saelens_tokenlabel.records.result import LabelResult, Trajectory
    from saelens_tokenlabel.report import html

    class Counted(LabelSet):
        reads = 0

        def __getitem__(self, f):
            Counted.reads += 1
            return super().__getitem__(f)

    n = 600
    labels = Counted([LabelResult(label=f"w{f}", label_tokens=[f"w{f}"], label_token_ids=[f],
                                  probability=0.5, converged=True, steps=3, metrics={},
                                  trajectory=Trajectory(), feature=f) for f in range(n)])
    made = []
    summary = html._summary
    monkeypatch.setattr(html, "_summary", lambda ls: made.append(len(ls)) or summary(ls))
    write_report(labels, tmp_path, ReportConfig(plots=False, rows_per_page=3))
    assert Counted.reads == n and made == [n]
    assert len(list(tmp_path.glob("index*.html"))) == n // 3
    middle = Page(tmp_path / "index-100.html")
    pages = [a["href"] for a in middle.all("a") if (a.get("href") or "").startswith("index")]
    # first, last, and 10 on either side of page 100; twice (above and below the table)
    assert len(pages) == 2 * (2 + 2 * html.NAV_REACH)
    assert "index.html" in pages and f"index-{n // 3}.html" in pages
