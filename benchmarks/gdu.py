"""Wall time of the whole ``eqprop gdu`` process for the Fig. 3 configs, against the original code.

Each config runs as ``python -m eqprop_lightning.commands gdu --config
configs/gdu/<name>.yaml`` (the installed ``eqprop`` command's entry point, as ``startup.py``
runs it) in a subprocess (start-up, data loading, the analysis, saving tensors and figures:
everything a user waits for), ``--repeats`` times; the table reports the median wall time, the
analysis time alone (``gdu.json``'s ``seconds``) and, with ``--original PATH`` (a checkout of
ernoult/updatesEPgradientsBPTT), the original's own command for the same figure measured the
same way right after (``original.py``; Fig. 3 EB-2h takes it about a quarter of an hour), and the
speed-up against the target (``-``, JSON ``null``, where it was not measured). The JSON is written
after every config.

    python benchmarks/gdu.py --out gdu_bench.json [--configs fig3_p1h fig3_eb1h fig3_eb2h fig3_eb3h]
        [--repeats N] [--original PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
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

CONFIGS = sorted(path.stem for path in (ROOT / "configs" / "gdu").glob("*.yaml"))
DEFAULT_CONFIGS = ["fig3_p1h", "fig3_eb1h", "fig3_eb2h", "fig3_eb3h"]
TARGET = {
    "fig3_eb1h": ("speed-up", 10.0),
    "fig3_eb2h": ("speed-up", 10.0),
    "fig3_eb3h": ("seconds", 120.0),
}


def run_once(config: str, out_dir: Path) -> tuple[float, float]:
    """Wall seconds of one ``eqprop gdu`` process and the analysis seconds it reports."""
    path = ROOT / "configs" / "gdu" / f"{config}.yaml"
    cmd = [*EQPROP, "gdu", "--config", str(path), "--output_dir", str(out_dir)]
    wall = wall_seconds(cmd, cwd=ROOT)  # as the original's side: ./data is ROOT/data
    return wall, json.loads((out_dir / "gdu.json").read_text())["seconds"]


def verdict(kind: str, value: float | None, ok: bool | None) -> str:
    """The target column: the target and PASS, FAIL or ``not measured``."""
    if not kind:
        return ""
    outcome = "not measured" if ok is None else ("PASS" if ok else "FAIL")
    return f"{kind} {value:g} {outcome}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", type=out_file, required=True, help="JSON file to write")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        choices=CONFIGS,
        metavar="NAME",
        help=f"configs/gdu/<NAME>.yaml (default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs per command (>= 1)")
    add_original_argument(parser, "checkout of the original code: also time its command")
    args = parser.parse_args()
    start, results = meta_start(), {}
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
                original = statistics.median(plotcurves_seconds(args.original, path, args.repeats))
            speedup = None if original is None else original / wall
            kind, value = TARGET.get(config, ("", None))
            ok = None
            if kind == "speed-up" and speedup is not None:
                ok = speedup >= value
            elif kind == "seconds":
                ok = wall <= value
            print(
                row.format(
                    config,
                    f"{wall:.1f}",
                    f"{analysis:.1f}",
                    "-" if original is None else f"{original:.0f}",
                    "-" if speedup is None else f"{speedup:.1f}x",
                    verdict(kind, value, ok),
                )
            )
            results[config] = {
                "wall_seconds": wall,
                "analysis_seconds": analysis,
                "original_seconds": original,
                "speedup": speedup,
                "pass": ok,
            }
            meta = run_meta(start, clock="wall", device="cpu", threads=None, repeats=args.repeats)
            write_json(args.out, results | {"meta": meta})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
