"""Start-up time of the ``eqprop`` command, as whole processes (what a user waits for).

Each command runs ``--repeats`` times (default 3) in a subprocess from the repository root; the
table reports the median and the range of the wall times. Two reference rows show what the
machine gives at the time: the bare interpreter and ``import torch``; the load average before and
after is recorded too, as other jobs on a shared machine slow every row.

    python benchmarks/startup.py --out startup.json [--repeats 3]
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
EQPROP = [sys.executable, "-m", "eqprop_lightning.commands"]
TARGETS = {"eqprop --help": 1.5, "eqprop gdu --config configs/gdu/fig3_eb1h.yaml": 4.0}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(Path(tmp) / "gdu").items():
            times = [wall_seconds(cmd) for _ in range(args.repeats)]
            rows[name] = {
                "median_s": round(statistics.median(times), 2),
                "min_s": round(min(times), 2),
                "max_s": round(max(times), 2),
                "target_s": TARGETS.get(name),
            }
    result = {
        "rows": rows,
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
    print(
        f"load average before {result['load_average_before']}, after {result['load_average_after']}"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
