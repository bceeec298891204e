"""Figures (matplotlib, Agg backend): error curves of training runs and the GDU comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import Tensor

from eqprop_lightning.io import write_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


def log_error_axis(ax: plt.Axes) -> None:
    """A log-scaled error axis labelled in plain numbers at 1, 2 and 5 times the powers of ten
    (``0.5, 1, 2, 5``), not ``5 x 10^-1``."""
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)


def plot_error_curves(results: dict[str, list[dict]], path: Path) -> Path:
    """Train (dashed) and test (solid) error in percent per epoch, one colour per run."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, epochs) in enumerate(results.items()):
        x = [e["epoch"] for e in epochs]
        test, train = ([e.get(k) for e in epochs] for k in ("test_error", "train_error"))
        ax.plot(x, test, "-o", color=f"C{i}", label=f"{name} test")
        ax.plot(x, train, "--", color=f"C{i}", label=f"{name} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    log_error_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _curves_figure(panels: list[tuple[str, Tensor, Tensor, list[int]]]) -> plt.Figure:
    """One panel per ``(title, bptt, ep, entries)``: each entry's BPTT curve solid and EP curve
    dashed (same colour) over ``t``; ``bptt``, ``ep``: (K, entries)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for (title, n, d, picks), ax in zip(panels, axes[0], strict=True):
        for c, j in enumerate(picks):
            ax.plot(n[:, j], "-", color=f"C{c}")
            ax.plot(d[:, j], "--", color=f"C{c}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("t")
    fig.tight_layout()
    return fig


def gdu_neuron_figure(nS: list, dS: list, units: int = 5, seed: int = 0) -> plt.Figure:
    """Per layer, ``units`` neurons: BPTT ``nS`` (solid) against EP ``dS`` (dashed) over ``t``;
    every unit of a layer that has at most ``units``, else ``units`` drawn at random with ``seed``
    (whichever layer is the output: the first for the layered nets, the last for the Hopfield)."""
    gen = torch.Generator().manual_seed(seed)
    panels = []
    for i, (n, d) in enumerate(zip(nS, dS, strict=True)):
        n, d = n.flatten(1), d.flatten(1)  # (K, units of layer i)
        size = n.shape[1]
        picks = range(size) if size <= units else torch.randperm(size, generator=gen)[:units]
        title = f"$s^{i}$: $\\nabla^{{BPTT}}$ (solid), $-\\Delta^{{EP}}$ (dashed)"
        panels.append((title, n, d, list(picks)))
    return _curves_figure(panels)


def tex_label(key: str, neuron: bool = False) -> str:
    """A neuron layer with a superscript (``s0``: $s^{0}$), a weight with a subscript (``W01``:
    $W_{01}$, ``P0``: $P_{0}$)."""
    return f"${key[0]}^{{{key[1:]}}}$" if neuron else f"${key[0]}_{{{key[1:]}}}$"


def gdu_synapse_figure(nT: dict, dT: dict, synapses: int = 10, seed: int = 0) -> plt.Figure:
    """Per weight, ``synapses`` random entries: instantaneous BPTT ``nT`` (solid) against EP
    ``dT`` (dashed) over ``t``."""
    gen = torch.Generator().manual_seed(seed)
    panels = []
    for name, n in nT.items():
        n, d = n.flatten(1), dT[name].flatten(1)  # (K, entries)
        picks = torch.randperm(n.shape[1], generator=gen)[:synapses].tolist()
        panels.append((f"{tex_label(name)}: BPTT (solid), EP (dashed)", n, d, picks))
    return _curves_figure(panels)


def rmse_bar_figure(rmse: dict) -> plt.Figure:
    """Bars of the mean relative RMSE (std as error bars) per neuron layer and per weight, on a
    log axis (linear where every mean is 0); a mean of exactly 0 is written "0"."""
    neurons = rmse["neurons"]
    entries = [*neurons.items(), *rmse["weights"].items()]
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(entries), 3.2))
    names = [tex_label(k, neuron=k in neurons) for k, _ in entries]
    means = [v["mean"] for _, v in entries]
    ax.bar(
        names,
        means,
        yerr=[v["std"] for _, v in entries],
        color=["C0" if k in neurons else "C1" for k, _ in entries],
        capsize=3,
    )
    for i, mean in enumerate(means):
        if mean == 0:  # no bar on a log axis: a layer the K steps do not reach
            ax.text(i, 0.02, "0", transform=ax.get_xaxis_transform(), ha="center")
    ax.set_ylabel("relative RMSE")
    if any(mean > 0 for mean in means):
        ax.set_yscale("log")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def render(fig: plt.Figure) -> np.ndarray:
    """Draw ``fig`` once and close it: an (H, W, 4) uint8 RGBA image."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


def save_image(image: np.ndarray, path: Path) -> Path:
    """Write a rendered (H, W, 4) image as a PNG, atomically."""
    write_atomic(Path(path), lambda name: plt.imsave(name, image, format="png"))
    return path


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (the format of its suffix) atomically, then close it."""
    path = Path(path)
    try:
        form = path.suffix[1:] or plt.rcParams["savefig.format"]  # the temporary name's is .tmp
        write_atomic(path, lambda name: fig.savefig(name, dpi=120, format=form))
    finally:
        plt.close(fig)
    return path


def plot_table1_curves(
    panels: dict[str, dict[str, list[tuple]]],
    published: dict[str, float],
    path: Path,
    planned: dict[str, int] | None = None,
) -> Path:
    """One panel per Table 1 row: test error (%) per epoch, EP (C0) and BPTT (C1), one thin line
    per seed ``(seed, epochs, errors, partial)``, dotted when partial; the published EP number
    as a dashed grey line where one exists; the epoch axis of a row in ``planned`` runs to its
    planned epochs, so that a partial run shows how far it has to go."""
    planned = planned or {}
    names = list(panels)
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for i, (alg, runs) in enumerate(panels[name].items()):
            for j, (_seed, x, y, partial) in enumerate(runs):
                label = alg.upper() if j == 0 else None
                ax.plot(x, y, ":" if partial else "-", lw=0.9, color=f"C{i}", label=label)
        if name in published:
            ax.axhline(published[name], ls="--", color="0.4", lw=0.8, label="published EP")
        ax.set_title(name, fontsize=10)
        if name in planned:
            ax.set_xlim(0, planned[name] + 1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        log_error_axis(ax)
        ax.grid(True, which="both", alpha=0.3)
        if not any(panels[name].values()):
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])  # no epochs to mark
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_figure(fig, path)
