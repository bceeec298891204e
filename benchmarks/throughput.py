"""Training throughput, eager and compiled (``compile: true``), of P-1h, EB-1h, P-conv (MNIST,
batch 20) and the IMDB net (one Hopfield projection, 100 tokens, FC 1000-40-2, batch 20, T 50,
K 25), with EP and BPTT.

Micro-benchmark: the net, T, K, beta and learning rates come from the config through the
``eqprop`` parser (``configs/mnist/{p1h,eb1h,pconv}.yaml``; the IMDB net is built here), seeded
with ``torch.manual_seed(0)``, on one fixed batch (MNIST test images, or synthetic with
``--synthetic`` or without the data). For each variant (``eager``, ``compiled``) the first
training step is timed alone (``first_step_s``: for ``compiled`` it holds the compilation), then
after warm-up full training steps (rule + zero_grad + backward + SGD step) are timed in 5 windows;
the median gives samples/s. ``--clock cpu`` times the process's CPU time instead of the wall
clock: with one thread that is the cost on an idle core, robust to other processes on a busy
machine. The key ``<config>/<alg>`` holds the variant the shipped config runs (its
``model.compile``), ``<config>/<alg>/eager`` and ``/compiled`` both.

End to end (``--end-to-end``): ``eqprop fit --config <yaml>`` for one epoch of N and of 2N batches
(the config's algorithm and ``compile``); the difference of the epoch times in ``results.json``
is the time of N training batches, free of start-up, compilation and evaluation; full epoch =
3000 x per batch + the evaluation of the N-batch run.

Against the original (``--original PATH``, a checkout of ernoult/updatesEPgradientsBPTT): for
each MNIST config and algorithm, ``original.py`` times the original's own training step on the
same batch with the same clock and threads, in a fresh process, right after ours;
``<config>/<alg>/original`` holds it and ``<config>/<alg>/over_original`` the ratio of the
shipped variant's samples/s to it.
"""

from __future__ import annotations

import argparse
import datetime
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

from eqprop_lightning.learning import make_rule
from eqprop_lightning.learning.compiled import compile_dynamics
from eqprop_lightning.nets import HopfieldClassifier

ROOT = Path(__file__).resolve().parents[1]
BATCH, FULL_EPOCH_BATCHES = 20, 3000
CONFIGS = ("p1h", "eb1h", "pconv", "imdb")
#: the IMDB net of issue 12's row (100 tokens, batch 20, T 50, K 25, beta 0.2 as configs/imdb)
IMDB = dict(segments=[100], projections=[[0, 0]], fc_layers=[1000, 40, 2], embed_dim=300)
IMDB_RULE = dict(T=50, K=25, beta=0.2, lrs=[1e-4, 1e-4, 1e-4, 1e-4])
ROW = "{:<22} {:>10} {:>9} {:>12}  {}"
warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
warnings.filterwarnings("ignore", message=".*args parameter is intended")


def clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def median_time(fn: Callable[[], object], seconds: float, now: Callable[[], float]) -> float:
    """Median seconds per call of ``fn`` over 5 windows of ``seconds / 5`` (3 warm-up calls)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(5):
        n, t0 = 0, now()
        while (elapsed := now() - t0) < seconds / 5 or n == 0:
            fn()
            n += 1
        times.append(elapsed / n)
    return statistics.median(times)


def load(name: str) -> tuple[torch.nn.Module, dict]:
    """The config's net (seed 0) and its T, K, beta, learning rates and ``compile``."""
    torch.manual_seed(0)
    if name == "imdb":
        return HopfieldClassifier(**IMDB), IMDB_RULE | {"compile": False}
    from eqprop_lightning.cli import EqPropCLI

    cli = EqPropCLI(args=[f"--config={ROOT / 'configs' / 'mnist' / f'{name}.yaml'}"], run=False)
    m = cli.config.model
    torch.manual_seed(0)
    net = type(cli.model.net)(**dict(m.net.init_args))
    return net, dict(T=m.T, K=m.K, beta=m.beta, lrs=list(m.lrs), compile=bool(m.get("compile")))


def get_batch(net, synthetic: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """20 MNIST test images (shaped for the net) with one-hot targets, else synthetic inputs."""
    n_classes, shape = net.num_classes, net.example_shape
    if not synthetic and isinstance(net, HopfieldClassifier) is False:
        try:
            from eqprop_lightning.datamodules import MNISTDataModule

            dm = MNISTDataModule(download=False, verify_checksums=False, flatten=len(shape) == 1)
            dm.setup("test")
            x, y = dm.test_set[:BATCH]
            return x.reshape(BATCH, *shape), y, "mnist"
        except (FileNotFoundError, RuntimeError, OSError) as err:
            print(f"MNIST unavailable ({err.__class__.__name__}), using synthetic data")
    g = torch.Generator().manual_seed(0)
    y = torch.nn.functional.one_hot(torch.randint(n_classes, (BATCH,), generator=g), n_classes)
    scale = 0.13 if isinstance(net, HopfieldClassifier) else 1.0  # word2vec-like token norms
    return scale * torch.rand(BATCH, *shape, generator=g), y.float(), "synthetic"


def bench(
    name: str, alg: str, compiled: bool, seconds: float, synthetic: bool, now, device: str
) -> dict:
    """First step (with compilation) and the median training step of one variant."""
    net, hp = load(name)
    x, y, source = get_batch(net, synthetic)
    net, x, y = net.to(device), x.to(device), y.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    rule = make_rule(alg, hp["T"], hp["K"], hp["beta"] if alg == "ep" else None)
    groups = zip(net.synapse_groups(), hp["lrs"], strict=True)
    opt = torch.optim.SGD([{"params": list(g.parameters()), "lr": lr} for g, lr in groups])
    compile_dynamics(net, compiled)

    def step() -> None:
        estimate = rule(net, x, y)
        opt.zero_grad()
        estimate.objective.backward()
        opt.step()
        sync()

    t0 = now()
    step()
    first = now() - t0
    t = median_time(step, seconds, now)
    compile_dynamics(net, False)
    return dict(samples_per_s=BATCH / t, step_ms=1e3 * t, first_step_s=first, data=source)


def end_to_end(name: str, n: int, tmp: str) -> dict:
    """Seconds per full epoch from ``eqprop fit`` runs of ``n`` and ``2n`` batches."""
    secs = []
    for batches in (n, 2 * n):
        cmd = [sys.executable, "-m", "eqprop_lightning.cli", "fit"]
        cmd += [f"--config=configs/mnist/{name}.yaml", "--trainer.max_epochs=1"]
        cmd += [f"--trainer.limit_train_batches={batches}", "--trainer.enable_progress_bar=false"]
        cmd += [f"--trainer.logger.init_args.save_dir={Path(tmp) / name}"]
        cmd += [f"--trainer.logger.init_args.version=n{batches}"]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
        found = list((Path(tmp) / name).rglob(f"n{batches}/results.json"))
        secs.append(json.loads(found[0].read_text())["epochs"][0]["seconds"])
    per_batch = (secs[1] - secs[0]) / n  # <= 0 only if the machine was busy: rerun
    eval_s = secs[0] - n * per_batch
    e = dict(batches=[n, 2 * n], epoch_seconds=secs, train_ms_per_batch=1e3 * per_batch)
    return e | {
        "eval_seconds": eval_s,
        "full_epoch_seconds": FULL_EPOCH_BATCHES * per_batch + eval_s,
    }


def original(repo: Path, name: str, alg: str, seconds: float, clock_kind: str) -> dict:
    """The original code's throughput for the config and algorithm (``original.py``)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "original.py"), f"--repo={repo}"]
    cmd += [f"--config={name}", f"--alg={alg}", f"--seconds={seconds}", f"--clock={clock_kind}"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seconds", type=float, default=5.0, help="timing budget per row")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--algorithms", nargs="+", default=["ep", "bptt"], choices=["ep", "bptt"])
    p.add_argument("--variants", nargs="+", default=["eager", "compiled"])
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--imdb-tokens", type=int, default=100, help="IMDB review length (seed: 600)")
    p.add_argument("--synthetic", action="store_true", help="random data instead of MNIST")
    p.add_argument(
        "--end-to-end",
        dest="e2e",
        type=int,
        default=0,
        metavar="N",
        help="also run eqprop fit for N and 2N batches (0: no)",
    )
    p.add_argument(
        "--original",
        type=Path,
        metavar="PATH",
        help="checkout of the original code: also time it (MNIST configs)",
    )
    args = p.parse_args()
    IMDB["segments"] = [args.imdb_tokens]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the end-to-end subprocesses
    now, report = clock(args.clock), {}
    print(ROW.format("config/alg/variant", "samples/s", "step ms", "first step s", ""))
    for name in args.configs:
        shipped = "compiled" if load(name)[1]["compile"] else "eager"
        for alg in args.algorithms:
            for variant in args.variants:
                compiled = variant == "compiled"
                r = bench(name, alg, compiled, args.seconds, args.synthetic, now, args.device)
                report[f"{name}/{alg}/{variant}"] = r
                if variant == shipped:
                    report[f"{name}/{alg}"] = r | {"variant": variant}
                row = (
                    f"{name}/{alg}/{variant}",
                    f"{r['samples_per_s']:.1f}",
                    f"{r['step_ms']:.1f}",
                )
                print(
                    ROW.format(*row, f"{r['first_step_s']:.2f}", "(shipped)" * (variant == shipped))
                )
            if {"eager", "compiled"} <= set(args.variants):
                e, c = report[f"{name}/{alg}/eager"], report[f"{name}/{alg}/compiled"]
                report[f"{name}/{alg}/compiled_over_eager"] = (
                    c["samples_per_s"] / e["samples_per_s"]
                )
                report[f"{name}/{alg}/compile_seconds"] = c["first_step_s"] - e["first_step_s"]
            if args.original and name != "imdb" and f"{name}/{alg}" in report:
                o = report[f"{name}/{alg}/original"] = original(
                    args.original.resolve(), name, alg, args.seconds, args.clock
                )
                ratio = report[f"{name}/{alg}"]["samples_per_s"] / o["samples_per_s"]
                report[f"{name}/{alg}/over_original"] = ratio
                row = (f"{name}/{alg}/original", f"{o['samples_per_s']:.1f}", f"{o['step_ms']:.1f}")
                print(ROW.format(*row, "", f"ours {ratio:.1f}x"))
    if args.e2e:
        report["end_to_end"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in (c for c in args.configs if c != "imdb"):
                e = report["end_to_end"][name] = end_to_end(name, args.e2e, tmp)
                print(f"end-to-end {name}: {e['full_epoch_seconds']:.1f} s per full epoch")
    date = datetime.datetime.now().isoformat(timespec="seconds")
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count())
    meta |= dict(date=date, clock=args.clock, seconds=args.seconds, loadavg=os.getloadavg())
    meta |= dict(device=args.device, imdb_tokens=args.imdb_tokens)
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    report["meta"] = meta
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
