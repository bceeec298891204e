"""Batched nudged phases: one EP step (rule + backward) with symmetric nudging relaxed as one
batch of 2B examples, against the same two phases relaxed one after the other and against
two-phase EP, on P-1h (784-512-10, batch 20, T 40, K 15) and the IMDB net (one Hopfield
projection, 100 tokens, FC 1000-40-2, batch 20, T 50, K 25; random inputs).

    python benchmarks/phases.py --out /tmp/phases.json [--seconds 5] [--threads 1] [--nets p1h]

Prints a markdown table (ms per step, median over 5 windows after 3 warm-ups, wall clock) and
writes the numbers as JSON (``<net>``: ms per variant and the two ratios; ``meta``).
"""

from __future__ import annotations

import torch
from common import median_time, meta_start, step_parser, write_step_report

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


def main() -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--nets", nargs="+", choices=["p1h", "imdb"], default=["p1h", "imdb"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start, results = meta_start(), {}
    for name, setting in settings().items():
        if name not in args.nets:
            continue
        row = {
            rule: 1e3 * median_time(step, args.seconds) for rule, step in steps(*setting).items()
        }
        row["batched_vs_two_phase"] = row["symmetric_batched"] / row["two_phase"]
        row["sequential_vs_batched"] = row["symmetric_sequential"] / row["symmetric_batched"]
        results[name] = row
    write_step_report(args, start, results, torch.get_num_threads())
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
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
