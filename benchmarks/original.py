"""Training throughput of the original code (ernoult/updatesEPgradientsBPTT), measured the way
``throughput.py`` measures ours, so that the two can be compared in one run.

The original is not part of this repository (it has no licence): fetch it and pass its checkout
with ``--repo``. Each measurement runs in a fresh process, because the original's ``main.py``
parses ``sys.argv`` and builds its MNIST loaders when it is imported. The command is the one in
the config's header (``# Original: python main.py ...``), with ``--device-label -1`` (CPU) and
``--batch-size 20``; the net is the original's class for it, and a step is the original's own
``train`` over one batch: the free and nudged phases and ``updateWeights`` (EP), or the forward
pass with grad, ``backward`` and its SGD update (BPTT). The batch is the first 20 MNIST test
images through the original's transforms, repeated; the 3 warm-up and 5 timed windows are those
of ``common.median_time``. Prints one JSON object.

    python benchmarks/original.py --repo /path/to/updatesEPgradientsBPTT --config p1h --alg ep
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    BATCH,
    MNIST_CONFIGS,
    MNIST_FILES,
    ROOT,
    clock,
    data_dir,
    median_time,
    original_checkout,
    positive_float,
    wall_seconds,
)

#: the MNIST configs whose header holds the original's command
CONFIGS = [
    name
    for name in MNIST_CONFIGS
    if "# Original:" in (ROOT / "configs" / "mnist" / f"{name}.yaml").read_text()
]


def original_command(config: Path) -> list[str]:
    """The arguments after ``main.py`` in the ``# Original:`` header of a config file."""
    lines = config.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Original:"))
    words = [lines[start].split("main.py", 1)[1]]
    words += [line[1:] for line in lines[start + 1 :] if line.startswith("#    ")]
    return [w for w in shlex.split(" ".join(words)) if w != "--benchmark"]


def stage_mnist(dest: Path) -> None:
    """Gunzip MNIST where the original's ``torchvision.datasets.MNIST('./data')`` looks."""
    raw = dest / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        with gzip.open(data_dir() / "MNIST" / "raw" / f"{name}.gz") as src:
            (raw / name).write_bytes(src.read())


def plotcurves_seconds(repo: Path, config: Path, repeats: int) -> list[float]:
    """Wall times of the original's ``--action plotcurves`` command of a GDU config's header
    (``--device-label -1``, matplotlib's Agg backend), each run as a whole process in a copy of
    the checkout (it copies its own source files next to its results) whose ``./data`` holds
    MNIST."""
    cmd = [sys.executable, "main.py", *original_command(config), "--device-label", "-1"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "original"
        shutil.copytree(repo, copy, ignore=shutil.ignore_patterns(".git", "data"))
        stage_mnist(copy)
        for _ in range(repeats):
            times.append(wall_seconds(cmd, cwd=copy, env=env))
    return times


class RepeatedBatch:
    """A loader for the original's ``train``: one batch ``n`` times (it reads ``.dataset``)."""

    def __init__(self, batch: tuple, n: int):
        self.batch, self.n, self.dataset = batch, n, range(n * len(batch[0]))

    def __iter__(self):
        return iter([self.batch] * self.n)

    def __len__(self) -> int:
        return self.n


def measure(repo: Path, config: str, alg: str, seconds: float, clock_kind: str) -> dict:
    argv = original_command(ROOT / "configs" / "mnist" / f"{config}.yaml")
    argv += ["--device-label", "-1", "--batch-size", str(BATCH)]
    argv += ["--training-method", "BPTT" if alg == "bptt" else "eqprop"]
    with tempfile.TemporaryDirectory() as tmp:
        stage_mnist(Path(tmp))
        os.chdir(tmp)
        sys.path.insert(0, str(repo))
        sys.argv = ["main.py", *argv]
        import netClasses  # imports main: parses argv, defines rho, builds the loaders
        import netFunctions
        import torch

        main = sys.modules["main"]
        args = main.args
        if args.conv:
            net = netClasses.convEP(args)
        else:
            net = (netClasses.EPdisc if args.discrete else netClasses.EPcont)(args)
        test = main.test_loader.dataset
        x, y = (torch.stack(t) for t in zip(*(test[i] for i in range(BATCH)), strict=True))
        method = "BPTT" if alg == "bptt" else "eqprop"

        def step() -> None:
            with contextlib.redirect_stdout(io.StringIO()):  # train prints its error rate
                netFunctions.train(net, RepeatedBatch((x, y), 1), 1, method)

        t = median_time(step, seconds, clock(clock_kind))
    return dict(samples_per_s=BATCH / t, step_ms=1e3 * t, command=shlex.join(["main.py", *argv]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument(
        "--repo",
        required=True,
        type=original_checkout,
        metavar="PATH",
        help="checkout of the original code",
    )
    p.add_argument("--config", required=True, choices=CONFIGS, help="configs/mnist/<config>.yaml")
    p.add_argument("--alg", choices=["ep", "bptt"], required=True)
    p.add_argument("--seconds", type=positive_float, default=5.0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args()
    result = measure(args.repo, args.config, args.alg, args.seconds, args.clock)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
