"""Cost of the sequence models at the seed README's full sizes: seconds per training step, peak
memory and the extrapolated seconds per epoch, for three-phase EP and BPTT.

Settings (read from ``configs/{imdb,snli}/ep.yaml``: net, T, K, beta, learning rates, batch):
IMDB one projection, 600 tokens, FC 1000-40-2, batch 100, T 50, K 25; SNLI four projections,
25 + 25 tokens, FC 400-3, batch 200, T 60, K 30; 300-d embeddings. The inputs are synthetic
(normal, std 0.13 per component, about word2vec's; one-hot random labels): the cost of a step
does not depend on the values.

Each (setting, rule) runs in its own subprocess, so that its peak resident memory
(``ru_maxrss``) is its own: ``rss_before_mb`` is the process's peak resident set (host memory)
so far after building the net, the optimizer and one batch, ``peak_memory_mb`` the peak after the
steps (host memory on a CPU; on a GPU ``torch.cuda.max_memory_allocated``, GPU memory).
Both the wall time and the process's CPU time are recorded; with one thread on a CPU the
extrapolation uses the CPU time (the cost on an idle core: on a shared machine the wall time also
counts the waits for a core), else the wall time (``meta.clock``). On CUDA one untimed training
step (CUDA's and cuBLAS's set-up) precedes the timed ones.
A training step is the rule (EP: T free + K nudged at +beta + K at -beta; BPTT: T - K untracked
steps, K tracked), ``backward`` and an Adam step; ``eval_batch_s`` times the free phase of one
batch (the prediction, as in evaluation). The FLOPs of a step and of an evaluation batch
(``torch.utils.flop_counter``: matrix products only) are counted on batches of 2 and 4 and
extrapolated linearly to the full batch; ``--gpu-tflops`` turns them into an *estimate* of a
GPU's seconds per step and per evaluation batch (the same free phase for both rules), not a
measurement. An epoch: ``ceil(train / batch)`` steps plus ``ceil(test / batch)`` evaluation
batches (IMDB 25,000 train and 25,000 test reviews; SNLI 540,000 train pairs, the first 540,000
rows that the original reads, less the few labelled '-', and 9,824 test pairs).

    OMP_NUM_THREADS=1 python benchmarks/sequence.py --out sequence.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from common import (
    ROOT,
    device,
    eqprop_cli,
    meta_start,
    out_file,
    positive_float,
    positive_int,
    run_checked,
    run_meta,
    write_json,
)

from eqprop_lightning.learning import EquilibriumProp, TruncatedBPTT, free_phase

SETTINGS = {  # config, training and test examples per epoch
    "imdb": ("configs/imdb/ep.yaml", 25_000, 25_000),
    "snli": ("configs/snli/ep.yaml", 540_000, 9_824),  # train: at most, see above
}
RULES = ("ep", "bptt")
EMBED_STD = 0.13
ROW = "{:<10} {:>6} {:>10} {:>10} {:>11} {:>12} {:>12} {:>12}"


def load_setting(name: str) -> tuple[dict, torch.nn.Module]:
    """The config's T, K, beta, learning rates and batch size, resolved by the ``eqprop``
    parser (so that includes and overrides apply), and its net."""
    path, n_train, n_test = SETTINGS[name]
    cli = eqprop_cli(f"--config={ROOT / path}")
    m = cli.config.model
    setting = dict(config=path, T=m.T, K=m.K, beta=m.beta, lrs=list(m.lrs))
    setting |= dict(batch=cli.config.data.init_args.batch_size, n_train=n_train, n_test=n_test)
    return setting, cli.model.net


def build(setting: dict, net: torch.nn.Module, rule_name: str, batch: int, device: str) -> tuple:
    """Rule, Adam with one learning rate per synapse group, one synthetic batch."""
    T, K = setting["T"], setting["K"]
    if rule_name == "ep":  # three-phase EP, nudged at +beta and -beta
        rule = EquilibriumProp(T, K, setting["beta"], nudging="symmetric")
    else:
        rule = TruncatedBPTT(T, K)
    groups = zip(net.synapse_groups(), setting["lrs"], strict=True)
    opt = torch.optim.Adam([{"params": list(g.parameters()), "lr": lr} for g, lr in groups])
    g = torch.Generator().manual_seed(0)
    x = EMBED_STD * torch.randn(batch, *net.example_shape, generator=g)  # (B, L, 300)
    labels = torch.randint(net.num_classes, (batch,), generator=g)
    y = torch.nn.functional.one_hot(labels, net.num_classes).float()
    return rule, opt, x.to(device), y.to(device)


def train_step(net, rule, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    estimate = rule(net, x, y)
    opt.zero_grad()
    estimate.objective.backward()
    opt.step()


def eval_batch(net, x: torch.Tensor, T: int) -> None:
    """The free phase of one batch: the prediction, as in evaluation."""
    with torch.no_grad():
        free_phase(net, net.static_terms(x), net.init_state(x), T)


def flops(setting: dict, net: torch.nn.Module, rule_name: str) -> tuple[float, float]:
    """Matrix-product FLOPs of one training step and of one evaluation batch at the full batch,
    extrapolated linearly from batches of 2 and 4 (every product here is linear in the batch
    size)."""
    from torch.utils.flop_counter import FlopCounterMode

    steps, evals = [], []
    for b in (2, 4):
        rule, opt, x, y = build(setting, net, rule_name, b, "cpu")
        with FlopCounterMode(display=False) as counter:
            train_step(net, rule, opt, x, y)
        steps.append(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            eval_batch(net, x, setting["T"])
        evals.append(counter.get_total_flops())
    return tuple(c[0] + (setting["batch"] - 2) * (c[1] - c[0]) / 2 for c in (steps, evals))


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(name: str, rule_name: str, steps: int, device: str, count: bool) -> dict:
    """Time ``steps`` training steps and one evaluation batch of one setting (this process),
    then (``count``) the FLOPs of a step and of an evaluation batch."""
    setting, net = load_setting(name)
    net = net.to(device)
    rule, opt, x, y = build(setting, net, rule_name, setting["batch"], device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far
    if device == "cuda":  # untimed: CUDA's and cuBLAS's set-up
        train_step(net, rule, opt, x, y)
    times, cpu_times = [], []
    for _ in range(steps):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(net, rule, opt, x, y)
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    peak = peak_memory_mb(device)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    eval_batch(net, x, setting["T"])
    sync(device)
    eval_s, eval_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    params = sum(p.numel() for p in net.parameters())
    del rule, opt, x, y
    step_flops, eval_flops = flops(setting, net.cpu(), rule_name) if count else (None, None)
    return dict(
        setting=setting,
        step_flops=step_flops,
        eval_batch_flops=eval_flops,
        step_wall_s=times,
        step_cpu_s=cpu_times,
        eval_batch_wall_s=eval_s,
        eval_batch_cpu_s=eval_cpu_s,
        rss_before_mb=rss_before,
        peak_memory_mb=peak,
        parameters=params,
    )


def run_child(name: str, rule_name: str, steps: int, device: str, count: bool) -> dict:
    """:func:`measure` in a fresh Python process (its own peak memory), as JSON on stdout."""
    cmd = [sys.executable, __file__, "--child", f"{name}:{rule_name}", "--steps", str(steps)]
    cmd += ["--device", device] + ([] if count else ["--no-flops"])
    return json.loads(run_checked(cmd, cwd=ROOT).stdout.strip().splitlines()[-1])


def epoch_cost(setting: dict, step_s: float, eval_batch_s: float) -> dict:
    batch = setting["batch"]
    train_steps, test_batches = (
        math.ceil(setting["n_train"] / batch),
        math.ceil(setting["n_test"] / batch),
    )
    epoch_s = train_steps * step_s + test_batches * eval_batch_s
    return dict(train_steps=train_steps, test_batches=test_batches, epoch_s=epoch_s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--out", type=out_file, help="JSON file to write")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument(
        "--steps", type=positive_int, default=1, help="timed training steps per setting (>= 1)"
    )
    p.add_argument("--device", type=device, default="cpu", metavar="{cpu,cuda}")
    p.add_argument(
        "--epochs", type=positive_int, default=50, help="epochs of a full run (the seed: 50)"
    )
    p.add_argument(
        "--gpu-tflops",
        type=positive_float,
        default=10.0,
        help="sustained float32 TFLOP/s assumed for the GPU estimate (> 0)",
    )
    p.add_argument("--no-flops", dest="flops", action="store_false")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        # this process, not the training runs sharing the machine, goes first if memory runs out
        Path("/proc/self/oom_score_adj").write_text("1000\n")
        print(json.dumps(measure(*args.child.split(":"), args.steps, args.device, args.flops)))
        return
    if args.out is None:
        p.error("--out is required")
    # one CPU thread: its CPU time is the step's cost on an idle core, also on a shared machine
    clock = "cpu" if args.device == "cpu" and torch.get_num_threads() == 1 else "wall"
    start, report = meta_start(), {"settings": {}}
    header = ("setting", "rule", "step s", "eval s", "peak MB", "epoch h", f"{args.epochs} ep h")
    print(ROW.format(*header, "GPU est. h"))
    for name in args.settings:
        for rule_name in args.rules:
            r = run_child(name, rule_name, args.steps, args.device, args.flops)
            setting = report["settings"][name] = r.pop("setting")
            r["step_s"] = statistics.median(r[f"step_{clock}_s"])
            r["eval_batch_s"] = r[f"eval_batch_{clock}_s"]
            r |= epoch_cost(setting, r["step_s"], r["eval_batch_s"])
            r["run_h"] = args.epochs * r["epoch_s"] / 3600
            gpu_h = "-"
            if args.flops:
                gpu_step_s = r["step_flops"] / (args.gpu_tflops * 1e12)
                gpu_eval_s = r["eval_batch_flops"] / (args.gpu_tflops * 1e12)
                gpu = epoch_cost(setting, gpu_step_s, gpu_eval_s)
                r["gpu_estimate"] = dict(
                    step_s=gpu_step_s,
                    eval_batch_s=gpu_eval_s,
                    epoch_s=gpu["epoch_s"],
                    run_h=args.epochs * gpu["epoch_s"] / 3600,
                )
                gpu_h = f"{r['gpu_estimate']['run_h']:.1f}"
            report[f"{name}/{rule_name}"] = r
            cells = (f"{r['step_s']:.1f}", f"{r['eval_batch_s']:.1f}", f"{r['peak_memory_mb']:.0f}")
            cells += (f"{r['epoch_s'] / 3600:.2f}", f"{r['run_h']:.0f}", gpu_h)
            print(ROW.format(name, rule_name, *cells), flush=True)
            # after each row: a later failure keeps these
            extra = dict(steps=args.steps, epochs=args.epochs, gpu_tflops_assumed=args.gpu_tflops)
            threads = torch.get_num_threads()
            meta = run_meta(start, clock=clock, device=args.device, threads=threads, **extra)
            write_json(args.out, report | {"meta": meta})
            print(f"written {args.out}")


if __name__ == "__main__":
    main()
