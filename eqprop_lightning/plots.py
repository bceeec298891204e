"""Figures (matplotlib, Agg backend): error curves of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
