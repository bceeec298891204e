"""Holomorphic EP's complex relaxation: one training step (rule + backward) with N = 4 complex
nudges as the code runs it (complex sigmoid/tanh in real arithmetic, the free phase's static
terms cast to complex), against torch's complex functions, against those and the static terms
computed from the complex weights (once per batch) and against two-phase EP, on P-1h
(784-512-10 sigm, batch 20, T 40, K 15, beta 0.1) and a tanh EB net without clamp (784-512-10,
dt 0.2, batch 20, T 100, K 12, beta 0.5; random inputs).

    python benchmarks/holomorphic.py --out /tmp/holomorphic.json [--seconds 5] [--threads 1]

Prints a markdown table (ms per step, median over 5 windows after 3 warm-ups, wall clock) and
writes the numbers as JSON (``<net>``: ms per variant and ``static_in_complex_vs_holomorphic``;
``meta``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from common import median_time, meta_start, step_parser, write_step_report
from torch import nn
from torch.func import functional_call

from eqprop_lightning.learning import EquilibriumProp
from eqprop_lightning.learning.ep import _NudgedPrimitives
from eqprop_lightning.learning.phases import free_phase
from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC

TORCH_COMPLEX = {"sigm": torch.sigmoid, "tanh": torch.tanh}
VARIANTS = ("two_phase", "holomorphic", "torch_functions", "static_in_complex")


@contextmanager
def torch_functions(net):
    """The net's activation computed by torch's own (complex) function."""
    rho = net.rho
    ours = rho.g
    object.__setattr__(rho, "g", TORCH_COMPLEX[rho.name])
    try:
        yield
    finally:
        object.__setattr__(rho, "g", ours)


class _StaticInComplex(nn.Module):
    """The nudged phases with the static terms computed from the (complex) weights."""

    def __init__(self, net) -> None:
        super().__init__()
        self.phases = _NudgedPrimitives(net)

    def forward(self, x, y, s_free, K: int, betas) -> torch.Tensor:
        return self.phases(y, s_free, self.phases.net.static_terms(x), K, betas)


def static_in_complex(net, x, y, rule: EquilibriumProp) -> torch.Tensor:
    """Holomorphic EP with torch's complex functions and the static terms computed from the
    complex weights."""
    nudges = rule.nudges()
    with torch.no_grad():
        _, s_free = free_phase(net, net.static_terms(x), net.init_state(x), rule.T)
    dtype = (x.new_zeros(()) * 1j).dtype
    module = _StaticInComplex(net)
    weights = {f"phases.net.{k}": p.to(dtype) for k, p in net.named_parameters()}
    args = (x.to(dtype), y.to(dtype), [t.to(dtype) for t in s_free], rule.K, nudges.betas)
    with torch_functions(net):
        phis = functional_call(module, weights, args)
    total = sum(c * phi for c, phi in zip(nudges.coefs, phis, strict=True))
    return -torch.real(total) / net.beta_scale


def settings():
    torch.manual_seed(0)
    x = torch.rand(20, 784)
    y = torch.eye(10)[torch.arange(20) % 10]
    return {
        "p1h": (PrototypicalFC([10, 512, 784], "sigm"), x, y, 40, 15, 0.1),
        "eb_tanh": (EnergyBasedFC([10, 512, 784], "tanh", clamp=False), x, y, 100, 12, 0.5),
    }


def steps(net, x, y, T: int, K: int, beta: float) -> dict:
    """One training step (the objective, then backward) per variant."""
    holomorphic = EquilibriumProp(T, K, beta, "holomorphic", 4)

    def with_torch_functions():
        with torch_functions(net):
            return holomorphic(net, x, y).objective

    objectives = {
        "two_phase": lambda: EquilibriumProp(T, K, beta)(net, x, y).objective,
        "holomorphic": lambda: holomorphic(net, x, y).objective,
        "torch_functions": with_torch_functions,
        "static_in_complex": lambda: static_in_complex(net, x, y, holomorphic),
    }

    def step(objective) -> None:
        net.zero_grad()
        objective().backward()

    return {name: (lambda o=o: step(o)) for name, o in objectives.items()}


def check_same_estimates(net, variants: dict) -> None:
    """The holomorphic variants compute one estimate (to float32 rounding): else the timings
    would compare different work."""
    grads = {}
    for name in VARIANTS[1:]:
        variants[name]()
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters()])
    ref = grads["holomorphic"]
    for name, g in grads.items():
        if (error := ((g - ref).norm() / ref.norm()).item()) > 1e-4:
            raise SystemExit(f"{name}'s estimate differs from holomorphic's by {error:.1e}")


def main() -> None:
    parser = step_parser(__doc__)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start, results = meta_start(), {}
    for name, setting in settings().items():
        variants = steps(*setting)
        check_same_estimates(setting[0], variants)
        row = {v: 1e3 * median_time(step, args.seconds) for v, step in variants.items()}
        row["static_in_complex_vs_holomorphic"] = row["static_in_complex"] / row["holomorphic"]
        results[name] = row
    write_step_report(args, start, results, torch.get_num_threads())
    print(
        "| net | "
        + " | ".join(f"{v} ms" for v in VARIANTS)
        + " | static_in_complex / holomorphic |"
    )
    print("|---" * (len(VARIANTS) + 2) + "|")
    for name in settings():
        r = results[name]
        cells = " | ".join(f"{r[v]:.1f}" for v in VARIANTS)
        print(f"| {name} | {cells} | {r['static_in_complex_vs_holomorphic']:.2f} |")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
