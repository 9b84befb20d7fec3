"""A static HTML report of a labeled SAE: an index with one row per feature (label, scores,
status, convergence, a sparkline of the winning token), and one page per feature with its
trajectory plot, top activating contexts and promoted output tokens.

Everything is written next to ``index.html`` and linked relatively (no server, no network):
``style.css``, ``features/<id>.html`` and ``plots/<id>.png``. Every piece of text from a
result is escaped; tokens are shown with line breaks and control characters spelled out.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Protocol

from ..formats.comparison import Comparison, FeatureComparison
from ..formats.labelset import LabelSet, slim_result
from ..records.columns import as_count, score_columns
from ..records.extra import ExampleRecord
from ..records.result import Attempt, LabelResult
from ..records.serial import Config
from ..records.verdict import VERDICTS
from .series import visible
from .svg import sparkline, trajectory_svg

log = logging.getLogger(__name__)

STYLE_FILE = "style.css"
FEATURE_DIR = "features"
PLOT_DIR = "plots"
SCORE_COLUMNS = (("heldout_balanced_accuracy", "bal. acc."), ("heldout_f1", "F1"),
                 ("heldout_auroc", "AUROC"))
"""The index's score columns: held-out scores of the hard label."""
OWN_METRIC_PREFIXES = ("loss", "train_", "validation_", "heldout_")
"""Metrics of the optimisation itself; any other numeric metric (e.g. ``coherence_*``) gets a
column of its own in the index..."""
BOOKKEEPING_METRICS = frozenset({"steps_total", "attempts"})
"""...except these counts, which are not scores."""


@dataclass
class ReportConfig(Config):
    """What goes into the report."""

    plots: bool = True
    """Draw a trajectory plot per feature (PNG with matplotlib, else inline SVG)."""
    rows_per_page: int = 1000
    """Features per index page; more features spill over to ``index-2.html``, ... so that a
    whole SAE (100k+ features) stays browsable."""
    n_active_examples: int = 20
    """Top activating contexts shown per feature."""
    n_inactive_examples: int = 10
    """Inactive examples (near misses, random) shown per feature, folded away."""
    n_output_tokens: int = 10
    """Promoted and suppressed output tokens shown per feature."""
    dpi: int = 100
    """Resolution of the PNG plots."""

    def check(self) -> None:
        self.need(self.rows_per_page >= 1, f"rows_per_page must be >= 1, got {self.rows_per_page}")
        for name in ("n_active_examples", "n_inactive_examples", "n_output_tokens"):
            self.need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")


# ---------------------------------------------------------------------- text helpers
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean(text: Any) -> str:
    """Any value as escaped HTML text; line breaks kept, control characters and lone
    surrogates spelled out (they cannot be written as UTF-8)."""
    s = str(text)
    s = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                    else f"\\u{ord(m.group()):04x}", s)
    return escape(s, quote=True)


def tok(text: Any) -> str:
    """A token or label, whitespace visible, as an inline ``code`` element."""
    return f'<code class="tok">{escape(visible(str(text)), quote=True)}</code>'


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "–" if v is None else clean(v)
    if isinstance(v, float) and not math.isfinite(v):
        return clean(v)
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _sort_value(v: Any) -> str:
    return (f"{float(v):.9g}" if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v) else "")


def _page(title: str, body: str, css: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{clean(title)}</title><link rel="stylesheet" href="{css}"></head>'
            f"<body>{body}</body></html>\n")


# ---------------------------------------------------------------------- highlighting
def highlight(text: str, word: str, activation: float, max_activation: float) -> str:
    """`text` escaped, with each occurrence of `word` marked; the shade says how strongly the
    feature fires relative to its maximum. A whole-word occurrence is preferred (``cat`` is
    not marked inside ``category``); the record does not say which occurrence fired, so all
    are marked."""
    if not word or not word.strip():
        return clean(text)
    pat = re.escape(word)
    bounded = (r"(?<!\w)" if word[0].isalnum() else "") + pat + (
        r"(?!\w)" if word[-1].isalnum() else "")
    spans = [m.span() for m in re.finditer(bounded, text)] or [
        m.span() for m in re.finditer(pat, text)]
    strength = (activation / max_activation if max_activation > 0 and activation > 0 else 0.0)
    alpha = 0.25 + 0.6 * min(strength, 1.0) if activation > 0 else 0.0
    style = f' style="background:rgba(255,140,0,{alpha:.2f})"' if activation > 0 else ""
    cls = "act" if activation > 0 else "word"
    out, at = [], 0
    for a, b in spans:
        out.append(clean(text[at:a]))
        out.append(f'<mark class="{cls}"{style}>{clean(text[a:b])}</mark>')
        at = b
    out.append(clean(text[at:]))
    return "".join(out)


# ---------------------------------------------------------------------- feature pages
def _unreadable(result: LabelResult, key: str) -> str | None:
    """A note on an ``extra`` entry the file had but that could not be read as its record
    (it is kept in ``extra.other``); None when there is none."""
    if key not in result.extra.other:
        return None
    raw = result.extra.other[key]
    return (f"extra[{key!r}] could not be read (a {type(raw).__name__}: "
            f"{str(raw)[:200]}); not shown")


def _act(record: ExampleRecord) -> float:
    a = record.activation
    return float(a) if a is not None and math.isfinite(a) else 0.0


def examples_html(result: LabelResult, cfg: ReportConfig) -> str:
    records, problem = result.extra.examples or (), _unreadable(result, "examples")
    note = f'<p class="note">{clean(problem)}</p>' if problem else ""
    if not records:
        return note + ('<p class="note">No examples were kept for this feature (they are kept '
                       "by <code>ExampleConfig(keep_examples=True)</code>, the default).</p>")
    active = sorted((r for r in records if _act(r) > 0), key=_act, reverse=True)
    inactive = [r for r in records if _act(r) <= 0]
    top = max((_act(r) for r in active), default=0.0)

    def rows(rs: Iterable[ExampleRecord]) -> str:
        return "".join(
            f'<tr><td class="num">{num(r.activation)}</td>'
            f'<td>{clean(r.kind)}</td><td>{tok(r.word)}</td>'
            f'<td class="ctx">{highlight(str(r.text), str(r.word), _act(r), top)}'
            "</td></tr>" for r in rs)

    head = ("<thead><tr><th>activation</th><th>kind</th><th>word</th><th>context</th></tr>"
            "</thead>")
    shown = active[: cfg.n_active_examples]
    out = [note, f"<p>{len(active)} activating example(s), {len(inactive)} inactive; the "
                 f"top {len(shown)} by activation, the word the evaluator rated marked.</p>"]
    if shown:
        out.append(f'<table class="examples active">{head}<tbody>{rows(shown)}</tbody>'
                   "</table>")
    if inactive and cfg.n_inactive_examples:
        few = inactive[: cfg.n_inactive_examples]
        out.append(f"<details><summary>{len(few)} of {len(inactive)} inactive examples"
                   f'</summary><table class="examples inactive">{head}<tbody>{rows(few)}'
                   "</tbody></table></details>")
    return "".join(out)


def output_side_html(result: LabelResult, cfg: ReportConfig) -> str | None:
    side = result.extra.output_side
    if side is None:
        problem = _unreadable(result, "output_side")
        return None if problem is None else f'<p class="note">{clean(problem)}</p>'
    cols = []
    for key, tokens in (("promoted", side.promoted), ("suppressed", side.suppressed)):
        pairs = tokens[: cfg.n_output_tokens]
        body = "".join(f"<tr><td>{tok(t)}</td><td class=\"num\">{num(v)}</td></tr>"
                       for t, v in pairs) or '<tr><td colspan="2">–</td></tr>'
        cols.append(f'<table class="output {key}"><thead><tr><th>{key}</th><th>logit</th>'
                    f"</tr></thead><tbody>{body}</tbody></table>")
    return ('<p>Tokens the feature\'s decoder direction promotes and suppresses through the '
            f'unembedding.</p><div class="cols">{"".join(cols)}</div>')


def _value(v: Any) -> str:
    if isinstance(v, float):
        return num(v, 4)
    return clean("–" if v is None or v == {} or v == [] else v)


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "info") -> str:
    body = []
    for k, v in rows:
        if isinstance(v, dict | list) and v:
            text = json.dumps(v, ensure_ascii=False, indent=1, default=str)
            cell = (f"<details><summary>{len(v)} entr{'y' if len(v) == 1 else 'ies'}"
                    f"</summary><pre>{clean(text)}</pre></details>")
        else:
            cell = _value(v)
        body.append(f"<tr><th>{clean(k)}</th><td>{cell}</td></tr>")
    return f'<table class="{cls}"><tbody>{"".join(body)}</tbody></table>'


ATTEMPT_COLUMNS = ("attempt", "selected", "overrides", "label_length", "label", "probability",
                   "converged", "steps")


def attempts_html(attempts: list[Attempt]) -> str:
    """One row per optimisation attempt (restarts, label lengths), the selected one marked."""
    rows = []
    for a in attempts:
        cells = []
        for key in ATTEMPT_COLUMNS:
            v = getattr(a, key)
            if key == "label":
                cells.append(f"<td>{tok(v or '')}</td>")
            elif key == "overrides":
                cells.append(f"<td>{clean(json.dumps(v, default=str)) if v else 'defaults'}"
                             "</td>")
            else:
                cells.append(f'<td class="num">{num(v)}</td>')
        cells.append(f'<td class="num">{num(a.metrics.get("heldout_balanced_accuracy"))}</td>')
        sel = ' class="selected"' if a.selected else ""
        rows.append(f"<tr{sel}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{h.replace('_', ' ')}</th>" for h in ATTEMPT_COLUMNS)
    return (f'<table class="attempts"><thead><tr>{head}<th>bal. acc. (held-out)</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def feature_page(result: LabelResult, plot_html: str, index_page: str,
                 prev_next: tuple[int | None, int | None], cfg: ReportConfig) -> str:
    f = result.feature
    prev, nxt = prev_next
    nav = [f'<a href="../{index_page}#f-{f}">all features</a>']
    if prev is not None:
        nav.append(f'<a href="{prev}.html" rel="prev">feature {prev}</a>')
    if nxt is not None:
        nav.append(f'<a href="{nxt}.html" rel="next">feature {nxt}</a>')
    label = tok(result.label) if result.status == "ok" else "<em>no label</em>"
    facts: list[tuple[str, Any]] = [("status", result.status)]
    if result.verdict is not None:
        v = result.verdict
        facts.append(("verdict", f"{v.value}: {v.reason}"))
        if v.low is not None:
            facts.append((f"held-out balanced accuracy ({v.level:.0%} credible bounds)",
                          f"{v.heldout:.3f} [{v.low:.3f}, {v.high:.3f}]"))
    if result.status == "ok":
        facts.append(("found by", METHOD_WORDS.get(result.method, result.method)))
    if result.polysemantic is not None:
        facts.append(("one label does not explain it", result.polysemantic.describe()))
    if result.extra.message:
        facts.append(("message", result.extra.message))
    facts += [("label tokens", " | ".join(visible(t) for t in result.label_tokens)),
              ("probability", result.probability), ("converged", result.converged),
              ("converged at step", result.converged_step), ("steps", result.steps),
              ("threshold", result.threshold), ("threshold rule", result.threshold_rule),
              ("examples", f"{result.n_examples} ({result.n_active} active, "
                           f"{result.n_validation} validation, {result.n_heldout} held out)"),
              ("evaluator", result.evaluator)]
    if result.extra.activation is not None:
        facts += [(f"activation {k}", v) for k, v in result.extra.activation.to_dict().items()]
    metrics = _kv_table(sorted((k, as_count(k, v)) for k, v in result.metrics.items()),
                        "metrics")
    parts = [f'<nav>{" · ".join(nav)}</nav>',
             f'<h1>Feature {clean(f)}: {label}</h1>',
             _kv_table(facts),
             '<h2 id="trajectory">Trajectory</h2>', plot_html,
             '<h2 id="examples">Top activating contexts</h2>', examples_html(result, cfg)]
    side = output_side_html(result, cfg)
    if side is not None:
        parts += ['<h2 id="output">Output tokens</h2>', side]
    parts += ['<h2 id="scores">Scores and loss terms</h2>',
              metrics if result.metrics else '<p class="note">No scores.</p>']
    if len(result.attempts) > 1:
        parts += ['<h2 id="attempts">Attempts</h2>', attempts_html(result.attempts)]
    if result.config:
        parts += ["<details><summary>Label config</summary>",
                  f"<pre>{clean(json.dumps(result.config, indent=1, default=str))}</pre>"
                  "</details>"]
    return _page(f"feature {f}: {visible(result.label)}", "".join(parts), f"../{STYLE_FILE}")


# ---------------------------------------------------------------------- plots
class _Plotter:
    """PNG plots when matplotlib is there; else inline SVG and a note saying how to get PNGs."""

    def __init__(self, out_dir: Path, cfg: ReportConfig) -> None:
        self.out_dir, self.cfg = out_dir, cfg
        self.mode = "off"
        self.note = ""
        if cfg.plots:
            try:
                from .plot import TrajectoryPlotter

                self.png = TrajectoryPlotter(dpi=cfg.dpi)
                self.mode = "png"
            except ImportError as err:
                self.mode = "svg"
                self.note = str(err)
                log.warning("%s Using inline SVG plots instead.", err)

    def html(self, result: LabelResult) -> str:
        if not result.trajectory.top_ids:
            return (f'<p class="note">No trajectory: this feature was not optimised (status '
                    f"{clean(result.status)}).</p>")
        if self.mode == "off":
            return '<p class="note">Plots were turned off for this report.</p>'
        if self.mode == "svg":
            return (f'<p class="note">{clean(self.note)} Showing a simpler inline plot.</p>'
                    f'<div class="plot">{trajectory_svg(result)}</div>')
        name = f"{result.feature}.png"
        self.png.save(result, self.out_dir / PLOT_DIR / name)
        return (f'<div class="plot"><img src="../{PLOT_DIR}/{name}" alt="trajectory of '
                f'feature {result.feature}: probability of the winning token (red) and the '
                f'next 9 (blue) against step"></div>')


# ---------------------------------------------------------------------- index
def _extra_score_keys(results: Iterable[LabelResult]) -> list[str]:
    keys = set()
    for r in results:
        for k, v in r.metrics.items():
            if (not k.startswith(OWN_METRIC_PREFIXES) and k not in BOOKKEEPING_METRICS
                    and isinstance(v, int | float) and not isinstance(v, bool)):
                keys.add(k)
    return sorted(keys)


METHOD_WORDS = {"descended": "token-space gradient descent",
                "amortised": "amortised proposal, accepted on its examples (no descent)",
                "warm_started": "descent warm-started from a rejected amortised proposal"}
"""How each `LabelResult.method` is worded in the report."""


def _poly_mark(r: LabelResult) -> str:
    """Beside the status: the flag of a feature one label does not explain, and how a label
    not found by a plain descent was found."""
    out = ""
    if r.status == "ok" and r.method != "descended":
        out += (f' <span class="method" title="{clean(METHOD_WORDS.get(r.method, r.method))}">'
                f'{clean(r.method)}</span>')
    if r.polysemantic is None:
        return out
    return out + (f' <span class="poly" title="{clean(r.polysemantic.describe())}">'
                  'polysemantic</span>')


def _compare_cells(row: FeatureComparison | None) -> str:
    """The comparison's cells of a feature: their explanation, its score, the winner."""
    if row is None:
        return '<td class="theirs">–</td><td class="num" data-v="">–</td><td>–</td>'
    t = row.theirs
    title = f"{t.n_tokens} tokens; {row.where}"
    return (f'<td class="theirs" title="{clean(title)}">{clean(t.text)}</td>'
            f'<td class="num" data-v="{_sort_value(t.score)}">{num(t.score)}</td>'
            f'<td class="winner {clean(row.winner)}">{clean(row.winner)}</td>')


def _row(r: LabelResult, extra_keys: list[str], with_output: bool,
         compared: dict[int, FeatureComparison] | None = None, spark: str | None = None) -> str:
    f = r.feature
    link = f"{FEATURE_DIR}/{f}.html"
    label = (f'<a href="{link}">{tok(r.label)}</a>' if r.status == "ok"
             else f'<a href="{link}"><em>none</em></a>')
    cells = [f'<td class="num" data-v="{f}"><a href="{link}">{f}</a></td>',
             f'<td class="label">{label}</td>',
             f'<td class="spark">{sparkline(r) if spark is None else spark}</td>',
             f'<td class="status {clean(r.status)}">{clean(r.status)}{_poly_mark(r)}</td>',
             _verdict_cell(r),
             f'<td class="conv" data-v="{int(r.converged)}">'
             f'{"yes" if r.converged else "no"}</td>',
             f'<td class="num" data-v="{_sort_value(r.probability)}">{num(r.probability)}</td>']
    for key in [k for k, _ in SCORE_COLUMNS] + extra_keys:
        v = r.metrics.get(key)
        cells.append(f'<td class="num" data-v="{_sort_value(v)}">{num(v)}</td>')
    if with_output:
        side = r.extra.output_side
        promoted = side.promoted[:3] if side is not None else ()
        cells.append(f'<td>{" ".join(tok(p.token) for p in promoted)}</td>')
    if compared is not None:
        cells.append(_compare_cells(compared.get(int(f))))
    cells.append(f'<td class="num" data-v="{r.steps}">{r.steps}</td>')
    return f'<tr id="f-{f}" data-status="{clean(r.status)}">{"".join(cells)}</tr>'


def _verdict_cell(r: LabelResult) -> str:
    v = r.verdict
    if v is None:
        return '<td class="verdict"></td>'
    order = VERDICTS.index(v.value) if v.value in VERDICTS else len(VERDICTS)
    return (f'<td class="verdict {clean(v.value)}" data-v="{order}" title="{clean(v.reason)}">'
            f'{clean(v.value)}</td>')


def _run_info(labels: LabelSet) -> str:
    info = labels.info
    if not info:
        return '<p class="note">No run information was recorded with these labels.</p>'
    # Plain values in a compact grid; nested ones (configs, identity) folded below it.
    flat = [(k, v) for k, v in info.items() if not (isinstance(v, dict | list) and v)]
    nested = [(k, v) for k, v in info.items() if isinstance(v, dict | list) and v]
    grid = "".join(f"<div><dt>{clean(k)}</dt><dd>{_value(v)}</dd></div>" for k, v in flat)
    return f'<dl class="info">{grid}</dl>' + (_kv_table(nested) if nested else "")


def _summary(labels: LabelSet) -> str:
    counts = {k: len(v) for k, v in sorted(labels.by_status().items())}
    converged = sum(r.converged for r in labels.values())
    ba = [float(v) for v in (r.metrics.get("heldout_balanced_accuracy")
                             for r in labels.values())
          if isinstance(v, int | float) and math.isfinite(v)]
    verdicts = {k: len(v) for k, v in labels.by_verdict().items()}
    parts = [f"<strong>{len(labels)}</strong> features",
             ", ".join(f"{clean(k)}: {v}" for k, v in counts.items()),
             "verdicts " + ", ".join(f"{clean(k)}: {v}" for k, v in verdicts.items()),
             f"converged: {converged}"]
    methods = Counter(r.method for r in labels.values() if r.status == "ok")
    if set(methods) - {"descended"}:
        parts.append("labeled by " + ", ".join(f"{clean(m)}: {n}"
                                               for m, n in sorted(methods.items())))
    poly = sum(r.polysemantic is not None for r in labels.values())
    if poly:
        parts.append(f"polysemantic (one label does not explain them): {poly}")
    if ba:
        parts.append(f"mean held-out balanced accuracy: {sum(ba) / len(ba):.3f}")
    return f'<p class="summary">{" · ".join(parts)}</p>'


_SORT_JS = """
for (const th of document.querySelectorAll("table.features th")) {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    const dir = th.dataset.dir === "asc" ? -1 : 1;
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    const key = (tr) => {
      const c = tr.cells[i], v = c.dataset.v;
      return v === undefined ? c.textContent : (v === "" ? -Infinity : parseFloat(v));
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      return (typeof x === "number" && typeof y === "number" ? x - y
              : String(x).localeCompare(String(y))) * dir;
    });
    body.append(...rows);
  });
}
"""


def _comparison_summary(comparison: Comparison | None) -> str:
    """The comparison with existing explanations in one line (none: nothing)."""
    if comparison is None:
        return ""
    src = comparison.source
    return (f'<p class="summary compare">Against existing explanations ({clean(src.format)}, '
            f"{clean(src.path)}), scored by {clean(comparison.evaluator)} on the same held-out "
            f"examples: {clean(comparison.summary.line())}.</p>")


@dataclass(frozen=True)
class IndexContext:
    """What every index page shares, made once for the whole report."""

    page_names: list[str]
    """Each index page's file name."""
    extra_keys: list[str]
    """The scorers' metrics with a column of their own."""
    plot_note: str
    """Why the plots are inline SVG (empty: they are not)."""
    summary: str
    """The header's summary of every feature (`_summary`)."""
    comparison: Comparison | None = None
    """The run's comparison with existing explanations, if any."""


NAV_REACH = 10
"""Index pages linked on either side of the current one (and the first and last): a page's
navigation stays the same size however many pages there are."""


def _nav(page: int, names: list[str]) -> str:
    if len(names) < 2:
        return ""
    shown = sorted({0, len(names) - 1} | set(range(max(0, page - NAV_REACH),
                                                 min(len(names), page + NAV_REACH + 1))))
    links, last = [], -1
    for i in shown:
        if i > last + 1:
            links.append("…")
        links.append(f"<strong>{i + 1}</strong>" if i == page else
                     f'<a href="{names[i]}">{i + 1}</a>')
        last = i
    return f'<nav class="pages">pages: {" ".join(links)}</nav>'


def index_page(labels: LabelSet, features: list[int], page: int, index: IndexContext,
               sparks: dict[int, str] | None = None) -> str:
    """Index page `page`: the rows of `features` (their sparklines from `sparks` when given);
    the header and summary shared by every page (`index`)."""
    info = labels.info
    what = " · ".join(clean(info[k]) for k in ("model_name", "hook_name", "evaluator")
                      if info.get(k))
    n_pages = len(index.page_names)
    nav = _nav(page, index.page_names)
    comparison = index.comparison
    with_output = any(labels[f].extra.output_side is not None for f in features)
    # The scorers' own titles for their metrics (a user's scorer too: the run records them).
    titles = {c.key: c.title for c in score_columns(info)}
    compared = (None if comparison is None
                else {row.feature: row for row in comparison.features})
    their = f"their {comparison.summary.metric} (held-out)" if comparison is not None else ""
    heads = (["feature", "label", "trajectory", "status", "verdict", "converged",
              "probability"]
             + [f"{h} (held-out)" for _, h in SCORE_COLUMNS]
             + [titles.get(k, k) for k in index.extra_keys]
             + (["top promoted"] if with_output else [])
             + (["their explanation", their, "winner"] if compared is not None else [])
             + ["steps"])
    thead = "".join(f'<th title="click to sort">{clean(h.replace("_", " "))}</th>'
                    for h in heads)
    sparks = sparks or {}
    rows = "".join(_row(labels[f], index.extra_keys, with_output, compared, sparks.get(f))
                   for f in features)
    body = [f"<header><h1>tokenlabel report</h1><p>{what}</p>{index.summary}"
            f"{_comparison_summary(comparison)}"
            f"<p class=\"small\">Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. "
            "Token-space gradient descent labels (Schulz &amp; Fallows, arXiv 2504.00754); "
            "scores are of the hard label on held-out examples.</p></header>",
            f'<section id="run"><h2>Run</h2>{_run_info(labels)}</section>',
            f'<section id="features"><h2>Features</h2>{nav}']
    if index.plot_note:
        body.append(f'<p class="note">{clean(index.plot_note)}</p>')
    body.append(f'<div class="scroll"><table class="features" id="feature-table"><thead><tr>'
                f"{thead}</tr></thead><tbody>{rows}</tbody></table></div>{nav}</section>"
                f"<script>{_SORT_JS}</script>")
    title = "tokenlabel report" + (f" page {page + 1}" if n_pages > 1 else "")
    return _page(title, "".join(body), STYLE_FILE)


# ---------------------------------------------------------------------- entry point
class Results(Protocol):
    """What a report reads besides a `LabelSet`: the features of a run (`__iter__`,
    `__contains__`, `__len__`), its `info`, and its results read in one pass (`results`);
    `report.load.StoreResults` reads them from a run store as it goes."""

    info: dict[str, Any]

    def __iter__(self) -> Iterator[int]: ...

    def __contains__(self, feature: object) -> bool: ...

    def __len__(self) -> int: ...

    def results(self, features: list[int] | None) -> Iterator[LabelResult]:
        """The results of `features` (None: all), in feature order."""


def write_report(labels: LabelSet | Results, out_dir: str | Path,
                 config: ReportConfig | None = None, features: Iterable[int] | None = None,
                 comparison: Comparison | None = None) -> Path:
    """Write the report of `labels` into `out_dir` (created); returns its ``index.html``.

    `features` restricts it to some features (default: all of them). `comparison` (a run's
    ``compare.json``, `report.load.load_comparison`) adds each feature's existing
    explanation, its score and the winner to the index, and the summary to its header.

    One pass over the results: each feature's page is written as its result comes (from a
    run store, one result is held at a time: `report.load.StoreResults`), and the index keeps
    what its row needs; then the index pages, the summary made once for all of them.
    """
    cfg = config or ReportConfig()
    if not isinstance(labels, LabelSet) and not hasattr(labels, "results"):
        raise TypeError(f"write_report takes a LabelSet, got {type(labels).__name__}; wrap "
                        "results with LabelSet([...]).")
    chosen = sorted(labels) if features is None else sorted({int(f) for f in features})
    missing = [f for f in chosen if f not in labels]
    if missing:
        raise ValueError(f"Features {missing[:5]} are not in these labels (labeled: "
                         f"{len(labels)} features); leave them out of `features`.")
    out = Path(out_dir)
    (out / FEATURE_DIR).mkdir(parents=True, exist_ok=True)
    (out / STYLE_FILE).write_text(_CSS, encoding="utf-8")
    plotter = _Plotter(out, cfg)
    pages = [chosen[i: i + cfg.rows_per_page]
             for i in range(0, len(chosen), cfg.rows_per_page)] or [[]]
    page_names = ["index.html"] + [f"index-{i + 1}.html" for i in range(1, len(pages))]
    page_of = {f: page_names[i] for i, fs in enumerate(pages) for f in fs}
    kept, sparks = _feature_pages(labels, chosen, features is None, out, cfg,
                                  (plotter, page_of))
    index = IndexContext(page_names, _extra_score_keys(kept.values()),
                         plotter.note if plotter.mode == "svg" else "", _summary(kept),
                         comparison)
    for i, fs in enumerate(pages):
        html = index_page(kept, fs, i, index, sparks)
        (out / page_names[i]).write_text(html, encoding="utf-8")
    return out / "index.html"


def _feature_pages(labels: LabelSet | Results, chosen: list[int], everything: bool, out: Path,
                   cfg: ReportConfig, how: tuple[_Plotter, dict[int, str]]
                   ) -> tuple[LabelSet, dict[int, str]]:
    """Write every chosen feature's page, in one pass over the results; return what the
    index keeps of each (`slim_result`) and its sparkline."""
    plotter, page_of = how
    if isinstance(labels, LabelSet):
        results: Iterable[LabelResult] = (labels[f] for f in chosen)
    else:
        results = labels.results(None if everything else chosen)
    kept, sparks = LabelSet(info=labels.info), {}
    t0 = time.perf_counter()
    for i, result in enumerate(results):
        f = int(result.feature)
        prev_next = (chosen[i - 1] if i else None, chosen[i + 1] if i + 1 < len(chosen)
                     else None)
        html = feature_page(result, plotter.html(result), page_of[f], prev_next, cfg)
        (out / FEATURE_DIR / f"{f}.html").write_text(html, encoding="utf-8")
        sparks[f] = sparkline(result)
        kept.add(slim_result(result))
        if (i + 1) % 500 == 0:
            log.info("report: %d/%d feature pages (%.1f s)", i + 1, len(chosen),
                     time.perf_counter() - t0)
    return kept, sparks


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em;
       color: #1f2328; }
h1 { font-size: 1.5em; margin: 0.2em 0; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e3e6ea; text-align: left;
         vertical-align: middle; }
table.features th { background: #f2f4f7; cursor: pointer; position: sticky; top: 0; }
table.info th { font-weight: 600; color: #555; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code.tok { white-space: pre; background: #eef1f5; border-radius: 3px; padding: 0 3px; }
td.status.ok { color: #1a7f37; } td.status:not(.ok) { color: #9a6700; }
td.verdict.explained { color: #1a7f37; font-weight: 600; } td.verdict.weak { color: #9a6700; }
td.verdict.polysemantic { color: #8250df; }
span.poly { color: #9a6700; font-size: 0.85em; margin-left: 0.3em; }
span.method { color: #0a5fad; font-size: 0.85em; margin-left: 0.3em; }
td.ctx { white-space: pre-wrap; max-width: 60em; }
mark.act { color: inherit; border-radius: 2px; padding: 0 1px; }
mark.word { background: none; text-decoration: underline dotted; }
.note { color: #6e4c00; background: #fff8e1; padding: 4px 8px; border-radius: 4px; }
.small { color: #666; font-size: 0.9em; }
.cols { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
.plot img { max-width: 100%; height: auto; }
pre { background: #f6f8fa; padding: 6px; max-height: 30em; overflow: auto; }
nav { margin: 0.5em 0; }
dl.info { display: grid; grid-template-columns: repeat(auto-fill, minmax(24em, 1fr));
          gap: 2px 1.5em; margin: 0.5em 0; }
dl.info div { display: flex; gap: 0.6em; border-bottom: 1px solid #eef0f3; }
dl.info dt { font-weight: 600; color: #555; min-width: 9em; }
dl.info dd { margin: 0; overflow-wrap: anywhere; }
table.attempts tr.selected { background: #eaf5ea; }
td.winner.ours { color: #1a7f37; } td.winner.theirs { color: #cf222e; }
td.theirs { max-width: 28em; }
svg.spark { vertical-align: middle; display: block; }
.scroll { overflow-x: auto; }
"""
