"""Trajectory plots and a static HTML report of a labeled SAE.

Plots need the ``plot`` extra (matplotlib), imported only when a plot is drawn; the report
works without it (inline SVG plots instead of PNGs).
"""

from .cli import add_report_parser, load_run
from .html import ReportConfig, write_report
from .plot import plot_trajectory, save_trajectory_plot
from .svg import sparkline, trajectory_svg

__all__ = ["ReportConfig", "add_report_parser", "load_run", "plot_trajectory",
           "save_trajectory_plot", "sparkline", "trajectory_svg", "write_report"]
