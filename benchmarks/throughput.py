"""Training throughput, eager and compiled (``compile: true``), of P-1h, EB-1h, P-conv (MNIST,
batch 20; by default, and any config of ``configs/mnist`` with ``--configs``) and the IMDB
net (one Hopfield projection, 100 tokens, FC 1000-40-2, batch 20, T 50, K 25), with EP and
BPTT.

Micro-benchmark: the net, T, K, beta and learning rates come from the config through the
``eqprop`` parser (``configs/mnist/{p1h,eb1h,pconv}.yaml``; the IMDB net is built here), seeded
with ``torch.manual_seed(0)``, on one fixed batch (MNIST test images, or synthetic with
``--synthetic`` or without the data; the IMDB net always runs on synthetic inputs). Every row is
two-phase EP (free, then nudged at +beta) or truncated BPTT with plain SGD: for the IMDB net too,
which ``configs/imdb`` train with three-phase EP (+beta and -beta) and Adam, so an IMDB row
measures the net, not that config's step (``sequence.py`` does). For each variant (``eager``,
``compiled``) the first training step is timed alone on the wall clock, whatever ``--clock``
(``first_step_s``: for ``compiled`` it holds the compilation, whose compiler subprocesses a CPU
clock would miss), then after warm-up full training steps (rule + zero_grad + backward + SGD step)
are timed in 5 windows; the median gives samples/s. ``--clock cpu`` times those steps on the
process's CPU time instead of the wall clock: with one thread that is the cost on an idle core,
robust to other processes on a busy machine. The key ``<config>/<alg>`` holds the variant the
shipped config runs (its ``model.compile``), ``<config>/<alg>/eager`` and ``/compiled`` both.

End to end (``--end-to-end N``, wall clock): ``eqprop fit --config <yaml>`` on ``--device`` for
one epoch of N and of 2N batches (the config's algorithm and ``compile``); the difference of the
epoch times in ``results.json`` is the time of N training batches; the rest of the N-batch
epoch (``fixed_seconds``: the evaluation, compilation, the first batches' warm-up) is added once
to the full epoch's ``ceil((60,000 - val_split) / batch_size)`` batches times the per-batch time.

Against the original (``--original PATH``, a checkout of ernoult/updatesEPgradientsBPTT): for
each MNIST config and algorithm, ``original.py`` times the original's own training step on the
same batch with the same clock and threads, in a fresh process, right after ours;
``<config>/<alg>/original`` holds it and ``<config>/<alg>/over_original`` the ratio of the
shipped variant's samples/s to it. The JSON is written after every row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import (
    BATCH,
    EQPROP,
    MNIST_CONFIGS,
    ROOT,
    add_original_argument,
    clock,
    device,
    eqprop_cli,
    median_time,
    meta_start,
    out_file,
    positive_float,
    positive_int,
    run_checked,
    run_meta,
    write_json,
)

from eqprop_lightning.learning import make_rule
from eqprop_lightning.learning.compiled import compile_dynamics
from eqprop_lightning.nets import HopfieldClassifier

MNIST_TRAIN = 60_000  # training images of MNIST, of which the config's val_split is held out
DEFAULT_CONFIGS = ("p1h", "eb1h", "pconv", "imdb")
CONFIGS = (*MNIST_CONFIGS, "imdb")
VARIANTS = ("eager", "compiled")
#: the IMDB net of issue 12's row: 100 tokens (--imdb-tokens), batch 20, T 50, K 25, two-phase
#: EP with beta 0.2 and SGD (configs/imdb: 600 tokens, batch 100, three-phase EP with beta 0.1,
#: Adam; beta does not change the cost of a step)
IMDB = dict(segments=[100], projections=[[0, 0]], fc_layers=[1000, 40, 2], embed_dim=300)
IMDB_RULE = dict(T=50, K=25, beta=0.2, lrs=[1e-4, 1e-4, 1e-4, 1e-4])
ROW = "{:<22} {:>10} {:>9} {:>12}  {}"
warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")


def load(name: str) -> tuple[torch.nn.Module, dict]:
    """The config's net (seed 0) and its T, K, beta, learning rates, ``compile`` and, for the
    MNIST configs, the batches of a full training epoch."""
    torch.manual_seed(0)
    if name == "imdb":
        return HopfieldClassifier(**IMDB), IMDB_RULE | {"compile": False}
    cli = eqprop_cli(f"--config={ROOT / 'configs' / 'mnist' / f'{name}.yaml'}")
    m, data = cli.config.model, cli.config.data.init_args
    torch.manual_seed(0)
    net = type(cli.model.net)(**dict(m.net.init_args))
    hp = dict(T=m.T, K=m.K, beta=m.beta, lrs=list(m.lrs), compile=bool(m.get("compile")))
    return net, hp | {"epoch_batches": math.ceil((MNIST_TRAIN - data.val_split) / data.batch_size)}


def get_batch(net, synthetic: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """20 MNIST test images (shaped for the net) with one-hot targets, else synthetic inputs."""
    n_classes, shape = net.num_classes, net.example_shape
    if not synthetic and not isinstance(net, HopfieldClassifier):
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
    """First step (with compilation, wall clock) and the median training step of one variant."""
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

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    t = median_time(step, seconds, now)
    compile_dynamics(net, False)
    return dict(samples_per_s=BATCH / t, step_ms=1e3 * t, first_step_s=first, data=source)


def end_to_end(name: str, n: int, tmp: str, device: str, epoch_batches: int) -> dict:
    """Seconds per full epoch from ``eqprop fit`` runs of ``n`` and ``2n`` batches (wall clock),
    after an untimed 1-batch fit that fills inductor's cache (so that a compiled config loads the
    same graphs in both); ``full_epoch_seconds`` is None when the 2n-batch epoch was not the
    longer one (a busy machine: rerun)."""
    secs = []
    for version, batches in (("warmup", 1), (f"n{n}", n), (f"n{2 * n}", 2 * n)):
        cmd = [*EQPROP, "fit", "--config", f"configs/mnist/{name}.yaml"]
        cmd += ["--trainer.max_epochs=1", f"--trainer.limit_train_batches={batches}"]
        cmd += [f"--trainer.accelerator={device}", "--trainer.devices=1"]
        cmd += ["--trainer.enable_progress_bar=false"]
        cmd += [f"--trainer.logger.init_args.save_dir={Path(tmp) / name}"]
        cmd += [f"--trainer.logger.init_args.version={version}"]
        run_checked(cmd, cwd=ROOT)
        found = list((Path(tmp) / name).rglob(f"{version}/results.json"))
        if not found:
            sys.exit(f"{' '.join(cmd)} wrote no results.json under {Path(tmp) / name}")
        secs.append(json.loads(found[0].read_text())["epochs"][0]["seconds"])
    secs = secs[1:]  # not the untimed fit's
    per_batch = (secs[1] - secs[0]) / n
    e = dict(batches=[n, 2 * n], epoch_seconds=secs, full_epoch_batches=epoch_batches)
    if per_batch <= 0:
        return e | dict(train_ms_per_batch=None, fixed_seconds=None, full_epoch_seconds=None)
    fixed = secs[0] - n * per_batch
    e |= dict(train_ms_per_batch=1e3 * per_batch, fixed_seconds=fixed)
    return e | {"full_epoch_seconds": epoch_batches * per_batch + fixed}


def original(repo: Path, name: str, alg: str, seconds: float, clock_kind: str) -> dict:
    """The original code's throughput for the config and algorithm (``original.py``)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "original.py"), f"--repo={repo}"]
    cmd += [f"--config={name}", f"--alg={alg}", f"--seconds={seconds}", f"--clock={clock_kind}"]
    return json.loads(run_checked(cmd).stdout.splitlines()[-1])


def inductor_cache_files() -> tuple[str, int]:
    """Inductor's cache directory and the number of files in it."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    root = cache_dir()
    return root, sum(len(files) for _, _, files in os.walk(root))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--out", required=True, type=out_file)
    p.add_argument(
        "--seconds", type=positive_float, default=5.0, help="timing budget per row (> 0)"
    )
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=CONFIGS)
    p.add_argument("--algorithms", nargs="+", default=["ep", "bptt"], choices=["ep", "bptt"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--threads", type=positive_int, help="torch and OpenMP threads (>= 1)")
    p.add_argument("--device", type=device, default="cpu", metavar="{cpu,cuda}")
    p.add_argument(
        "--imdb-tokens", type=positive_int, help="IMDB review length (default 100; seed: 600)"
    )
    p.add_argument("--synthetic", action="store_true", help="random data instead of MNIST")
    p.add_argument(
        "--end-to-end",
        dest="e2e",
        type=positive_int,
        metavar="N",
        help="also run eqprop fit for N and 2N batches (N >= 1; MNIST configs)",
    )
    add_original_argument(p, "checkout of the original code: also time it (MNIST configs)")
    args = p.parse_args()
    mnist = [c for c in args.configs if c != "imdb"]
    if args.imdb_tokens is not None and "imdb" not in args.configs:
        p.error(f"--imdb-tokens {args.imdb_tokens} is for the imdb config, not in --configs")
    for option, value in (("--end-to-end", args.e2e), ("--original", args.original)):
        if value is not None and not mnist:
            names = ", ".join(MNIST_CONFIGS)
            p.error(f"{option} is for the MNIST configs ({names}), not in --configs")
    if args.clock == "cpu" and args.device == "cuda":
        p.error("--clock cpu times the process's CPU, not the GPU: use --clock wall with cuda")
    if args.original is not None and args.device == "cuda":
        p.error("--original times the original on the CPU: compare with --device cpu")
    return args


def main() -> None:
    args = parse_args()
    IMDB["segments"] = [args.imdb_tokens or 100]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the subprocesses
    start = meta_start()
    cache = inductor_cache_files() if "compiled" in args.variants else None
    now, report = clock(args.clock), {}

    def write() -> None:
        extra = dict(seconds=args.seconds, first_step_clock="wall", imdb_tokens=IMDB["segments"][0])
        if cache is not None:
            extra["inductor_cache"] = dict(
                dir=cache[0], files_before=cache[1], files_after=inductor_cache_files()[1]
            )
        if args.device == "cuda":
            extra["gpu"] = torch.cuda.get_device_name()
        threads = torch.get_num_threads()
        report["meta"] = run_meta(start, clock=args.clock, device=args.device, threads=threads)
        report["meta"] |= extra
        write_json(args.out, report)

    print(ROW.format("config/alg/variant", "samples/s", "step ms", "first step s", ""))
    settings = {name: load(name)[1] for name in args.configs}  # the configs, read once
    for name in args.configs:
        shipped = "compiled" if settings[name]["compile"] else "eager"
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
                write()
            if {"eager", "compiled"} <= set(args.variants):
                e, c = report[f"{name}/{alg}/eager"], report[f"{name}/{alg}/compiled"]
                report[f"{name}/{alg}/compiled_over_eager"] = (
                    c["samples_per_s"] / e["samples_per_s"]
                )
                report[f"{name}/{alg}/compile_seconds"] = c["first_step_s"] - e["first_step_s"]
            if args.original and name != "imdb" and shipped not in args.variants:
                print(
                    f"{name}/{alg}/original: not measured, as the config's shipped variant "
                    f"({shipped}) is not in --variants"
                )
            elif args.original and name != "imdb":
                o = report[f"{name}/{alg}/original"] = original(
                    args.original, name, alg, args.seconds, args.clock
                )
                ratio = report[f"{name}/{alg}"]["samples_per_s"] / o["samples_per_s"]
                report[f"{name}/{alg}/over_original"] = ratio
                row = (f"{name}/{alg}/original", f"{o['samples_per_s']:.1f}", f"{o['step_ms']:.1f}")
                print(ROW.format(*row, "", f"ours {ratio:.1f}x"))
            write()
    busy = []
    if args.e2e:
        report["end_to_end"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in (c for c in args.configs if c != "imdb"):
                batches = settings[name]["epoch_batches"]
                e = end_to_end(name, args.e2e, tmp, args.device, batches)
                report["end_to_end"][name] = e
                write()
                if e["full_epoch_seconds"] is None:
                    busy.append(name)
                    print(
                        f"end-to-end {name}: the {2 * args.e2e}-batch epoch took "
                        f"{e['epoch_seconds'][1]:.1f} s, the {args.e2e}-batch one "
                        f"{e['epoch_seconds'][0]:.1f} s: no per-batch time (a busy machine, or N "
                        "too small): rerun, with a larger N"
                    )
                else:
                    print(f"end-to-end {name}: {e['full_epoch_seconds']:.1f} s per full epoch")
    print(f"written {args.out}")
    if busy:
        sys.exit(f"no end-to-end estimate for {', '.join(busy)}")


if __name__ == "__main__":
    main()
