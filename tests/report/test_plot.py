from __future__ import annotations

import sys

import pytest

from saelens_tokenlabel import FeatureData, LabelConfig, label_feature
from saelens_tokenlabel.report import plot_trajectory, save_trajectory_plot
from saelens_tokenlabel.report.plot import legend_text

from .trajectories import result

mcolors = pytest.importorskip("matplotlib.colors", reason='needs the "plot" extra')


def hsv(color):
    return mcolors.rgb_to_hsv(mcolors.to_rgb(color))


def is_red(color) -> bool:
    h, s, v = hsv(color)
    return (h < 0.03 or h > 0.97) and s > 0.7 and v > 0.7


def is_blue(color) -> bool:
    h, s, v = hsv(color)
    return 0.52 < h < 0.7 and s > 0.2


def check_panel(ax, traj, slot, winner_id):
    lines = ax.get_lines()
    assert len(lines) == 10  # the winner and the next 9, as in Fig. 3
    red = [ln for ln in lines if is_red(ln.get_color())]
    blue = [ln for ln in lines if is_blue(ln.get_color())]
    assert len(red) == 1 and len(blue) == 9
    assert list(red[0].get_xdata()) == traj.step
    assert list(red[0].get_ydata()) == traj.token_probability(winner_id, slot)
    assert len({mcolors.to_hex(ln.get_color()) for ln in blue}) == 9  # shades, not one blue
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == legend_text(traj.tokens[winner_id]) and len(legend) == 10


def test_fig3_style_plot_of_a_real_run(toy_run_labels):
    r = toy_run_labels[0]
    assert r.label == "animal"
    fig = plot_trajectory(r)
    assert len(fig.axes) == 1
    check_panel(fig.axes[0], r.trajectory, 0, r.label_token_ids[0])
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "'animal'"
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[0].get_ylabel() == "probability"


@pytest.mark.slow
def test_one_panel_per_slot_for_two_token_labels(toy_evaluator):
    r = label_feature(FeatureData.synthetic("animals"), toy_evaluator,
                      LabelConfig(steps=12, label_length=2, restarts=(), lr=0.5))
    assert len(r.label_token_ids) == 2
    fig = plot_trajectory(r)
    assert len(fig.axes) == 2
    for slot, ax in enumerate(fig.axes):
        check_panel(ax, r.trajectory, slot, r.label_token_ids[slot])
        assert ax.get_title() == f"slot {slot}"
    only = plot_trajectory(r, slot=1)
    assert len(only.axes) == 1 and only.axes[0].get_title() == "slot 1"


def test_draws_on_a_given_axes_and_saves_png_and_svg(tmp_path):
    from matplotlib.figure import Figure

    r = result(7, [[f"t{i}" for i in range(12)]])
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_trajectory(r, ax=ax) is fig and len(ax.get_lines()) == 10
    png = save_trajectory_plot(r, tmp_path / "a" / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_trajectory_plot(r, tmp_path / "p.svg").read_text()
    assert "<svg" in svg


def test_odd_tokens_draw_without_mathtext_or_encoding_errors(tmp_path):
    names = ["$x$", "a$b", "line\nbreak", "中文", "\ud800", "<&>", "\x00"]
    r = result(1, [names])
    fig = plot_trajectory(r)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:3] == [r"'\$x\$'", r"'a\$b'", "'line\\nbreak'"]
    assert save_trajectory_plot(r, tmp_path / "odd.png").stat().st_size > 1000


def test_clear_errors(monkeypatch, toy_run_labels):
    with pytest.raises(ValueError, match="no trajectory"):
        plot_trajectory(toy_run_labels[2])  # the dead feature
    with pytest.raises(ValueError, match="slot 1 is out of range"):
        plot_trajectory(toy_run_labels[0], slot=1)
    with pytest.raises(TypeError, match="LabelResult or a Trajectory"):
        plot_trajectory({"label": "x"})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"saelens-tokenlabel\[plot\]"):
        plot_trajectory(toy_run_labels[0])


def test_fonts_fall_back_glyph_by_glyph_when_a_fallback_is_installed(monkeypatch):
    import saelens_tokenlabel.report.plot as plot_mod

    # A font matplotlib always ships stands in for a CJK font here.
    monkeypatch.setattr(plot_mod, "FALLBACK_FONTS", ("DejaVu Serif", "No Such Font"))
    plot_mod._fallbacks.cache_clear()
    try:
        fig = plot_trajectory(result(1, [["中文", "Chinese"]]))
        family = fig.axes[0].get_legend().get_texts()[0].get_fontfamily()
        assert family[-1] == "DejaVu Serif" and "No Such Font" not in family
    finally:
        plot_mod._fallbacks.cache_clear()
