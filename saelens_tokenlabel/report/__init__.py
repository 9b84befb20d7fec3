"""The report (layer 7): trajectory plots and a static HTML report of a labeled SAE.

Owns the report's pages, plots and sparklines, and reading a run folder for them. May import
`records/`, `formats/` and the run store (`run/`), never `sae/`: it needs results only.

Plots need the ``plot`` extra (matplotlib), imported only when a plot is drawn; the report
works without it (inline SVG plots instead of PNGs). `load_run` reads a run folder's labels,
`load_comparison` its ``compare.json`` (`tokenlabel compare`).
Names load on first access (see `saelens_tokenlabel.records.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records.lazy import lazy_exports

if TYPE_CHECKING:
    from .html import ReportConfig, write_report
    from .load import load_comparison, load_run
    from .plot import plot_trajectory, save_trajectory_plot
    from .svg import sparkline, trajectory_svg

_EXPORTS = {
    "ReportConfig": ".html",
    "write_report": ".html",
    "load_comparison": ".load",
    "load_run": ".load",
    "plot_trajectory": ".plot",
    "save_trajectory_plot": ".plot",
    "sparkline": ".svg",
    "trajectory_svg": ".svg",
}

__all__ = [
    "ReportConfig",
    "write_report",
    "load_comparison",
    "load_run",
    "plot_trajectory",
    "save_trajectory_plot",
    "sparkline",
    "trajectory_svg",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
