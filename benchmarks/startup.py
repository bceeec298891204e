"""Start-up time of the ``eqprop`` command, as whole processes (what a user waits for).

Each command runs ``--repeats`` times (default 3) in a subprocess from the repository root; the
table reports the median and the range of the wall times. Two reference rows show what the
machine gives at the time: the bare interpreter and ``import torch``; the load average before and
after is recorded too, as other jobs on a shared machine slow every row.

With ``--original PATH`` (a checkout of ernoult/updatesEPgradientsBPTT) the original's own
command for the Fig. 3 EB-1h figure (the ``# Original:`` line of ``configs/gdu/fig3_eb1h.yaml``,
``--action plotcurves``, on the CPU, matplotlib's Agg backend) is timed the same way beside ours,
in a directory where its ``./data`` holds MNIST, and ``speedup`` is its median over our
``eqprop gdu``'s.

    python benchmarks/startup.py --out startup.json [--repeats 3] [--original PATH]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    EQPROP,
    ROOT,
    add_original_argument,
    meta_start,
    out_file,
    positive_int,
    run_meta,
    wall_seconds,
    write_json,
)
from original import plotcurves_seconds

GDU = "eqprop gdu --config configs/gdu/fig3_eb1h.yaml"
ORIGINAL = "original: python main.py --action plotcurves ... (fig3_eb1h)"
TARGETS = {"eqprop --help": 1.5, GDU: 4.0}
SPEEDUP_TARGET = 10.0


def commands(out_dir: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "eqprop --help": [*EQPROP, "--help"],
        "eqprop gdu --help": [*EQPROP, "gdu", "--help"],
        "eqprop gdu --config configs/gdu/fig3_eb1h.yaml": [
            *EQPROP,
            "gdu",
            "--config",
            "configs/gdu/fig3_eb1h.yaml",
            "--output_dir",
            str(out_dir),
        ],
    }


def row(times: list[float], target: float | None) -> dict:
    return {
        "median_s": round(statistics.median(times), 2),
        "min_s": round(min(times), 2),
        "max_s": round(max(times), 2),
        "target_s": target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=out_file, required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs per command (>= 1)")
    add_original_argument(parser, "checkout of the original code: also time its command")
    args = parser.parse_args()
    start, rows = meta_start(), {}
    result = {"rows": rows, "speedup": None, "speedup_target": SPEEDUP_TARGET}

    def write() -> None:
        extra = dict(repeats=args.repeats, python=platform.python_version())
        result["meta"] = run_meta(start, clock="wall", device="cpu", threads=None, **extra)
        write_json(args.out, result)

    with tempfile.TemporaryDirectory() as tmp:
        for name in commands(Path(tmp)):
            # each repeat's gdu analysis writes into a directory of its own (eqprop gdu refuses
            # one that holds an earlier analysis)
            runs = [commands(Path(tmp) / f"gdu_{i}")[name] for i in range(args.repeats)]
            times = [wall_seconds(cmd, cwd=ROOT) for cmd in runs]
            rows[name] = row(times, TARGETS.get(name))
            write()
    if args.original:
        fig3 = ROOT / "configs" / "gdu" / "fig3_eb1h.yaml"
        rows[ORIGINAL] = row(plotcurves_seconds(args.original, fig3, args.repeats), None)
        result["speedup"] = round(rows[ORIGINAL]["median_s"] / rows[GDU]["median_s"], 2)
        write()
    print("| command | median s | range s | target s |\n|---|---|---|---|")
    for name, r in rows.items():
        target = "" if r["target_s"] is None else f"{r['target_s']}"
        print(f"| `{name}` | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | {target} |")
    if result["speedup"] is not None:
        print(
            f"eqprop gdu is {result['speedup']:.1f}x faster than the original "
            f"(target {SPEEDUP_TARGET}x)"
        )
    meta = result["meta"]
    print(f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
