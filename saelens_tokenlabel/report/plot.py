"""Trajectory plots in the style of the paper's Fig. 3: probability of the label's tokens
against step, the winning token in red, the next 9 in shades of blue.

Needs matplotlib (``pip install "saelens-tokenlabel[plot]"``), imported only when a plot is
drawn. Figures are made without pyplot, so no display or GUI backend is involved.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import Any

from ..records.result import LabelResult, Trajectory
from .series import N_TOKENS, as_trajectory, check_slot, n_slots, slot_series, visible

WINNER_COLOR = "#d62728"
"""The winning token's line (red)."""
BLUES = "Blues"
"""Colormap of the other tokens' lines, darkest for the strongest runner-up."""
INSTALL_HINT = ('Trajectory plots need matplotlib: pip install "saelens-tokenlabel[plot]" '
                "(or pip install matplotlib).")


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return matplotlib


def blue_shades(n: int) -> list[tuple[float, float, float, float]]:
    """`n` blues from dark to light, light enough to tell apart yet never near-white."""
    cmap = _matplotlib().colormaps[BLUES]
    if n <= 0:
        return []
    if n == 1:
        return [cmap(0.8)]
    return [cmap(0.95 - 0.6 * i / (n - 1)) for i in range(n)]


LEGEND_CHARS = 24
"""Longer tokens are cut (with …) in the legend, which must not crowd out the plot."""


def legend_text(token: str) -> str:
    # Quoted so leading spaces show; `$` escaped so matplotlib never reads it as mathtext.
    text = visible(token)
    if len(text) > LEGEND_CHARS:
        text = text[: LEGEND_CHARS - 1] + "…"
    return "'" + text.replace("$", r"\$") + "'"


def draw_slot(ax: Any, result: LabelResult | Trajectory, slot: int = 0,
              n: int = N_TOKENS, legend: bool = True) -> list[Any]:
    """Draw one slot's lines on `ax`; returns them, winner first."""
    traj, _ = as_trajectory(result)
    series = slot_series(result, slot, n)
    blues = iter(blue_shades(len(series) - 1))
    lines = []
    # Runners-up first so the red line is drawn on top; returned winner first.
    for s in series[1:]:
        (line,) = ax.plot(traj.step, s.probs, color=next(blues), lw=1.2,
                          label=legend_text(s.text), zorder=2)
        lines.append(line)
    (win,) = ax.plot(traj.step, series[0].probs, color=WINNER_COLOR, lw=2.2,
                     label=legend_text(series[0].text), zorder=3)
    lines.insert(0, win)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("probability")
    if n_slots(traj) > 1:
        ax.set_title(f"slot {slot}", fontsize=10)
    if legend:
        ax.legend(handles=lines, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                  frameon=False)
    ax.grid(alpha=0.25)
    return lines


def _title(res: LabelResult | None, title: str | None) -> str | None:
    if title is None and res is not None:
        label = visible(res.label)
        label = label if len(label) <= 60 else label[:59] + "…"
        title = f"feature {res.feature}: '{label}'".replace("$", r"\$")
    return title


FALLBACK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC",
                  "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
                  "Source Han Sans SC", "AR PL UMing CN", "Noto Sans")
"""Fonts tried, when installed, for glyphs the default font lacks (the paper's "中文" label)."""


@functools.cache
def _fallbacks() -> tuple[str, ...]:
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return tuple(f for f in FALLBACK_FONTS if f in have)


def _fonts() -> Any:
    """Context in which text falls back to `FALLBACK_FONTS` glyph by glyph (matplotlib >= 3.6
    does that for a list of families)."""
    import matplotlib

    if not _fallbacks():
        return contextlib.nullcontext()
    family = [*matplotlib.rcParams["font.sans-serif"][:1], *_fallbacks()]
    return matplotlib.rc_context({"font.family": family})


def _save(fig: Any, path: Path, dpi: int) -> None:
    with warnings.catch_warnings():
        # Tokens in scripts the default font lacks (e.g. Chinese) draw as boxes; one warning
        # per glyph would flood the log of a whole-SAE report.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        warnings.filterwarnings("ignore", message="Matplotlib currently does not support")
        fig.savefig(path, dpi=dpi)


def plot_trajectory(result: LabelResult | Trajectory, ax: Any = None, slot: int | None = None,
                    n: int = N_TOKENS, title: str | None = None) -> Any:
    """Plot a label's optimisation trajectory; returns the matplotlib ``Figure``.

    With `ax`, draws slot `slot` (default 0) on it. Without, makes a new figure with one panel
    per label slot (or only `slot` when given). `title` defaults to the feature and its label.
    """
    _matplotlib()
    traj, res = as_trajectory(result)
    check_slot(traj, slot or 0)
    with _fonts():
        if ax is not None:
            draw_slot(ax, result, slot or 0, n)
            return ax.figure
        from matplotlib.figure import Figure

        slots = [slot] if slot is not None else list(range(n_slots(traj)))
        fig = Figure(figsize=(7.5, 3.2 * len(slots)), layout="constrained")
        axes = fig.subplots(len(slots), 1, squeeze=False)[:, 0]
        for a, s in zip(axes, slots, strict=True):
            draw_slot(a, result, s, n)
        title = _title(res, title)
        if title:
            fig.suptitle(title, fontsize=11)
    return fig


def save_trajectory_plot(result: LabelResult | Trajectory, path: str | Path, dpi: int = 100,
                         **kwargs: Any) -> Path:
    """Write `plot_trajectory(result, **kwargs)` to `path` (format from its suffix, e.g. .png,
    .svg, .pdf). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(plot_trajectory(result, **kwargs), path, dpi)
    return path


class TrajectoryPlotter:
    """Saves many results' plots through reused figures (one per number of slots), with fixed
    margins instead of a layout engine: a whole-SAE report draws thousands of plots, and
    building and laying out a figure is a good part of each (about a third on CPU)."""

    def __init__(self, dpi: int = 100) -> None:
        _matplotlib()
        self.dpi = dpi
        self._figures: dict[int, Any] = {}

    def _figure(self, slots: int) -> Any:
        fig = self._figures.get(slots)
        if fig is None:
            from matplotlib.figure import Figure

            height = 3.2 * slots
            fig = Figure(figsize=(7.5, height))
            fig.subplots(slots, 1, squeeze=False)
            # Room for the title (top), the legend of <= LEGEND_CHARS characters (right).
            fig.subplots_adjust(left=0.09, right=0.7, bottom=0.5 / height,
                                top=1 - (0.45 if slots == 1 else 0.7) / height,
                                hspace=0.45)
            self._figures[slots] = fig
        return fig

    def save(self, result: LabelResult | Trajectory, path: str | Path) -> Path:
        traj, res = as_trajectory(result)
        check_slot(traj, 0)
        fig = self._figure(n_slots(traj))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _fonts():
            for slot, ax in enumerate(fig.axes):
                ax.clear()
                draw_slot(ax, result, slot)
            fig.suptitle(_title(res, None) or "", fontsize=11)
            _save(fig, path, self.dpi)
        return path
