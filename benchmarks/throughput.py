"""Training throughput of the MNIST P-1h / EB-1h configs with EP and BPTT, vs. the original code.

Micro-benchmark: for each config (net class/args, T, K, beta, lrs read from configs/mnist/*.yaml)
and algorithm, build the net with ``torch.manual_seed(0)``, take one fixed batch of 20 MNIST test
images (random uniform inputs and random one-hot targets with ``--synthetic`` or without the data),
warm up 10 steps, then time full training steps (rule + zero_grad + backward + SGD step) in 5
repeats of ``--seconds / 5`` each and report the median samples/s, plus the median ms of the free
and nudged phases (EP) or of the untracked relaxation and the tracked forward + backward (BPTT).

End to end: ``eqprop fit --config <yaml>`` (the config's algorithm) runs in a subprocess for one
epoch of N and of 2N batches (``--epoch-batches``). ``results.json`` gives each epoch's wall time,
which includes the evaluation on the 10k test set; the difference of the two runs is the time of N
training batches, free of fixed costs (startup, evaluation). Eval cost = t(N) - N * per_batch
(a difference of noisy timings: trust it to ~0.5 s); full epoch = 3000 * per_batch + eval cost.
Unlike the micro-benchmark this includes Lightning's per-step overhead (data loading, logging).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from eqprop_lightning.config_files import resolved_config
from eqprop_lightning.learning import bptt_transitions, free_phase, nudged_phase, relax
from eqprop_lightning.module import EqPropModule

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"p1h/ep": 950.0, "p1h/bptt": 670.0, "eb1h/ep": 270.0, "eb1h/bptt": 190.0}
TARGET = {"ep": 6.0, "bptt": 3.0}
BATCH, FULL_EPOCH_BATCHES = 20, 3000
ROW = "{:<11} {:>10} {:>9} {:>8} {:>7}  {}"
warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")


def median_time(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` windows of ``seconds / repeats``."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds / repeats:
            fn()
            n += 1
        times.append(elapsed / n)
    return statistics.median(times)


def get_batch(synthetic: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """20 MNIST test images with one-hot targets, or synthetic ones if asked or unavailable."""
    if not synthetic:
        try:
            from eqprop_lightning.datamodules import MNISTDataModule

            dm = MNISTDataModule(download=False, verify_checksums=False)
            dm.setup("test")
            return *dm.test_set[:BATCH], "mnist"
        except (FileNotFoundError, RuntimeError) as err:
            print(f"MNIST unavailable ({err.__class__.__name__}), using synthetic data")
    g = torch.Generator().manual_seed(0)
    y = torch.nn.functional.one_hot(torch.randint(10, (BATCH,), generator=g), 10).float()
    return torch.rand(BATCH, 784, generator=g), y, "synthetic"


def build(cfg: dict, alg: str) -> EqPropModule:
    """The config's net (seed 0) in an :class:`EqPropModule` with ``algorithm=alg``."""
    m = cfg["model"]
    module_name, cls_name = m["net"]["class_path"].rsplit(".", 1)
    torch.manual_seed(0)
    net = getattr(importlib.import_module(module_name), cls_name)(**m["net"]["init_args"])
    beta = m["beta"] if alg == "ep" else None  # BPTT has no nudge
    return EqPropModule(net, m["lrs"], alg, m["T"], m["K"], beta)


def bench_step(cfg: dict, alg: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> dict:
    """Samples/s of full training steps, and a per-phase breakdown in ms."""
    module = build(cfg, alg)
    net, rule, opt = module.net, module.rule, module.configure_optimizers()

    def step() -> None:
        estimate = rule(net, x, y)
        opt.zero_grad()
        estimate.objective.backward()
        opt.step()

    t = median_time(step, seconds)
    with torch.no_grad():
        static, zeros = net.static_terms(x), net.init_state(x)
        s0 = free_phase(net, static, zeros, rule.T)
    k, nograd = min(bptt_transitions(net, rule.K), rule.T), torch.no_grad()
    phases = {  # EP: T free + K nudged steps; BPTT: T - k untracked + k tracked steps (+ backward)
        "ep": {
            "free_phase": nograd(lambda: free_phase(net, static, zeros, rule.T)),
            "nudged_phase": nograd(lambda: nudged_phase(net, static, s0, rule.K, rule.beta, y)),
        },
        "bptt": {
            "untracked_relax": nograd(lambda: relax(net, zeros, static, rule.T - k)),
            "tracked_fwd_bwd": lambda: relax(net, s0, net.static_terms(x), k)[0].sum().backward(),
        },
    }[alg]
    r = {f"{n}_ms": 1e3 * median_time(f, seconds / 4) for n, f in phases.items()}
    return {"samples_per_s": BATCH / t, "step_ms": 1e3 * t, **r}


def end_to_end(name: str, n: int, tmp: str) -> dict:
    """Seconds per full epoch and eval cost from ``eqprop fit`` runs of ``n`` and ``2n`` batches."""
    secs = []
    for batches in (n, 2 * n):
        cmd = [sys.executable, "-m", "eqprop_lightning.cli", "fit"]
        cmd += [f"--config=configs/mnist/{name}.yaml", "--trainer.max_epochs=1"]
        cmd += [f"--trainer.limit_train_batches={batches}", "--trainer.enable_progress_bar=false"]
        cmd += [f"--trainer.logger.init_args.save_dir={tmp}"]
        cmd += [f"--trainer.logger.init_args.version=n{batches}"]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
        results = json.loads((Path(tmp) / name / f"n{batches}" / "results.json").read_text())
        secs.append(results["epochs"][0]["seconds"])
    per_batch = (secs[1] - secs[0]) / n  # <= 0 only if the machine was busy: rerun
    eval_s = secs[0] - n * per_batch
    e = dict(batches=[n, 2 * n], epoch_seconds=secs, train_ms_per_batch=1e3 * per_batch)
    e.update(train_samples_per_s=BATCH / per_batch, eval_seconds=eval_s)
    return e | {"full_epoch_seconds": FULL_EPOCH_BATCHES * per_batch + eval_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seconds", type=float, default=7.5, help="timing budget per config/alg")
    p.add_argument("--configs", nargs="+", default=["p1h", "eb1h"], choices=["p1h", "eb1h"])
    p.add_argument("--epoch-batches", type=int, default=500, help="N (runs N and 2N batches)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--synthetic", action="store_true", help="random data instead of MNIST")
    p.add_argument("--no-end-to-end", dest="e2e", action="store_false")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the end-to-end subprocesses
    x, y, source = get_batch(args.synthetic)
    report: dict = {}
    print(ROW.format("config/alg", "samples/s", "original", "speedup", "target", "ok"))
    for name in args.configs:
        cfg = resolved_config(ROOT / "configs" / "mnist" / f"{name}.yaml")
        for alg in ("ep", "bptt"):
            key, ref, target = f"{name}/{alg}", REFERENCE[f"{name}/{alg}"], TARGET[alg]
            r = bench_step(cfg, alg, x, y, args.seconds)
            speedup = r["samples_per_s"] / ref
            r |= {"speedup_vs_original": speedup, "target": target, "pass": speedup >= target}
            report[key] = r
            ok = "PASS" if r["pass"] else "FAIL"
            row = (
                key,
                f"{r['samples_per_s']:.0f}",
                f"{ref:.0f}",
                f"{speedup:.2f}x",
                f"{target:.1f}x",
                ok,
            )
            extra = "  ".join(f"{k[:-3]} {v:.2f}ms" for k, v in r.items() if k.endswith("_ms"))
            print(ROW.format(*row), f"  ({extra})")
    if args.e2e:
        report["end_to_end"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.configs:
                e = report["end_to_end"][name] = end_to_end(name, args.epoch_batches, tmp)
                print(
                    f"end-to-end {name}: {e['full_epoch_seconds']:.1f} s per full epoch = "
                    f"{FULL_EPOCH_BATCHES} x {e['train_ms_per_batch']:.2f} ms "
                    f"({e['train_samples_per_s']:.0f} samples/s) + {e['eval_seconds']:.1f} s eval"
                )
    date = datetime.datetime.now().isoformat(timespec="seconds")
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    report["meta"] = meta | {"date": date, "data": source, "seconds": args.seconds}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
