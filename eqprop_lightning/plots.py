"""Figures (matplotlib, Agg backend): error curves of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_error_curves(results: dict[str, list[dict]], path: Path) -> Path:
    """Train (dashed) and test (solid) error in percent per epoch, one colour per run."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, epochs), colour in zip(
        results.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ):
        x = [e["epoch"] for e in epochs]
        ax.plot(x, [e.get("test_error") for e in epochs], "-o", color=colour, label=f"{name} test")
        ax.plot(
            x, [e.get("train_error") for e in epochs], "--", color=colour, label=f"{name} train"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
