"""Training throughput of P-1h with EP: one CPU process against two under Lightning DDP (gloo).

Each configuration trains ``configs/mnist/p1h.yaml`` (EP, T=40, K=15) on the MNIST files of the data
root (``$EQPROP_DATA_DIR``, else ``data/``) for ``--batches`` training batches per process, or
``--max-seconds`` of training (Lightning's ``max_time``; one epoch, no validation, no checkpoint, no
logger, no progress bar) in a fresh subprocess of this script (``--worker``), built by the
``eqprop`` CLI from the config with ``run=False``, as ``eqprop fit`` would. A callback times the
train loop on every rank from the start of batch ``--warmup`` to the end of the last batch; rank 0
reports the global throughput ``world_size * timed batches * batch_size / seconds`` with the slowest
rank's seconds, so start-up, process launch, data set-up and the warm-up batches are left out. Two
processes run with ``strategy=ddp`` (Lightning starts the second rank by running this script again)
on the gloo backend, with one thread each; ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` are set
in every process.

Configurations (per-process batch; the DDP global batch is 2x):
  1p-2t     1 process, 2 threads, batch 20 (reference of the ``vs 1p-2t`` column)
  1p-1t     1 process, 1 thread, batch 20 (reference of the ``vs 1p-1t`` column)
  2p-b20    2 processes (DDP, gloo), 1 thread each, batch 20 per process = global batch 40
  2p-b10    2 processes (DDP, gloo), 1 thread each, batch 10 per process = global batch 20

After training, the DDP runs also time ``torch.distributed.all_reduce`` of one float32 tensor with
as many elements as P-1h has parameters (784*512 + 512*10 + 512 + 10 = 407,050, about 1.6 MB: the
gradients DDP all-reduces once per batch), ``--allreduce-iters`` times after 5 warm-up calls.

    python benchmarks/ddp.py --out ddp.json [--repeats 3] [--batches 500] [--configs 1p-2t 2p-b20]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from common import (
    ROOT,
    at_least,
    data_dir,
    eqprop_cli,
    fail,
    meta_start,
    out_file,
    positive_int,
    run_meta,
    write_json,
)
from lightning.pytorch.callbacks import ModelCheckpoint

from eqprop_lightning.callbacks import GDUCallback, ResultsWriter

CONFIG = ROOT / "configs" / "mnist" / "p1h.yaml"
#: name -> (processes, threads per process, batch size per process)
CONFIGS = {
    "1p-2t": (1, 2, 20),
    "1p-1t": (1, 1, 20),
    "2p-b20": (2, 1, 20),
    "2p-b10": (2, 1, 10),
}
REFERENCE, SINGLE_THREAD = "1p-2t", "1p-1t"
ROW = "{:<8} {:>5} {:>8} {:>6} {:>7} {:>10} {:>8} {:>9} {:>9} {:>10}  {}"


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used (``/proc/stat``: user, nice, system,
    irq, softirq and steal of all cores), or ``None`` where ``/proc/stat`` is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class TrainLoopTimer(L.Callback):
    """Times the train loop from the start of batch ``warmup`` to the end of the last batch on
    every rank; on rank 0 writes the result (and, under DDP, an all-reduce timing) to ``path``.
    From the start of batch ``warmup`` to the end of training it also takes the CPU time the
    ranks used and the CPU time the whole machine used: the difference is what other processes
    took (``other_cpu_fraction`` of all cores), which tells whether a row was slowed down by a
    busy machine."""

    def __init__(self, warmup: int, path: Path, allreduce_iters: int) -> None:
        self.warmup, self.path, self.allreduce_iters = warmup, path, allreduce_iters
        self.start: tuple | None = None
        self.end: tuple | None = None
        self.timed_batches = 0

    @staticmethod
    def _clocks() -> tuple:
        return time.perf_counter(), time.process_time(), machine_busy_seconds()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = self._clocks()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:  # the last batch's end: the run may stop at max_time
            self.end = time.perf_counter()
            self.timed_batches = batch_idx + 1 - self.warmup

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is None or self.end is None:
            raise RuntimeError(f"fewer training batches than --warmup {self.warmup}")
        now = self._clocks()
        wall, cpu, window = self.end - self.start[0], now[1] - self.start[1], now[0] - self.start[0]
        busy = None if self.start[2] is None else now[2] - self.start[2]
        per_rank = [(wall, cpu)]
        allreduce = None
        world = trainer.world_size
        if world > 1:
            dist = torch.distributed
            per_rank = [None] * world
            dist.all_gather_object(per_rank, (wall, cpu))
            numel = sum(p.numel() for p in pl_module.net.parameters())
            allreduce = time_allreduce(numel, self.allreduce_iters)
        if trainer.global_rank != 0:
            return
        seconds = max(w for w, _ in per_rank)
        own_cpu = sum(c for _, c in per_rank)
        other = None if busy is None else max(0.0, busy - own_cpu) / (window * os.cpu_count())
        batch_size = trainer.datamodule.hparams.batch_size
        result = {
            "processes": world,
            "threads_per_process": torch.get_num_threads(),
            "batch_size_per_process": batch_size,
            "global_batch_size": world * batch_size,
            "timed_batches_per_process": self.timed_batches,
            "rank_seconds": [w for w, _ in per_rank],
            "rank_cpu_seconds": [c for _, c in per_rank],
            "stopped_at_max_time": self.timed_batches + self.warmup < trainer.num_training_batches,
            "other_cpu_fraction": other,
            "samples_per_s": world * self.timed_batches * batch_size / seconds,
            "ms_per_step": 1e3 * seconds / self.timed_batches,
            "allreduce": allreduce,
        }
        write_json(self.path, result)


def time_allreduce(numel: int, iters: int) -> dict:
    """Seconds of ``all_reduce`` (sum) of a float32 tensor of ``numel`` elements on the current
    process group: the mean over ``iters`` back-to-back calls after 5 warm-up calls, and the
    median of single calls each preceded by a barrier."""
    dist = torch.distributed
    tensor = torch.ones(numel)
    for _ in range(5):
        dist.all_reduce(tensor)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(tensor)
    mean = (time.perf_counter() - t0) / iters
    singles = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(tensor)
        singles.append(time.perf_counter() - t0)
    return {
        "backend": dist.get_backend(),
        "numel": numel,
        "megabytes": 4 * numel / 1e6,
        "iters": iters,
        "mean_ms": 1e3 * mean,
        "median_single_ms": 1e3 * statistics.median(singles),
    }


def worker(args: argparse.Namespace) -> None:
    """One training run (rank 0, and every other rank Lightning starts with the same argv)."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cli_args = [
        f"--config={CONFIG}",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={args.processes}",
        f"--trainer.strategy={'ddp' if args.processes > 1 else 'auto'}",
        "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={args.batches}",
        f"--trainer.max_time={{'seconds': {args.max_seconds}}}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={args.result.parent}",  # config.yaml goes there
        f"--data.batch_size={args.batch_size}",
        f"--data.data_dir={data_dir()}",
        "--data.download=false",
    ]
    cli = eqprop_cli(*cli_args)
    trainer = cli.trainer
    # no checkpoints, results.json or GDU analysis: only the train loop
    unwanted = (ModelCheckpoint, ResultsWriter, GDUCallback)
    trainer.callbacks[:] = [cb for cb in trainer.callbacks if not isinstance(cb, unwanted)]
    trainer.callbacks.append(TrainLoopTimer(args.warmup, args.result, args.allreduce_iters))
    trainer.fit(cli.model, datamodule=cli.datamodule)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_config(name: str, args: argparse.Namespace, tmp: Path, repeat: int) -> dict:
    """One run of configuration ``name`` in a subprocess; retried (up to twice) when it fails
    without a result (gloo on a CPU sandbox now and then aborts a rank while tearing down)."""
    processes, threads, batch_size = CONFIGS[name]
    result = tmp / f"{name}_{repeat}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"--result={result}"]
    cmd += [f"--processes={processes}", f"--threads={threads}", f"--batch-size={batch_size}"]
    cmd += [f"--batches={args.batches}", f"--warmup={args.warmup}"]
    cmd += [f"--allreduce-iters={args.allreduce_iters}", f"--max-seconds={args.max_seconds}"]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    timeout = args.max_seconds + 280  # start-up, data and the all-reduce timing beside training
    for attempt in range(3):
        start = time.perf_counter()
        try:
            run = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or ""
            sys.exit(f"{shlex.join(cmd)} did not finish in {timeout} s:\n{stderr[-3000:]}")
        wall = time.perf_counter() - start
        if result.exists():
            out = json.loads(result.read_text()) | {"wall_seconds": wall, "attempts": attempt + 1}
            return out | {"returncode": run.returncode}
        if attempt == 2:
            fail(cmd, run)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=out_file, help="JSON file to write (required)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs per config (>= 1)")
    parser.add_argument(
        "--batches", type=positive_int, default=500, help="training batches per process (>= 1)"
    )
    parser.add_argument("--warmup", type=at_least(0), default=10, help="untimed first batches")
    parser.add_argument("--allreduce-iters", type=positive_int, default=50, help=">= 1")
    parser.add_argument(
        "--max-seconds",
        type=positive_int,
        default=20,
        help="stop a run's training after this (max_time, >= 1)",
    )
    # internal: one training run
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.out is None:
        parser.error("--out is required")
    if args.warmup >= args.batches:
        parser.error(f"--warmup {args.warmup} must be smaller than --batches {args.batches}")
    meta = meta_start()
    start = time.perf_counter()

    def run_settings() -> dict:
        """``meta`` as of now: the partial file's and the report's."""
        return run_meta(
            meta,
            clock="wall",
            device="cpu",
            threads=None,  # per configuration: threads_per_process
            lightning=L.__version__,
            data_dir=str(data_dir()),
            config=str(CONFIG.relative_to(ROOT)),
            repeats=args.repeats,
            batches_per_process=args.batches,
            warmup_batches=args.warmup,
            total_seconds=time.perf_counter() - start,
        )

    runs: dict[str, list[dict]] = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):  # interleaved, so that a busy spell hits all configs
            for name in args.configs:
                runs[name].append(run_config(name, args, Path(tmp), repeat))
                # every run so far, in case a later one fails; the report below replaces it
                write_json(args.out, {"partial_runs": runs, "meta": run_settings()})
    report: dict = {}
    for name, rs in runs.items():
        r = {k: v for k, v in rs[0].items() if k in ("processes", "threads_per_process")}
        r["batch_size_per_process"] = rs[0]["batch_size_per_process"]
        r["global_batch_size"] = rs[0]["global_batch_size"]
        r["samples_per_s"] = statistics.median(x["samples_per_s"] for x in rs)
        r["ms_per_step"] = statistics.median(x["ms_per_step"] for x in rs)
        r["samples_per_s_runs"] = [x["samples_per_s"] for x in rs]
        r["other_cpu_fraction_runs"] = [x["other_cpu_fraction"] for x in rs]
        r["wall_seconds_runs"] = [x["wall_seconds"] for x in rs]
        r["rank_seconds_runs"] = [x["rank_seconds"] for x in rs]
        r["rank_cpu_seconds_runs"] = [x["rank_cpu_seconds"] for x in rs]
        r["attempts"] = [x["attempts"] for x in rs]
        r["returncodes"] = [x["returncode"] for x in rs]  # non-zero: a rank aborted at teardown
        r["stopped_at_max_time"] = [x["stopped_at_max_time"] for x in rs]
        if rs[0]["allreduce"]:
            ar = rs[0]["allreduce"]
            r["allreduce"] = {k: ar[k] for k in ("backend", "numel", "megabytes", "iters")}
            for key in ("mean_ms", "median_single_ms"):
                r["allreduce"][key] = statistics.median(x["allreduce"][key] for x in rs)
            r["allreduce"]["fraction_of_step"] = r["allreduce"]["mean_ms"] / r["ms_per_step"]
        report[name] = r
    ref = report.get(REFERENCE, {}).get("samples_per_s")
    ref1 = report.get(SINGLE_THREAD, {}).get("samples_per_s")
    header = ("config", "procs", "threads", "batch", "global", "samples/s", "ms/step")
    print(ROW.format(*header, f"vs {REFERENCE}", f"vs {SINGLE_THREAD}", "other CPU", ""))
    for name, r in report.items():
        r["speedup_vs_" + REFERENCE] = r["samples_per_s"] / ref if ref else None
        r["speedup_vs_" + SINGLE_THREAD] = r["samples_per_s"] / ref1 if ref1 else None
        ar = r.get("allreduce")
        note = f"all-reduce {ar['mean_ms']:.2f} ms ({ar['megabytes']:.2f} MB)" if ar else ""
        cells = (
            name,
            r["processes"],
            r["threads_per_process"],
            r["batch_size_per_process"],
            r["global_batch_size"],
            f"{r['samples_per_s']:.0f}",
            f"{r['ms_per_step']:.2f}",
            f"{r['samples_per_s'] / ref:.2f}x" if ref else "-",
            f"{r['samples_per_s'] / ref1:.2f}x" if ref1 else "-",
            "/".join("-" if f is None else f"{100 * f:.0f}%" for f in r["other_cpu_fraction_runs"]),
            note,
        )
        print(ROW.format(*cells))
    print(
        f"batch = per process; DDP trains with global batch = processes x batch. samples/s: "
        f"global, median of {args.repeats} runs of {args.batches} batches per process "
        f"({args.warmup} untimed); all-reduce: mean of {args.allreduce_iters} back-to-back "
        f"calls on gloo; load average at start {meta['loadavg_before'][0]:.2f}"
    )
    report["meta"] = run_settings()
    write_json(args.out, report)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
