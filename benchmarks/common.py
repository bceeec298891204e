"""What the benchmark scripts share: the ``eqprop`` command, argument checks, the median timer,
a config read through the ``eqprop`` parser, the run metadata and subprocess failures.

The scripts import it as ``common``: each runs as ``python benchmarks/<script>.py``, which puts
``benchmarks/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.io import check_file_to_write, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
#: the installed ``eqprop`` command's entry point (``eqprop_lightning.commands:main``), which
#: imports Lightning only for the commands that need it
EQPROP = [sys.executable, "-m", "eqprop_lightning.commands"]
#: the Table 1 configs, ``configs/mnist/<name>.yaml``
MNIST_CONFIGS = sorted(path.stem for path in (ROOT / "configs" / "mnist").glob("*.yaml"))
#: the training batch of ``throughput.py``, ``floor.py`` and ``original.py``
BATCH = 20
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: files every checkout of ernoult/updatesEPgradientsBPTT has
ORIGINAL_FILES = ("main.py", "netClasses.py", "netFunctions.py")
DEVICES = ("cpu", "cuda")


# --- argument checks (argparse ``type=``: a bad value exits with status 2 and names it) ---


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is not allowed: give an integer >= {minimum}"
            )
        return value

    return parse


positive_int = at_least(1)


def positive_float(text: str) -> float:
    """An argparse type: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number > 0")
    return value


def device(text: str) -> str:
    """An argparse type: ``cpu``, or ``cuda`` where a CUDA device is available."""
    if text not in DEVICES:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: choose cpu or cuda")
    if text == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                "cuda: no CUDA device is available here (torch.cuda.is_available() is False)"
            )
    return text


def data_dir() -> Path:
    """The data root the data modules read in a process started in the repository root (as
    the scripts start ``eqprop``): ``$EQPROP_DATA_DIR``, else ``<repository>/data``."""
    return Path(os.environ.get("EQPROP_DATA_DIR") or ROOT / "data")


def out_file(text: str) -> Path:
    """An argparse type: a file that can be written (not a directory, nor under a file)."""
    path = Path(text)
    try:
        check_file_to_write(path, text, "out.json")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def original_checkout(text: str) -> Path:
    """An argparse type: a checkout of ernoult/updatesEPgradientsBPTT (``main.py``,
    ``netClasses.py``, ``netFunctions.py``), with MNIST's four ``.gz`` files in the data root
    (the original reads them from a staged copy)."""
    path = Path(text).expanduser().resolve()
    missing = [name for name in ORIGINAL_FILES if not (path / name).is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            f"{text} is not a checkout of ernoult/updatesEPgradientsBPTT: no "
            f"{', '.join(missing)} there"
        )
    raw = data_dir() / "MNIST" / "raw"
    missing = [f"{name}.gz" for name in MNIST_FILES if not (raw / f"{name}.gz").is_file()]
    if missing:
        raise argparse.ArgumentTypeError(
            f"the original code needs MNIST: no {', '.join(missing)} in {raw} "
            "(set EQPROP_DATA_DIR to the folder holding MNIST/raw)"
        )
    return path


def add_original_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--original", type=original_checkout, metavar="PATH", help=help)


# --- timing ---


def clock(kind: str) -> Callable[[], float]:
    """``wall``: ``time.perf_counter``; ``cpu``: the process's CPU time (not its children's)."""
    return time.process_time if kind == "cpu" else time.perf_counter


def median_time(
    fn: Callable[[], object], seconds: float, now: Callable[[], float] = time.perf_counter
) -> float:
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


# --- configs ---


def eqprop_cli(*args: str):
    """The ``eqprop fit`` parser's result for ``args`` (``EqPropCLI`` with ``run=False``: the
    model, data module and trainer built, nothing run)."""
    from eqprop_lightning.cli import EqPropCLI

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended")
        return EqPropCLI(args=list(args), run=False)


# --- run metadata and results ---


def meta_start() -> dict:
    """The part of :func:`run_meta` taken before measuring: the date and the load average."""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return {"date": now, "loadavg_before": list(os.getloadavg())}


def torch_version() -> str:
    """``torch.__version__`` (with its build tag) where torch is imported, else the installed
    distribution's version (a script that times other processes does not import torch)."""
    torch = sys.modules.get("torch")
    return torch.__version__ if torch else importlib.metadata.version("torch")


def run_meta(start: dict, *, clock: str, device: str, threads: int | None, **extra) -> dict:
    """Every script's ``meta``: torch's version, the torch threads of the measuring process
    (None where the script times other processes), ``OMP_NUM_THREADS``, the clock, the device,
    the CPU count, the date (ISO, at the start), the load average before and after (now), and
    the script's own ``extra`` keys."""
    return {
        "torch": torch_version(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "clock": clock,
        "device": device,
        "cpu_count": os.cpu_count(),
        **start,
        "loadavg_after": list(os.getloadavg()),
        **extra,
    }


def write_json(path: Path, report: dict) -> None:
    """``report`` as JSON, written beside ``path`` and renamed (a write cut short leaves the
    previous rows); a non-finite ratio is ``Infinity`` or ``NaN``, as Python's json reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


# --- the in-process step timers (phases.py, holomorphic.py) ---


def step_parser(doc: str) -> argparse.ArgumentParser:
    """``--out``, ``--seconds`` (per variant) and ``--threads``; the description is ``doc``'s
    first paragraph."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=out_file, required=True)
    parser.add_argument(
        "--seconds", type=positive_float, default=5.0, help="timing budget per variant (> 0)"
    )
    parser.add_argument("--threads", type=positive_int, help="torch threads (>= 1)")
    return parser


def write_step_report(args: argparse.Namespace, start: dict, results: dict, threads: int) -> None:
    """``results`` and their ``meta`` (wall clock, CPU, ``threads``, ``seconds``, the machine)
    written to ``args.out``."""
    meta = run_meta(start, clock="wall", device="cpu", threads=threads, seconds=args.seconds)
    write_json(args.out, {**results, "meta": meta | {"machine": platform.machine()}})


# --- subprocesses ---


def fail(cmd: list, done: subprocess.CompletedProcess) -> NoReturn:
    """Exit with the failed command, its status and the end of its stderr (captured as text)."""
    tail = done.stderr[-3000:]
    sys.exit(f"{shlex.join(map(str, cmd))} failed (status {done.returncode}):\n{tail}")


def run_checked(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with the output captured as text; a failure exits through
    :func:`fail`."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode:
        fail(cmd, done)
    return done


def wall_seconds(cmd: list, **kwargs) -> float:
    """Wall seconds of ``cmd`` as a whole process (:func:`run_checked`)."""
    start = time.perf_counter()
    run_checked(cmd, **kwargs)
    return time.perf_counter() - start
