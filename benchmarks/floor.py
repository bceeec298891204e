"""How fast a P-1h EP training step can be on this CPU: the step's unavoidable work timed alone,
beside our eager step and (``--original PATH``) the original's step, in one run.

A P-1h EP step (batch 20, T 40, K 15) is ``T + K`` relaxation steps of two small products and two
sigmoids, the input term ``W x`` and its weight gradient ``s^T x`` (two 20 x 784 x 512
products), and the SGD update. The floor adds:

* ``relaxation``: the ``T + K`` steps compiled by inductor with ``cpp_wrapper`` (the kernels
  called from C++: no Python or dispatcher between them), without autograd;
* ``input products``: ``W x`` and ``s^T x``;
* ``sgd update``: the optimizer step on gradients of the weights' shapes (made once, outside the
  timed part: a step's gradients come from ``backward``).

Everything else (autograd's graph, the primitive, Lightning) is overhead a step could shed in
principle. ``original / floor`` is the most our step could be faster than the original's on this
machine; ``--original`` runs ``original.py`` (a fresh process, same clock, one thread:
``OMP_NUM_THREADS=1``).

    OMP_NUM_THREADS=1 python benchmarks/floor.py --out floor.json --original /path/to/checkout
"""

from __future__ import annotations

import argparse
import os

import torch
from common import (
    BATCH,
    add_original_argument,
    clock,
    median_time,
    meta_start,
    out_file,
    positive_float,
    run_meta,
    write_json,
)
from throughput import bench, get_batch, load, original

from eqprop_lightning.learning.compiled import compile_dynamics
from eqprop_lightning.learning.phases import free_phase


def floor_parts(seconds: float, now) -> dict[str, float]:
    """Milliseconds of each part of the floor (module docstring) for P-1h."""
    net, hp = load("p1h")
    x, y, _ = get_batch(net, synthetic=False)
    steps = hp["T"] + hp["K"]
    for p in net.parameters():
        p.requires_grad_(False)
    static = net.static_terms(x)

    def relax() -> None:
        free_phase(net, static, net.init_state(x), steps)

    eager = median_time(relax, seconds, now)
    compile_dynamics(net, True)
    with torch._inductor.config.patch(cpp_wrapper=True):
        relax()  # compiles
    compiled = median_time(relax, seconds, now)
    compile_dynamics(net, False)
    w_in = net.weights[-1].weight  # (512, 784)
    s = torch.rand(BATCH, w_in.shape[0])
    products = median_time(lambda: (x @ w_in.t(), s.t() @ x), seconds, now)
    params = [torch.zeros_like(p, requires_grad=True) for p in net.parameters()]
    for p in params:
        p.grad = torch.ones_like(p)
    sgd = median_time(torch.optim.SGD(params, lr=0.01).step, seconds, now)
    ms = {"relaxation, eager": eager, "relaxation, C++ (cpp_wrapper)": compiled}
    ms |= {"input products": products, "sgd update": sgd}
    return {k: 1e3 * v for k, v in ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=out_file, required=True)
    parser.add_argument(
        "--seconds", type=positive_float, default=10.0, help="timing budget per part (> 0)"
    )
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    add_original_argument(parser, "checkout of the original code: also time its step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for original.py's process
    start, now = meta_start(), clock(args.clock)
    parts = floor_parts(args.seconds, now)
    floor = sum(v for k, v in parts.items() if k != "relaxation, eager")
    ours = bench("p1h", "ep", False, args.seconds, False, now, "cpu")["step_ms"]
    result = {"parts_ms": parts, "floor_ms": floor, "ours_eager_ms": ours}
    if args.original:
        orig = original(args.original, "p1h", "ep", args.seconds, args.clock)["step_ms"]
        result |= {"original_ms": orig, "ours_over_original": orig / ours}
        result |= {"floor_over_original": orig / floor}
    threads = torch.get_num_threads()
    result["meta"] = run_meta(start, clock=args.clock, device="cpu", threads=threads)
    result["meta"]["seconds"] = args.seconds
    for name, value in [*parts.items(), ("floor (sum but eager)", floor), ("ours, eager", ours)]:
        print(f"{name:<32} {value:8.3f} ms")
    if args.original:
        print(f"{'original':<32} {result['original_ms']:8.3f} ms")
        print(f"original / ours  {result['ours_over_original']:.1f}x")
        print(f"original / floor {result['floor_over_original']:.1f}x (the most a step can gain)")
    write_json(args.out, result)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
