"""Wall time of the whole ``eqprop gdu`` process for the Fig. 3 configs, against the original code.

Each config runs as ``python -m eqprop_lightning.cli gdu --config configs/gdu/<name>.yaml`` in a
subprocess (start-up, data loading, the analysis, saving tensors and figures: everything a user
waits for), ``--repeats`` times; the table reports the median wall time, the analysis time alone
(``gdu.json``'s ``seconds``) and, with ``--original PATH`` (a checkout of
ernoult/updatesEPgradientsBPTT), the original's own command for the same figure measured the
same way right after (``original.py``; Fig. 3 EB-2h takes it about a quarter of an hour), and the
speed-up against the target.

    python benchmarks/gdu.py --out gdu_bench.json [--configs fig3_eb1h fig3_eb2h fig3_eb3h]
        [--original PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from original import plotcurves_seconds  # noqa: E402

TARGET = {
    "fig3_eb1h": ("speed-up", 10.0),
    "fig3_eb2h": ("speed-up", 10.0),
    "fig3_eb3h": ("seconds", 120.0),
}


def run_once(config: str, out_dir: Path) -> tuple[float, float]:
    """Wall seconds of one ``eqprop gdu`` process and the analysis seconds it reports."""
    cmd = [
        sys.executable,
        "-m",
        "eqprop_lightning.cli",
        "gdu",
        "--config",
        str(ROOT / "configs" / "gdu" / f"{config}.yaml"),
        "--output_dir",
        str(out_dir),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - start
    return wall, json.loads((out_dir / "gdu.json").read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument(
        "--configs", nargs="+", default=["fig3_p1h", "fig3_eb1h", "fig3_eb2h", "fig3_eb3h"]
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--original", type=Path, help="checkout of the original code")
    args = parser.parse_args()
    results = {}
    row = "{:<11} {:>9} {:>11} {:>10} {:>9}  {}"
    print(row.format("config", "wall s", "analysis s", "original", "speed-up", "target"))
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            runs = [run_once(config, Path(tmp) / f"{config}_{i}") for i in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            analysis = statistics.median(r[1] for r in runs)
            original = None
            if args.original:
                path = ROOT / "configs" / "gdu" / f"{config}.yaml"
                original = statistics.median(
                    plotcurves_seconds(args.original.resolve(), path, args.repeats)
                )
            speedup = original / wall if original else None
            kind, value = TARGET.get(config, ("", None))
            ok = None
            if kind == "speed-up" and speedup is not None:
                ok = speedup >= value
            elif kind == "seconds":
                ok = wall <= value
            target = f"{kind} {value:g} {'PASS' if ok else 'FAIL'}" if kind else ""
            print(
                row.format(
                    config,
                    f"{wall:.1f}",
                    f"{analysis:.1f}",
                    f"{original:.0f}" if original else "-",
                    f"{speedup:.1f}x" if speedup else "-",
                    target,
                )
            )
            results[config] = {
                "wall_seconds": wall,
                "analysis_seconds": analysis,
                "original_seconds": original,
                "speedup": speedup,
                "pass": ok,
            }
    results["meta"] = {"cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
