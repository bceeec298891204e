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
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from original import plotcurves_seconds  # noqa: E402

EQPROP = [sys.executable, "-m", "eqprop_lightning.commands"]
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


def wall_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def row(times: list[float], target: float | None) -> dict:
    return {
        "median_s": round(statistics.median(times), 2),
        "min_s": round(min(times), 2),
        "max_s": round(max(times), 2),
        "target_s": target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--original", type=Path, help="checkout of the original code")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(Path(tmp) / "gdu").items():
            rows[name] = row([wall_seconds(cmd) for _ in range(args.repeats)], TARGETS.get(name))
    if args.original:
        fig3 = ROOT / "configs" / "gdu" / "fig3_eb1h.yaml"
        rows[ORIGINAL] = row(plotcurves_seconds(args.original.resolve(), fig3, args.repeats), None)
    speedup = rows[ORIGINAL]["median_s"] / rows[GDU]["median_s"] if args.original else None
    result = {
        "rows": rows,
        "speedup": None if speedup is None else round(speedup, 2),
        "speedup_target": SPEEDUP_TARGET,
        "repeats": args.repeats,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }
    print("| command | median s | range s | target s |\n|---|---|---|---|")
    for name, r in rows.items():
        target = "" if r["target_s"] is None else f"{r['target_s']}"
        print(f"| `{name}` | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | {target} |")
    if speedup is not None:
        print(f"eqprop gdu is {speedup:.1f}x faster than the original (target {SPEEDUP_TARGET}x)")
    print(
        f"load average before {result['load_average_before']}, after {result['load_average_after']}"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
