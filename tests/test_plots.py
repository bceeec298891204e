"""The figures' content: the curves, bars, labels and panels of :mod:`eqprop_lightning.plots` are
the numbers they were given (Agg backend), not only a PNG file."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from eqprop_lightning import plots
from eqprop_lightning.analysis import gdu_figures
from eqprop_lightning.learning.gdu import GDUResult

matplotlib.use("Agg")  # as plots does: no display

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures that :func:`plots.save_figure` writes (still written, then kept here)."""
    figures: list[Figure] = []
    real = plots.save_figure

    def keeping(fig: Figure, path: Path) -> Path:
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "save_figure", keeping)
    return figures


def assert_plain_log_labels(fig: Figure, ax: Axes, expected: list[str]) -> None:
    """The log axis's visible labels (major and minor) read ``expected``, in plain numbers."""
    fig.canvas.draw()
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    low, high = ax.get_ylim()
    labels = {t.label1.get_text(): t.get_loc() for t in ticks if low <= t.get_loc() <= high}
    assert sorted(labels, key=labels.get) == expected


def legend_texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def assert_curve(line, x, y, style: str, colour: str) -> None:
    """``line`` draws ``y`` over ``x`` (None as a gap) in ``style`` and ``colour``."""
    np.testing.assert_array_equal(np.asarray(line.get_xdata(), float), np.asarray(x, float))
    expected = np.array([np.nan if v is None else v for v in y], float)
    np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), expected)
    assert line.get_linestyle() == style
    assert to_rgba(line.get_color()) == to_rgba(colour)


# ------------------------------------------------------------------------------ error curves


def test_error_curves_are_each_runs_test_and_train_errors(tmp_path: Path, saved) -> None:
    """Per run (colour C<i>): test error solid with markers, train error dashed, per epoch; an
    epoch without evaluation is a gap."""
    results = {
        "ep": [
            {"epoch": 1, "train_error": 12.5, "test_error": 10.0},
            {"epoch": 2, "train_error": 6.25, "test_error": None},
            {"epoch": 3, "train_error": 3.0, "test_error": 2.5},
        ],
        "bptt": [
            {"epoch": 1, "train_error": 20.0, "test_error": 15.0},
            {"epoch": 2, "train_error": 8.0, "test_error": 7.5},
        ],
    }
    path = plots.plot_error_curves(results, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG
    (fig,) = saved
    (ax,) = fig.axes
    assert len(ax.lines) == 4
    for i, epochs in enumerate(results.values()):
        x = [e["epoch"] for e in epochs]
        test, train = ax.lines[2 * i], ax.lines[2 * i + 1]
        assert_curve(test, x, [e["test_error"] for e in epochs], "-", f"C{i}")
        assert test.get_marker() == "o"
        assert_curve(train, x, [e["train_error"] for e in epochs], "--", f"C{i}")
    assert legend_texts(ax) == ["ep test", "ep train", "bptt test", "bptt train"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("epoch", "error (%)", "log")
    assert_plain_log_labels(fig, ax, ["5", "10", "20"])


def test_table1_curves_are_one_panel_per_row_with_ep_and_bptt_per_seed(
    tmp_path: Path, saved
) -> None:
    """EP in C0 and BPTT in C1, a line per seed (dotted when partial), the published EP number
    as a dashed grey line, "not run" on an empty row and no panel beyond the rows."""
    panels = {
        "P-1h": {
            "ep": [(0, [1, 2, 3], [5.0, 3.0, 2.0], False), (1, [1, 2], [6.0, 4.0], True)],
            "bptt": [(0, [1, 2], [7.0, 5.0], False)],
        },
        "EB-1h": {"ep": [], "bptt": []},
    }
    plots.plot_table1_curves(panels, {"P-1h": 2.2}, tmp_path / "table1.png", {"P-1h": 10})
    (fig,) = saved
    assert len(fig.axes) == 3  # a row of 3 columns
    p1h, eb1h, spare = fig.axes
    assert [ax.get_visible() for ax in fig.axes] == [True, True, False]
    assert (p1h.get_title(), eb1h.get_title()) == ("P-1h", "EB-1h")
    ep0, ep1, bptt0, published = p1h.lines
    assert_curve(ep0, [1, 2, 3], [5.0, 3.0, 2.0], "-", "C0")
    assert_curve(ep1, [1, 2], [6.0, 4.0], ":", "C0")
    assert_curve(bptt0, [1, 2], [7.0, 5.0], "-", "C1")
    np.testing.assert_array_equal(published.get_ydata(), [2.2, 2.2])
    assert p1h.get_xlim() == (0, 11)  # to the 10 planned epochs: the partial seed has 8 to go
    assert published.get_linestyle() == "--" and to_rgba(published.get_color()) == to_rgba("0.4")
    assert legend_texts(p1h) == ["EP", "BPTT", "published EP"]
    assert (p1h.get_ylabel(), p1h.get_yscale()) == ("test error (%)", "log")
    assert_plain_log_labels(fig, p1h, ["2", "5"])
    assert len(eb1h.lines) == 0 and eb1h.get_legend() is None
    assert [t.get_text() for t in eb1h.texts] == ["not run"]
    assert list(eb1h.get_xticks()) == []


# ------------------------------------------------------------------------------------- GDU


def assert_pairs(ax: Axes, n: torch.Tensor, d: torch.Tensor, count: int) -> list[int]:
    """``ax`` draws ``count`` distinct entries ``j``, each as the BPTT curve ``n[:, j]`` (solid)
    then the EP curve ``d[:, j]`` (dashed) in one colour C<c>; returns the entries."""
    assert len(ax.lines) == 2 * count
    picks = []
    for c in range(count):
        solid, dashed = ax.lines[2 * c], ax.lines[2 * c + 1]
        (j,) = [j for j in range(n.shape[1]) if np.array_equal(solid.get_ydata(), n[:, j])]
        assert_curve(solid, range(len(n)), n[:, j].tolist(), "-", f"C{c}")
        assert_curve(dashed, range(len(n)), d[:, j].tolist(), "--", f"C{c}")
        picks.append(j)
    assert len(set(picks)) == count
    return picks


def distinct(K: int, *shape: int, offset: float = 0.0) -> torch.Tensor:
    """(K, *shape) of distinct values: every entry's curve is its own."""
    return torch.arange(K * int(np.prod(shape)), dtype=torch.float64).view(K, *shape) + offset


def test_gdu_neuron_figure_is_a_panel_per_layer_of_bptt_and_ep_curves() -> None:
    """Every unit of a layer with at most ``units``, ``units`` random ones of a larger; BPTT ``nS``
    solid, EP ``dS`` dashed (a different value from BPTT, so that a swap shows)."""
    K = 4
    nS = [distinct(K, 3), distinct(K, 2, 4, offset=100.0)]  # output: 3 units; s1: 8 units
    dS = [t + 0.5 for t in nS]
    fig = plots.gdu_neuron_figure(nS, dS, units=5, seed=0)
    out, hidden = fig.axes
    assert assert_pairs(out, nS[0], dS[0], 3) == [0, 1, 2]
    assert_pairs(hidden, nS[1].flatten(1), dS[1].flatten(1), 5)
    for i, ax in enumerate(fig.axes):
        assert ax.get_title() == f"$s^{i}$: $\\nabla^{{BPTT}}$ (solid), $-\\Delta^{{EP}}$ (dashed)"
        assert ax.get_xlabel() == "t"
    again = plots.gdu_neuron_figure(nS, dS, units=5, seed=0).axes[1]
    assert [line.get_ydata().tolist() for line in again.lines] == [
        line.get_ydata().tolist() for line in hidden.lines
    ]  # the seed fixes the drawn units


def test_gdu_neuron_figure_draws_every_layer_alike_wherever_the_output_is() -> None:
    """A Hopfield net's output is its last state and its first a query layer: a layer with more
    than ``units`` units gets a seeded random draw, whichever its place (not its first units)."""
    K = 4
    nS = [distinct(K, 2, 4), distinct(K, 3, offset=100.0)]  # query s0: 8 units; output s1: 3
    dS = [t + 0.5 for t in nS]
    query, out = plots.gdu_neuron_figure(nS, dS, units=5, seed=0).axes
    drawn = torch.randperm(8, generator=torch.Generator().manual_seed(0))[:5].tolist()
    assert assert_pairs(query, nS[0].flatten(1), dS[0].flatten(1), 5) == drawn
    assert assert_pairs(out, nS[1], dS[1], 3) == [0, 1, 2]


def test_gdu_synapse_figure_is_a_panel_per_weight_of_bptt_and_ep_curves() -> None:
    """Per weight, ``synapses`` random entries (all of a smaller one): instantaneous BPTT ``nT``
    solid, EP ``dT`` dashed; the panel names the weight."""
    K = 3
    nT = {"W01": distinct(K, 3, 4), "W1x": distinct(K, 2, 3, offset=100.0)}
    dT = {k: -v for k, v in nT.items()}
    fig = plots.gdu_synapse_figure(nT, dT, synapses=10, seed=0)
    w01, w1x = fig.axes
    assert_pairs(w01, nT["W01"].flatten(1), dT["W01"].flatten(1), 10)
    assert sorted(assert_pairs(w1x, nT["W1x"].flatten(1), dT["W1x"].flatten(1), 6)) == [*range(6)]
    assert w01.get_title() == "$W_{01}$: BPTT (solid), EP (dashed)"
    assert w1x.get_title() == "$W_{1x}$: BPTT (solid), EP (dashed)"


def test_gdu_figures_draw_the_instantaneous_weight_updates() -> None:
    """The GDU figures of a result whose cumulative ``NT``/``DT`` are the running sums of
    distinct per-step updates: the synapse panels draw those updates (``nT[t] = NT[t] -
    NT[t-1]``, ``nT[0] = NT[0]``; exact in float64 on integers), not the cumulative curves, and
    the neuron panels ``nS``/``dS``."""
    K = 3
    nT = {"W01": distinct(K, 2, 3), "W1x": distinct(K, 2, 2, offset=100.0)}
    dT = {k: v + 0.5 for k, v in nT.items()}
    nS, dS = [distinct(K, 2)], [distinct(K, 2, offset=0.25)]
    result = GDUResult(
        nS=nS,
        dS=dS,
        NT={k: v.cumsum(0) for k, v in nT.items()},
        DT={k: v.cumsum(0) for k, v in dT.items()},
    )
    rmse = {"neurons": {"s0": {"mean": 0.1, "std": 0.0}}, "weights": {}}
    figures = gdu_figures(result, rmse)
    assert list(figures) == ["gdu_neurons", "gdu_synapses", "gdu_rmse"]
    for ax, k in zip(figures["gdu_synapses"].axes, ("W01", "W1x"), strict=True):
        n, d = nT[k].flatten(1), dT[k].flatten(1)
        assert sorted(assert_pairs(ax, n, d, n.shape[1])) == [*range(n.shape[1])]
    (ax,) = figures["gdu_neurons"].axes
    assert assert_pairs(ax, nS[0], dS[0], 2) == [0, 1]


def test_rmse_bars_are_the_means_with_the_stds_as_error_bars() -> None:
    """A bar per neuron layer (C0) then per weight (C1): height the mean relative RMSE, error bar
    mean +- std, named s^i and W_ij."""
    rmse = {
        "neurons": {"s0": {"mean": 0.1, "std": 0.02}, "s1": {"mean": 0.3, "std": 0.05}},
        "weights": {"W01": {"mean": 0.02, "std": 0.01}, "W1x": {"mean": 0.5, "std": 0.1}},
    }
    fig = plots.rmse_bar_figure(rmse)
    (ax,) = fig.axes
    fig.canvas.draw()
    errorbars, bars = ax.containers
    assert bars.errorbar is errorbars
    means, stds = [0.1, 0.3, 0.02, 0.5], [0.02, 0.05, 0.01, 0.1]
    assert [b.get_height() for b in bars] == means
    colours = [to_rgba(b.get_facecolor()) for b in bars]
    assert colours == [to_rgba(c) for c in ("C0", "C0", "C1", "C1")]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == ["$s^{0}$", "$s^{1}$", "$W_{01}$", "$W_{1x}$"]
    (segments,) = [c.get_segments() for c in errorbars.lines[2]]
    segments = np.asarray(segments)  # (bars, 2 ends, xy)
    centres = [bar.get_x() + bar.get_width() / 2 for bar in bars]
    np.testing.assert_allclose(segments[:, :, 0], np.transpose([centres, centres]), rtol=1e-12)
    expected = np.transpose([np.subtract(means, stds), np.add(means, stds)])
    np.testing.assert_allclose(segments[:, :, 1], expected, rtol=1e-12)
    assert (ax.get_ylabel(), ax.get_yscale()) == ("relative RMSE", "log")


def test_rmse_bars_show_a_zero_and_name_the_projection_weights():
    """An RMSE of exactly 0 (a layer the K steps do not reach) has no bar on the log axis: it
    is written as "0" above its place, not left blank like a missing entry; with every mean 0
    the axis is linear (matplotlib drew a meaningless log axis). The Hopfield net's projection
    weight P0 is a weight ($P_{0}$, orange), not a neuron layer ($P^{0}$, blue)."""
    rmse = {
        "neurons": {"s0": {"mean": 0.1, "std": 0.02}, "s1": {"mean": 0.0, "std": 0.0}},
        "weights": {"P0": {"mean": 0.02, "std": 0.01}},
    }
    fig = plots.rmse_bar_figure(rmse)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["$s^{0}$", "$s^{1}$", "$P_{0}$"]
    bars = ax.containers[1]
    assert [to_rgba(b.get_facecolor()) for b in bars] == [to_rgba(c) for c in ("C0", "C0", "C1")]
    (zero,) = ax.texts
    assert (zero.get_text(), zero.get_position()[0]) == ("0", 1)
    assert ax.get_yscale() == "log"
    zeros = {group: {k: {"mean": 0.0, "std": 0.0} for k in v} for group, v in rmse.items()}
    (ax,) = plots.rmse_bar_figure(zeros).axes
    assert ax.get_yscale() == "linear" and [t.get_text() for t in ax.texts] == ["0"] * 3


def test_an_interrupted_figure_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """The figure is written beside its path and renamed: a failing write (a full disk, a
    Ctrl-C) left a truncated PNG where the report's figure had been."""
    path = tmp_path / "reproduction.png"
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    plots.save_figure(fig, path)
    before = path.read_bytes()

    def fail_midway(self, name, **kwargs):
        Path(name).write_bytes(before[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        plots.save_figure(Figure(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["reproduction.png"]


def test_an_interrupted_gdu_image_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """The GDU PNGs (``save_image``) are written beside and renamed too: before, a write cut
    short left a truncated PNG."""
    path = tmp_path / "gdu_rmse.png"
    plots.save_image(np.zeros((4, 4, 4), dtype=np.uint8), path)
    before = path.read_bytes()

    def fail_midway(name, image, **kwargs):
        Path(name).write_bytes(before[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(plots.plt, "imsave", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        plots.save_image(np.ones((4, 4, 4), dtype=np.uint8), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["gdu_rmse.png"]


def test_a_figure_path_without_a_suffix_is_a_png(tmp_path):
    """matplotlib's default format, as ``fig.savefig(path)`` wrote it (the temporary file's
    suffix would have named none: "Format '' is not supported")."""
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    plots.save_figure(fig, tmp_path / "curves")
    assert (tmp_path / "curves").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
