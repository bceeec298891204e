"""The GDU analysis of a net on a batch, and the sign-agreement "recipe" over several batches:
run, save (tensors, JSON, figures, TensorBoard) and summarise. Used by ``eqprop gdu``,
``eqprop recipe`` (:mod:`eqprop_lightning.analysis_commands`) and the GDU callback."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eqprop_lightning.io import write_atomic, write_json_atomic, write_text_atomic
from eqprop_lightning.learning import (
    DivergenceError,
    EquilibriumProp,
    GradientEstimator,
    locate_nonfinite,
)
from eqprop_lightning.learning.gdu import (
    GDUResult,
    estimate_errors,
    gdu,
    rmse_table,
    sign_agreement,
)
from eqprop_lightning.nets.protocol import Net
from eqprop_lightning.plots import (
    gdu_neuron_figure,
    gdu_synapse_figure,
    render,
    rmse_bar_figure,
    save_image,
)


def gdu_figures(result: GDUResult, rmse: dict) -> dict[str, Any]:
    """The three GDU figures: neuron curves, synapse curves, RMSE bars."""
    return {
        "gdu_neurons": gdu_neuron_figure(result.nS, result.dS),
        "gdu_synapses": gdu_synapse_figure(result.nT, result.dT),
        "gdu_rmse": rmse_bar_figure(rmse),
    }


def analyse(
    net: Net,
    x: Tensor,
    y: Tensor,
    T: int,
    K: int,
    beta: float,
    symmetric: bool = False,
    rule: GradientEstimator | None = None,
) -> tuple[GDUResult, dict]:
    """The GDU quantities on ``(x, y)`` and their JSON summary (``rmse``: the RMSE table). With
    ``rule`` (any learning rule but continual EP, which has no estimate at fixed weights), the
    summary's ``estimates`` holds its final estimate's relative error per weight against BPTT and
    RBP (:func:`~eqprop_lightning.learning.gdu.estimate_errors`), and a symmetric EP rule gives
    symmetric per-step curves."""
    symmetric = nudges_symmetrically(symmetric, rule)
    start = time.perf_counter()
    result = gdu(net, x, y, T, K, beta, symmetric)
    curves = [*result.nS, *result.dS, *result.NT.values(), *result.DT.values()]
    if not all(torch.isfinite(t).all() for t in curves):
        nudges = (beta, -beta) if symmetric else (beta,)
        where = locate_nonfinite(net, x, y, T, K, nudges) or "its per-step curves"
        raise DivergenceError(f"the GDU analysis is not finite: {where}")
    summary = {
        "rmse": rmse_table(result),
        "sign_agreement": sign_agreement(result.NT, result.DT),
        "seconds": round(time.perf_counter() - start, 3),
        "setting": setting(T, K, beta, symmetric, x),
    }
    if rule is not None and not rule.continual:
        summary["estimates"] = {"rule": rule_name(rule), **estimate_errors(net, x, y, rule)}
    return result, summary


def nudges_symmetrically(symmetric: bool, rule: GradientEstimator | None) -> bool:
    """Whether the per-step EP curves are symmetric (the ``+beta`` phase against the ``-beta``
    one, over ``2 beta``): asked for (``symmetric``) or the rule's nudging (the others are
    compared with positive EP)."""
    return symmetric or getattr(rule, "nudging", None) == "symmetric"


def setting(T: int, K: int, beta: float, symmetric: bool, x: Tensor) -> dict[str, Any]:
    """What an analysis ran with, for its JSON: ``T``, ``K``, ``beta``, ``symmetric``, the batch
    size and the dtype of batch ``x``."""
    return {
        "T": T,
        "K": K,
        "beta": beta,
        "symmetric": symmetric,
        "batch_size": x.shape[0],
        "dtype": dtype_name(x.dtype),
    }


def dtype_name(dtype: torch.dtype) -> str:
    """``float32``, ``float64``, ..."""
    return str(dtype).removeprefix("torch.")


def write_gdu(analysis: tuple[GDUResult, dict], x: Tensor, y: Tensor, out_dir: Path) -> dict:
    """Writes an :func:`analyse` result on ``(x, y)`` into ``out_dir`` (``gdu.pt``,
    ``gdu.json``, PNG figures and TensorBoard events) and returns its JSON summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result, summary = analysis
    # nT and dT are the step differences of NT and DT (GDUResult.nT / .dT); not stored twice
    tensors = {"nS": result.nS, "dS": result.dS, "NT": result.NT, "DT": result.DT, "x": x, "y": y}
    write_atomic(out_dir / "gdu.pt", lambda name: torch.save(tensors, name))
    write_json_atomic(out_dir / "gdu.json", summary)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out_dir)) as writer:
        for name, fig in gdu_figures(result, summary["rmse"]).items():
            image = render(fig)  # drawn once for both the PNG and TensorBoard
            save_image(image, out_dir / f"{name}.png")
            writer.add_image(name, image, dataformats="HWC")
    return summary


def summary_metrics(summary: dict) -> dict[str, float]:
    """The summary's scalars for a logger: ``gdu/rmse/<s0|W01|...>`` (mean relative RMSE),
    ``gdu/sign_agreement/<W>`` (percent) and ``gdu/estimate_error/<bptt|rbp>/<W>`` (where
    defined)."""
    metrics = {
        f"gdu/rmse/{name}": v["mean"]
        for group in summary["rmse"].values()
        for name, v in group.items()
    }
    for name, v in summary["sign_agreement"].items():
        metrics[f"gdu/sign_agreement/{name}"] = v["total"]
    for reference in ("bptt", "rbp"):
        for name, error in summary.get("estimates", {}).get(reference, {}).items():
            if error is not None:
                metrics[f"gdu/estimate_error/{reference}/{name}"] = error
    return metrics


def rule_name(rule: GradientEstimator) -> str:
    """``ep/<nudging>`` for EP, else the rule's class name (also for a subclass of EP's)."""
    return f"ep/{rule.nudging}" if type(rule) is EquilibriumProp else type(rule).__name__


def rmse_report(summary: dict) -> str:
    """Markdown table of the mean (std) relative RMSE per layer and weight, and the rule's
    relative error against BPTT and RBP per weight when the summary has ``estimates``
    (*undefined* where the reference gradient is 0 and the estimate is not)."""
    lines = ["| quantity | mean RMSE | std |", "|---|---|---|"]
    for group in ("neurons", "weights"):
        for name, v in summary["rmse"][group].items():
            lines.append(f"| {name} | {v['mean']:.4f} | {v['std']:.4f} |")
    if "estimates" in summary:
        est = summary["estimates"]
        lines += ["", f"| {est['rule']}: weight | error vs BPTT | error vs RBP |", "|---|---|---|"]
        for name in est["bptt"]:
            lines.append(f"| {name} | {_error(est['bptt'][name])} | {_error(est['rbp'][name])} |")
    return "\n".join(lines)


def _error(value: float | None) -> str:
    return "undefined (reference 0)" if value is None else f"{value:.3g}"


def run_recipe(
    net: Net,
    batches: Iterable[tuple[Tensor, Tensor]],
    T: int,
    K: int,
    beta: float,
    symmetric: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """Sign agreement of ``NT[-1]`` and ``DT[-1]`` per weight over several batches:
    ``{weight: {"same_sign" | "both_zero" | "total": {"mean", "std"}}}`` (percent), EP's
    updates positive or ``symmetric``. Unlike the original, the stds are sample stds (``n - 1``;
    numpy's ``n`` there), and the std of ``total`` is the std of the totals, not the sum of the
    two stds."""
    results = (gdu(net, x, y, T, K, beta, symmetric) for x, y in batches)
    per_batch = [sign_agreement(r.NT, r.DT) for r in results]
    out = {}
    for weight in per_batch[0]:
        out[weight] = {}
        for field in ("same_sign", "both_zero", "total"):
            values = [b[weight][field] for b in per_batch]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[weight][field] = {"mean": statistics.fmean(values), "std": std}
    return out


def recipe_report(recipe: dict) -> str:
    lines = ["| weight | same sign % | both zero % | total % |", "|---|---|---|---|"]
    for weight, v in recipe.items():
        cells = [
            f"{v[f]['mean']:.1f} ± {v[f]['std']:.1f}" for f in ("same_sign", "both_zero", "total")
        ]
        lines.append(f"| {weight} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_recipe(recipe: dict, out_dir: Path, batches: int, setting: dict[str, Any]) -> Path:
    """Writes a :func:`run_recipe` result over ``batches`` batches, run with ``setting``
    (:func:`setting`), into ``out_dir`` (``recipe.json``, ``recipe.md``) and returns the
    JSON's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "recipe.json"
    payload = {"batches": batches, "setting": setting, "sign_agreement": recipe}
    write_json_atomic(path, payload)
    write_text_atomic(out_dir / "recipe.md", recipe_report(recipe) + "\n")
    return path
