"""Helpers for the tests against outputs recorded from the original code (``reference/``)."""

import os
from pathlib import Path

import pytest
import torch

from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC


def reference_dir() -> Path | None:
    """``$EQPROP_DATA_DIR/reference`` or ``../shared/data/reference`` beside the repository."""
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"]
    if os.environ.get("EQPROP_DATA_DIR"):
        candidates.insert(0, Path(os.environ["EQPROP_DATA_DIR"]) / "reference")
    return next((p for p in candidates if (p / "README.md").exists()), None)


REFERENCE = reference_dir()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason="reference fixtures not found")


def original_to_ours(state_dict: dict) -> dict:
    """The original's ``w.{2i}.*`` is ``weights.{i}.*`` here."""
    out = {}
    for key, value in state_dict.items():
        _, index, field = key.split(".")
        out[f"weights.{int(index) // 2}.{field}"] = value
    return out


def build_net(args: dict):
    """The net with the original's options (clamp on unless ``--no-clamp``, dt as recorded)."""
    if args["discrete"]:
        return PrototypicalFC(args["size_tab"], args["activation_function"], dt=args["dt"])
    return EnergyBasedFC(
        args["size_tab"], args["activation_function"], dt=args["dt"], clamp=not args["no_clamp"]
    )


def train_like_the_original(net, fixture: dict) -> None:
    """Seed-1 training on the fixture's batches: its rule, SGD with its ``lr_tab``."""
    from eqprop_lightning.learning import make_rule

    args = fixture["args"]
    algorithm = {"eqprop": "ep", "BPTT": "bptt"}[fixture["method"]]
    beta = args["beta"] if algorithm == "ep" else None  # the original passes BPTT its beta
    rule = make_rule(algorithm, args["T"], args["Kmax"], beta)
    groups = zip(net.synapse_groups(), args["lr_tab"], strict=True)
    opt = torch.optim.SGD([{"params": list(g.parameters()), "lr": lr} for g, lr in groups])
    for x, y in zip(fixture["x"], fixture["y"], strict=True):
        opt.zero_grad()
        rule(net, x, y).objective.backward()
        opt.step()


def fit_one_epoch(model, batches: list, val_batches: list | None = None):
    """One epoch of ``model`` under a quiet CPU Trainer on ready-made batches."""
    import lightning as L
    from torch.utils.data import DataLoader

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if val_batches else 0,
    )
    val = DataLoader(val_batches, batch_size=None) if val_batches else None
    trainer.fit(model, DataLoader(batches, batch_size=None), val)
    return trainer


def free_steps_by_hand(net, x: torch.Tensor, T: int) -> tuple[list, list]:
    """``s(T - 1)`` and ``s(T)``: ``T`` free steps ``s <- F(x, s, theta)`` of ``net.step`` from
    ``s = 0`` (one (B, n) zero tensor per state layer, output first), outside any rule or module."""
    with torch.no_grad():
        static = net.static_terms(x)
        s = [x.new_zeros(len(x), n) for n in net.size_tab[:-1]]
        previous = s
        for _ in range(T):
            previous, s = s, net.step(s, static, 0.0, None)
    return previous, s


def sgd_step_by_hand(net, lrs: list[float]) -> None:
    """``theta <- theta - lr * dtheta`` per synapse group (output first), then the grads cleared:
    the module's SGD step without the optimizer."""
    with torch.no_grad():
        for group, lr in zip(net.synapse_groups(), lrs, strict=True):
            for p in group.parameters():
                p -= lr * p.grad
                p.grad = None
