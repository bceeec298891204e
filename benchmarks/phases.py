"""Batched nudged phases: one EP step (rule + backward) with symmetric nudging relaxed as one
batch of 2B examples, against the same two phases relaxed one after the other and against
two-phase EP, on P-1h (784-512-10, batch 20, T 40, K 15) and the IMDB net (one Hopfield
projection, 100 tokens, FC 1000-40-2, batch 20, T 50, K 25; random inputs).

    python benchmarks/phases.py --out /tmp/phases.json [--seconds 5] [--threads 1] [--nets p1h]

Prints a markdown table (ms per step, median over windows) and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from eqprop_lightning.learning import EquilibriumProp, ep_surrogate
from eqprop_lightning.learning.phases import relax_with_previous
from eqprop_lightning.nets import HopfieldClassifier, PrototypicalFC


def sequential_symmetric(net, x, y, T: int, K: int, beta: float) -> torch.Tensor:
    """Symmetric EP with the +beta and -beta phases relaxed one after the other (the code
    before the batched phases)."""
    static = net.static_terms(x)
    with torch.no_grad():
        _, s_free = relax_with_previous(net, net.init_state(x), static, T)
        prev_pos, s_pos = relax_with_previous(net, s_free, static, K, beta, y)
        prev_neg, s_neg = relax_with_previous(net, s_free, static, K, -beta, y)
    return ep_surrogate(net, static, s_neg, s_pos, -beta, beta, (prev_neg, prev_pos))


def settings():
    torch.manual_seed(0)
    p1h = PrototypicalFC([10, 512, 784], "sigm")
    x_p = torch.rand(20, 784)
    imdb = HopfieldClassifier([100], [[0, 0]], [1000, 40, 2], attn_scale=300**-0.5)
    x_i = 0.1 * torch.randn(20, 100, 300)
    return {
        "p1h": (p1h, x_p, torch.eye(10)[torch.arange(20) % 10], 40, 15, 0.1),
        "imdb": (imdb, x_i, torch.eye(2)[torch.arange(20) % 2], 50, 25, 0.1),
    }


def steps(net, x, y, T: int, K: int, beta: float) -> dict:
    """One training step (the rule's objective, then backward) per variant."""
    objectives = {
        "two_phase": lambda: EquilibriumProp(T, K, beta)(net, x, y).objective,
        "symmetric_batched": lambda: EquilibriumProp(T, K, beta, "symmetric")(net, x, y).objective,
        "symmetric_sequential": lambda: sequential_symmetric(net, x, y, T, K, beta),
    }

    def step(objective) -> None:
        net.zero_grad()
        objective().backward()

    return {name: (lambda o=o: step(o)) for name, o in objectives.items()}


def time_step(step, seconds: float) -> float:
    """Median ms per call of ``step`` over 5 windows of ``seconds / 5``, after 3 warm-ups."""
    for _ in range(3):
        step()
    windows = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5 or n == 0:
            step()
            n += 1
        windows.append(1000 * (time.perf_counter() - start) / n)
    return statistics.median(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--nets", nargs="+", choices=["p1h", "imdb"], default=["p1h", "imdb"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name, setting in settings().items():
        if name not in args.nets:
            continue
        row = {rule: time_step(step, args.seconds) for rule, step in steps(*setting).items()}
        row["batched_vs_two_phase"] = row["symmetric_batched"] / row["two_phase"]
        row["sequential_vs_batched"] = row["symmetric_sequential"] / row["symmetric_batched"]
        results[name] = row
    results["meta"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": torch.multiprocessing.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(
        "| net | two-phase ms | symmetric batched ms | symmetric sequential ms | "
        "batched / two-phase | sequential / batched |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.nets:
        r = results[name]
        print(
            f"| {name} | {r['two_phase']:.2f} | {r['symmetric_batched']:.2f} | "
            f"{r['symmetric_sequential']:.2f} | {r['batched_vs_two_phase']:.2f} | "
            f"{r['sequential_vs_batched']:.2f} |"
        )


if __name__ == "__main__":
    main()
