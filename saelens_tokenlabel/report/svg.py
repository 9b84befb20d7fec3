"""Inline SVG: the sparkline of the report's table, and a trajectory plot for when matplotlib is
not installed. Plain text output, no dependency."""

from __future__ import annotations

from html import escape

from ..records.result import LabelResult, Trajectory
from .series import N_TOKENS, as_trajectory, n_slots, slot_series, visible, winner_probs

WINNER = "#d62728"
# Dark to light blues (matplotlib's "Blues" at 0.95..0.35), so the fallback looks like the PNG.
BLUES = ("#08306b", "#08468b", "#0d5ba3", "#1f6eb3", "#3282bd", "#4a98c9", "#64a9d3",
         "#82bbdb", "#9ecae1")
SPARK_POINTS = 120
"""A sparkline keeps at most this many points (the steps are subsampled)."""


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _subsample(values: list[float], k: int) -> list[tuple[int, float]]:
    n = len(values)
    if n <= k:
        return list(enumerate(values))
    idx = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    return [(i, values[i]) for i in idx]


def _points(values: list[float], x0: float, y0: float, w: float, h: float,
            k: int = SPARK_POINTS) -> str:
    n = max(len(values) - 1, 1)
    return " ".join(f"{x0 + w * i / n:.1f},{y0 + h * (1 - min(max(v, 0.0), 1.0)):.1f}"
                    for i, v in _subsample(values, k))


def sparkline(result: LabelResult | Trajectory, width: int = 120, height: int = 24) -> str:
    """The winning token's probability over the steps (one red line per label slot, on a 0..1
    scale); an empty string when there is no trajectory."""
    series = winner_probs(result)
    if not series or not series[0]:
        return ""
    final = ", ".join(f"{s[-1]:.2f}" for s in series)
    lines = "".join(
        f'<polyline fill="none" stroke="{WINNER}" stroke-width="1.5" '
        f'stroke-opacity="{1.0 - 0.35 * i / max(len(series) - 1, 1):.2f}" '
        f'points="{_points(s, 1, 1, width - 2, height - 2)}"/>'
        for i, s in enumerate(series))
    return (f'<svg class="spark" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">'
            f"<title>winning token probability over {len(series[0])} steps (final {final})"
            f'</title><rect x="0" y="0" width="{width}" height="{height}" fill="#f6f8fa"/>'
            f"{lines}</svg>")


def trajectory_svg(result: LabelResult | Trajectory, n: int = N_TOKENS, width: int = 640,
                   height: int = 240) -> str:
    """The trajectory plot as inline SVG, one panel per slot: the same colours as the matplotlib
    plot, with a legend of the decoded tokens."""
    traj, _ = as_trajectory(result)
    panels = []
    for slot in range(n_slots(traj)):
        series = slot_series(result, slot, n)
        left, top, pw, ph = 44, 16, width - 44 - 190, height - 16 - 34
        last = traj.step[-1] if traj.step else 0
        parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" '
                 f'stroke="#999"/>']
        for y in (0.0, 0.5, 1.0):
            yy = top + ph * (1 - y)
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
                         f'stroke="#ddd"/><text x="{left - 4}" y="{yy + 4:.1f}" '
                         f'text-anchor="end" font-size="10">{y:.1f}</text>')
        parts.append(f'<text x="{left}" y="{top + ph + 14}" font-size="10">{traj.step[0]}'
                     f'</text><text x="{left + pw}" y="{top + ph + 14}" font-size="10" '
                     f'text-anchor="end">{last}</text><text x="{left + pw / 2}" '
                     f'y="{top + ph + 28}" font-size="11" text-anchor="middle">step</text>')
        if n_slots(traj) > 1:
            parts.append(f'<text x="{left + pw / 2}" y="11" font-size="11" '
                         f'text-anchor="middle">slot {slot}</text>')
        colors = [WINNER, *BLUES]
        for i in range(len(series) - 1, -1, -1):  # winner drawn last, on top
            s = series[i]
            parts.append(f'<polyline class="{"winner" if s.winner else "other"}" fill="none" '
                         f'stroke="{colors[i % len(colors)]}" '
                         f'stroke-width="{2.2 if s.winner else 1.2}" '
                         f'points="{_points(s.probs, left, top, pw, ph, 400)}"/>')
        for i, s in enumerate(series):
            y = top + 8 + 14 * i
            parts.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{y - 4}" '
                         f'y2="{y - 4}" stroke="{colors[i % len(colors)]}" stroke-width="2"/>'
                         f'<text x="{left + pw + 32}" y="{y}" font-size="11" '
                         f'style="white-space:pre">{escape(_short(visible(s.text)))}</text>')
        panels.append(f'<svg class="trajectory" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" role="img" '
                      f'xmlns="http://www.w3.org/2000/svg"><title>token probabilities, slot '
                      f'{slot}</title>{"".join(parts)}</svg>')
    return "".join(panels)
