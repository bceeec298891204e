"""``eqprop report``: the Table 1 reproduction report (``REPRODUCTION.md`` and a figure) from run
directories, each holding ``results.json`` and ``config.yaml``.

Per row and rule: the published number, and ours over seeds, the mean and sample standard
deviation (``n - 1``) of the final-epoch test errors of the finished runs; per run the final
epoch, the mean and range of its last 5 epochs, the train error, epochs done of planned, the
median seconds per epoch, and the best epoch by validation error only when the run has a
validation split (a number chosen on the test set is never called best). A run whose model or
data settings differ from its row's config is listed with its differences and counted in no
statistic or curve.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from eqprop_lightning.config_files import flat
from eqprop_lightning.errors import ConfigError, DataError
from eqprop_lightning.io import check_file_to_write, write_text_atomic
from eqprop_lightning.resources import packaged

ROWS = ("p1h", "eb1h", "p2h", "p3h", "pconv", "eb2h")
RULES = ("ep", "bptt")
ROW_NAMES = {
    "p1h": "P-1h",
    "eb1h": "EB-1h",
    "p2h": "P-2h",
    "p3h": "P-3h",
    "pconv": "P-conv",
    "eb2h": "EB-2h",
}
# test error % (mean, std) and train error %, Liu & Chen (ICLR 2026) Table 1, transcribing
# Ernoult et al. (2019) for EP; every other entry could not be retrieved
PUBLISHED = {
    ("p2h", "ep"): (1.95, 0.10, 0.14),
    ("p3h", "ep"): (2.01, 0.18, 0.10),
    ("pconv", "ep"): (1.02, 0.04, 0.54),
}
PUBLISHED_SOURCE = (
    "Published numbers: test error % mean ± std (train error % in brackets) of EP as Liu & Chen "
    "(ICLR 2026, Table 1) transcribe them from Ernoult et al. (NeurIPS 2019); the abstract of "
    'Ernoult et al. gives P-conv as "~1 %". The EB rows, P-1h and every BPTT column could not '
    "be retrieved here: they say *not retrieved* rather than a number from memory."
)
LAST = 5  # epochs of the end-of-run mean and spread
RUN_NAME = re.compile(r"^(?P<row>[a-z0-9]+)-(?P<alg>ep|bptt)-s(?P<seed>\d+)$")
#: P-1h trained by every learning rule: the queue's rule names (``benchmarks/table1_queue.sh``:
#: ``ep``, ``bptt`` and the overrides in ``configs/overrides``), in the table's order
VARIANTS = {
    "ep": "EP, positive nudging (two-phase; the config)",
    "symmetric": "EP, symmetric nudging",
    "random_sign": "EP, random-sign nudging",
    "holomorphic2": "holomorphic EP, N = 2",
    "holomorphic4": "holomorphic EP, N = 4",
    "nudge_inside": "EP, positive nudging inside the activation (Laborieux et al.)",
    "p1h_cross_entropy": "EP, symmetric nudging, cross-entropy readout of the output layer",
    "p1h_cross_entropy_inside": "EP, symmetric nudging inside the activation, cross-entropy "
    "readout of the output layer",
    "p1h_softmax": "EP, symmetric nudging, softmax readout of the hidden layer (Laborieux et al.)",
    "cep": "continual EP, EP's learning rates",
    "p1h_cep": "continual EP, the C-EP paper's beta 0.2 and learning rates",
    "rbp": "RBP",
    "bptt": "BPTT",
}
VARIANT_NAME = re.compile(r"^p1h-(?P<variant>[a-z0-9_]+)-s(?P<seed>\d+)$")
#: the committed copies first: a run found in both with as many epochs is reported from the copy
#: that a fresh clone has
DEFAULT_RUNS = (Path("checkpoints/table1"), Path("runs/table1"))
CONFIGS = packaged("configs") / "mnist"  # in the installed package too
BPTT_OVERRIDE = packaged("configs") / "overrides" / "bptt.yaml"
#: Data settings besides where and how the data are read (``validation.LOCATION_ONLY``) that a
#: run may change and still count in its row: a validation split (it trains on fewer images; the
#: report names the split and gives the run's best epoch by validation).
VALIDATION = frozenset({"val_split", "split_seed"})


@dataclass
class Run:
    """One run directory: its row, rule, seed, planned epochs and per-epoch results."""

    path: Path
    row: str
    algorithm: str
    seed: int | None
    planned: int | None
    epochs: list[dict]
    validation: bool = field(default=False)
    differs: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.epochs)

    @property
    def finished(self) -> bool:
        return self.planned is not None and self.done >= self.planned

    @property
    def evaluated(self) -> list[dict]:
        """The epochs with a test error (``null`` for one not evaluated, as with
        ``check_val_every_n_epoch > 1``)."""
        return [e for e in self.epochs if e.get("test_error") is not None]

    @property
    def final_test(self) -> float:
        """The latest evaluated epoch's test error (NaN before the first one)."""
        return self.evaluated[-1]["test_error"] if self.evaluated else math.nan

    @property
    def final_train(self) -> float | None:
        return self.epochs[-1].get("train_error") if self.epochs else None

    def last_epochs(self) -> tuple[float, float, float]:
        """Mean, min and max of the test error over the last ``LAST`` evaluated epochs (or all,
        if fewer)."""
        tail = [e["test_error"] for e in self.evaluated[-LAST:]]
        return statistics.fmean(tail), min(tail), max(tail)

    def tail_cell(self) -> str:
        """``mean [min-max] (epochs)`` of :meth:`last_epochs`, ``-`` before the first evaluation."""
        if not self.evaluated:
            return "-"
        mean, lo, hi = self.last_epochs()
        return f"{mean:.2f} [{lo:.2f}-{hi:.2f}] ({min(LAST, len(self.evaluated))})"

    def seconds_per_epoch(self) -> float | None:
        secs = [e["seconds"] for e in self.epochs if "seconds" in e]
        return statistics.median(secs) if secs else None

    def best_by_validation(self) -> dict | None:
        """The epoch of lowest ``val_error`` (the first of ties), or None without a validation
        split: then no epoch is called best."""
        validated = [e for e in self.epochs if e.get("val_error") is not None]
        if not self.validation or not validated:
            return None
        return min(validated, key=lambda e: e["val_error"])


def _queue_name(path: Path, pattern: re.Pattern) -> re.Match | None:
    """``pattern`` matched against the queue's directory name: the run directory's or its
    parent's (``<name>/version_0``)."""
    return next((m for n in (path.name, path.parent.name) if (m := pattern.match(n))), None)


def _row_of(path: Path, config: dict) -> tuple[str, str | None, int | None] | None:
    """Row, rule and seed from the queue's directory name ``<row>-<alg>-s<seed>`` (the run
    directory or its parent), else the row from the logger's name."""
    if (m := _queue_name(path, RUN_NAME)) and m["row"] in ROWS:
        return m["row"], m["alg"], int(m["seed"])
    logger = (config.get("trainer") or {}).get("logger") or {}
    name = (logger.get("init_args") or {}).get("name") if isinstance(logger, dict) else None
    return (name, None, None) if name in ROWS else None


def _load(path: Path) -> tuple[dict, dict]:
    """``results.json`` and ``config.yaml`` (each empty if absent) of a run directory."""
    return _read(path / "results.json", json.loads), _read(path / "config.yaml", yaml.safe_load)


def _read(path: Path, parse) -> dict:
    """The mapping in ``path`` (empty if absent); ``DataError`` naming a file that holds none."""
    if not path.exists():
        return {}
    try:
        content = parse(path.read_text())
    except (ValueError, yaml.YAMLError) as err:  # json's errors are ValueErrors
        problem = " ".join(str(err).split())
        raise DataError(f"{path}: unreadable ({problem}); repair or remove its run") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: holds no mapping of a run's results or settings")
    return content


@cache
def row_settings(row: str, alg: str) -> dict[str, dict]:
    """The ``model`` and ``data`` sections that ``row``'s config resolves to for ``alg`` (BPTT:
    with ``configs/overrides/bptt.yaml``, as the queue runs it)."""
    from eqprop_lightning.config_files import resolved_config  # builds the CLI: imports torch

    configs = [CONFIGS / f"{row}.yaml", *([BPTT_OVERRIDE] if alg == "bptt" else [])]
    resolved = resolved_config(*configs)
    return {"model": resolved["model"], "data": resolved["data"]}


def differences(row: str, alg: str, config: dict) -> list[str]:
    """Each model or data setting of a run's ``config.yaml`` that its row's config does not
    give, as ``key: the run's (config: the row's)``: the model compared as a resume compares it
    (``validation.model_differences``), the data but for where and how they are read and a
    validation split; a key the file lacks (an option added after the run) is no difference."""
    from eqprop_lightning.validation import LOCATION_ONLY, differing, model_differences

    expected = row_settings(row, alg)
    model = model_differences(config.get("model") or {}, expected["model"])
    exempt = frozenset(f"init_args.{k}" for k in LOCATION_ONLY | VALIDATION)
    data = differing(flat(config.get("data") or {}), flat(expected["data"]), exempt)
    return [f"model.{k}: {a!r} (config: {b!r})" for k, a, b in model] + [
        f"data.{k}: {a!r} (config: {b!r})" for k, a, b in data
    ]


def _run(path, row, alg, seed, results: dict, config: dict) -> Run:
    if results.get("seed") is not None:
        seed = results["seed"]
    elif seed is None:
        seed = config.get("seed_everything")
    epochs = results.get("epochs", [])
    planned = (config.get("trainer") or {}).get("max_epochs")
    # old files have no "sets": their test_error is the test set and there is no validation
    validation = "val_error" in results.get("sets", {}) and all("val_error" in e for e in epochs)
    return Run(path, row, alg, seed, planned, epochs, validation)


def _has_checkpoint(path: Path) -> bool:
    """A ``last.ckpt`` in the run directory (committed copies) or in its ``checkpoints/``."""
    return any((path / sub / "last.ckpt").is_file() for sub in (".", "checkpoints"))


def read_run(path: Path) -> Run | None:
    """The run in ``path`` (``results.json`` and ``config.yaml``), or None if it is not a
    Table 1 row, or has neither an epoch nor a checkpoint yet (a run stopped in its first epoch
    keeps a ``last.ckpt``: it is *started*)."""
    results, config = _load(path)
    found = _row_of(path, config)
    if found is None or not (results.get("epochs") or _has_checkpoint(path)):
        return None
    row, alg, seed = found
    model = config.get("model") or {}
    alg = results.get("algorithm") or alg or model.get("algorithm")
    net = (model.get("net") or {}).get("init_args") or {}
    variant = (
        model.get("nudging") not in (None, "positive")
        or model.get("symmetric")
        or net.get("nudge_in_activation")
    )
    if alg not in RULES or variant or model.get("loss", "mse") != "mse":
        return None  # Table 1 is the seeds' two-phase EP and BPTT with the squared error
    run = _run(path, row, alg, seed, results, config)
    run.differs = differences(row, alg, config)
    return run


def find_variants(dirs: list[Path]) -> dict[str, Run]:
    """The P-1h run of each learning rule of :data:`VARIANTS`, from the queue's directories
    ``p1h-<rule>-s<seed>`` (``algorithm`` holds the rule's name); per rule, the run of the lowest
    seed, with its most epochs where it is found twice."""
    found: dict[str, Run] = {}
    for d in dirs:
        for results in sorted(d.rglob("results.json")):
            path = results.parent
            m = _queue_name(path, VARIANT_NAME)
            if m is None or m["variant"] not in VARIANTS:
                continue
            run = _run(path, "p1h", m["variant"], int(m["seed"]), *_load(path))
            if not run.epochs:
                continue
            old = found.get(run.algorithm)
            if old is None or (run.seed, -run.done) < (old.seed, -old.done):
                found[run.algorithm] = run
    return {v: found[v] for v in VARIANTS if v in found}


def variant_lines(variants: dict[str, Run]) -> list[str]:
    """The section of P-1h by learning rule."""
    out = [
        "## P-1h by learning rule",
        "",
        "The P-1h config (`configs/mnist/p1h.yaml`) with each rule override of "
        "`configs/overrides` (`benchmarks/table1_queue.sh p1h:<rule>:<seed>`), one seed; the "
        "first (EP) and last (BPTT) rows are the Table 1 runs of that seed. Final: the last "
        "epoch's test error (*partial*: not yet at its planned epochs).",
        "",
        "| rule | override | seed | epochs | final test % | last 5 test % | final train % | "
        "s / epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in variants.items():
        secs = run.seconds_per_epoch()
        override = "-" if name == "ep" else f"`{name}.yaml`"
        final = _pct(run.final_test) + ("" if run.finished else " (partial)")
        cells = [
            VARIANTS[name],
            override,
            str(run.seed),
            f"{run.done} / {run.planned if run.planned is not None else '?'}",
            final,
            run.tail_cell(),
            _pct(run.final_train),
            "-" if secs is None else f"{secs:.0f}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def find_runs(dirs: list[Path]) -> list[Run]:
    """Every run under ``dirs``; a run found twice (a live run directory and its committed copy
    under ``checkpoints/table1/``) counts once, with its most epochs (on a tie, the first of
    ``dirs``)."""
    runs: dict[tuple, Run] = {}
    for d in dirs:
        if not d.exists():
            raise ConfigError(f"--runs {d}: no such directory")
        if not d.is_dir():
            raise ConfigError(f"--runs {d} is a file: give a directory holding run directories")
        found = {p.parent for name in ("results.json", "config.yaml") for p in d.rglob(name)}
        for path in sorted(found):
            run = read_run(path)
            if run is None:
                continue
            key = (run.row, run.algorithm, run.seed)
            if key not in runs or run.done > runs[key].done:
                runs[key] = run
    return sorted(
        runs.values(), key=lambda r: (ROWS.index(r.row), RULES.index(r.algorithm), r.seed)
    )


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``n - 1``; None for one value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else None


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def published_cell(row: str, alg: str) -> str:
    if (row, alg) not in PUBLISHED:
        return "not retrieved"
    mean, std, train = PUBLISHED[(row, alg)]
    return f"{mean:.2f} ± {std:.2f} ({train:.2f})"


def ours_cell(runs: list[Run]) -> str:
    """Mean ± std of the final test errors of the finished runs (n), or the partial state."""
    if not runs:
        return "not run"
    finished = [r for r in runs if r.finished]
    if not finished:
        begun = [r for r in runs if r.evaluated]
        if not begun:
            return f"started: no epoch done yet (n = {len(runs)})"
        latest = statistics.fmean(r.final_test for r in begun)
        return f"partial: {latest:.2f} at the latest epoch (n = {len(begun)}, unfinished)"
    mean, std = mean_std([r.final_test for r in finished])
    spread = f" ± {std:.2f}" if std is not None else ""
    return f"{mean:.2f}{spread} (n = {len(finished)})"


def config_seed(path: Path) -> int:
    """``seed_everything`` of a config file, following its ``config:`` includes."""
    config = yaml.safe_load(path.read_text()) or {}
    if "seed_everything" in config:
        return config["seed_everything"]
    include = config.get("config")
    if isinstance(include, str):
        return config_seed(path.parent / include)
    raise ConfigError(f"{path} sets no seed_everything (nor does a config it includes)")


def rerun_commands(row: str, seeds: list[int]) -> list[str]:
    """The queue line and the plain ``eqprop fit`` lines that rerun ``row``'s runs."""
    jobs = " ".join(f"{row}:{alg}:{s}" for s in seeds for alg in RULES)
    lines = [f"OMP_NUM_THREADS=1 benchmarks/table1_queue.sh {jobs}"]
    for s in seeds:
        for alg in RULES:
            name = f"{row}-{alg}-s{s}"
            rule = " --config configs/overrides/bptt.yaml" if alg == "bptt" else ""  # as the queue
            lines.append(
                f"OMP_NUM_THREADS=1 eqprop fit --config configs/mnist/{row}.yaml{rule} "
                f"--seed_everything {s} "
                "--trainer.logger.init_args.save_dir runs/table1 "
                f"--trainer.logger.init_args.name {name} "
                "--trainer.logger.init_args.version version_0"
            )
    return lines


def run_line(run: Run) -> str:
    status = "finished" if run.finished else "**partial**" if run.done else "**started**"
    if run.differs:
        status += ", **not counted** (settings differ)"
    planned = run.planned if run.planned is not None else "?"
    best = run.best_by_validation()
    best_cell = (
        f"epoch {best['epoch']}: val {_pct(best['val_error'])}, test {_pct(best['test_error'])}"
        if best
        else "no validation split"
    )
    final = _pct(run.final_test)
    if run.evaluated and run.evaluated[-1] is not run.epochs[-1]:
        final += f" (epoch {run.evaluated[-1]['epoch']})"
    final += "" if run.finished or not run.done else " (partial)"
    secs = run.seconds_per_epoch()
    cells = [
        ROW_NAMES[run.row],
        run.algorithm.upper(),
        str(run.seed),
        status,
        f"{run.done} / {planned}",
        final,
        run.tail_cell(),
        _pct(run.final_train),
        best_cell,
        "-" if secs is None else f"{secs:.0f}",
        f"`{run.path}`",
    ]
    return "| " + " | ".join(cells) + " |"


def render(
    runs: list[Run], figure: Path | None, command: str, variants: dict[str, Run] | None = None
) -> str:
    """The Markdown of ``REPRODUCTION.md`` (with ``variants``, P-1h by learning rule)."""
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    out = [
        "# Reproduction of Table 1 (Ernoult et al., NeurIPS 2019)",
        "",
        f"Written by `{command}` on {date}. Test error in percent on the MNIST test set (10,000 "
        "images); every run trains on the 60,000 training images unless its results name a "
        "validation split.",
        "",
        PUBLISHED_SOURCE,
        "",
        "## Summary",
        "",
        "Ours: mean ± sample std (n - 1) over seeds of the final-epoch test error, finished runs "
        "only (n of them). Train error: the final epoch's, averaged over the same runs. Best by "
        "validation appears only for runs with a validation split. A run whose model or data "
        "settings differ from its row's config counts in neither (listed below the runs).",
        "",
        "| row | rule | published test % (train %) | ours test % | ours train % | runs "
        "(finished / all) | epochs done / planned |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        for alg in RULES:
            group = [r for r in runs if r.row == row and r.algorithm == alg and not r.differs]
            finished = [r for r in group if r.finished]
            trains = [r.final_train for r in finished if r.final_train is not None]
            epochs = ", ".join(f"{r.done} / {r.planned}" for r in group) or "-"
            cells = [
                ROW_NAMES[row],
                alg.upper(),
                published_cell(row, alg),
                ours_cell(group),
                _pct(statistics.fmean(trains)) if trains else "-",
                f"{len(finished)} / {len(group)}",
                epochs,
            ]
            out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "## Runs",
        "",
        f"Final: the last epoch's test error (*partial*: the run has not reached its planned "
        "epochs, the latest epoch; *started*: stopped in its first epoch, a checkpoint kept). "
        f"Last {LAST}: mean [min-max] of the test error over the last {LAST} epochs done "
        "(their number in brackets). s / epoch: the median wall time of an "
        "epoch, evaluation included.",
        "",
        "| row | rule | seed | status | epochs | final test % | last 5 test % | final train % | "
        "best by validation | s / epoch | directory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [run_line(r) for r in runs] or ["| (no runs found) |" + " |" * 10]
    differing = [r for r in runs if r.differs]
    if differing:
        out += ["", "## Runs not counted: settings that differ from the row's config", ""]
        out += [f"- `{r.path}`: {'; '.join(r.differs)}" for r in differing]
    if figure is not None:
        out += ["", "## Test-error curves", "", f"![test error per epoch]({figure})", ""]
        out.append("One panel per row: EP and BPTT, one thin line per seed (dotted: partial).")
    if variants:
        out += ["", *variant_lines(variants)]
    out += ["", "## Rerunning a row", ""]
    out.append(
        "The queue resumes a run exactly from its `last.ckpt` (in `runs/table1/` or committed "
        "under `checkpoints/table1/`); each `eqprop fit` line runs one of its jobs by hand "
        "(add `--ckpt_path runs/table1/<name>/version_0/checkpoints/last.ckpt` to resume one)."
    )
    for row in ROWS:
        seeds = sorted({r.seed for r in runs if r.row == row and r.seed is not None})
        if not seeds:
            seeds = [config_seed(CONFIGS / f"{row}.yaml")]
        out += ["", f"{ROW_NAMES[row]}:", "", "```bash", *rerun_commands(row, seeds), "```"]
    return "\n".join(out) + "\n"


def curves(runs: list[Run]) -> dict[str, dict[str, list[tuple]]]:
    """Per row and rule, ``(seed, epochs, test errors, partial)`` of each run."""
    panels: dict[str, dict[str, list[tuple]]] = {ROW_NAMES[r]: {a: [] for a in RULES} for r in ROWS}
    for r in (r for r in runs if r.evaluated):
        x = [e["epoch"] for e in r.evaluated]
        y = [e["test_error"] for e in r.evaluated]
        panels[ROW_NAMES[r.row]][r.algorithm].append((r.seed, x, y, not r.finished))
    return panels


def planned_epochs(runs: list[Run]) -> dict[str, int]:
    """Per row with runs, the most epochs any of its runs plans (its config's ``max_epochs``)."""
    planned: dict[str, int] = {}
    for r in (r for r in runs if r.planned is not None):
        name = ROW_NAMES[r.row]
        planned[name] = max(planned.get(name, 0), r.planned)
    return planned


def build_parser() -> argparse.ArgumentParser:
    """The options of ``eqprop report`` (its ``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="eqprop report",
        description="Write the Table 1 reproduction report (Markdown and a figure) from run "
        "directories holding results.json and config.yaml.",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        type=Path,
        default=list(DEFAULT_RUNS),
        metavar="DIR",
        help="directories searched for run directories (results.json + config.yaml), named "
        "<row>-<ep|bptt>-s<seed> as benchmarks/table1_queue.sh makes them; a run found twice "
        "counts once, with its most epochs, the first directory winning a tie (default: "
        "checkpoints/table1 runs/table1, those that exist)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("REPRODUCTION.md"), help="Markdown report to write"
    )
    parser.add_argument(
        "--figure",
        type=Path,
        default=None,
        help="PNG of the test-error curves (default: reproduction.png beside --out)",
    )
    return parser


def report_command(args: list[str]) -> str:
    """``eqprop report``: read the runs, write the report and the figure; return the Markdown."""
    from eqprop_lightning.plots import plot_table1_curves

    parser = build_parser()
    own = parser.parse_args(args)
    dirs = own.runs
    if dirs == list(DEFAULT_RUNS):
        dirs = [d for d in DEFAULT_RUNS if d.exists()]
    runs, variants = find_runs(dirs), find_variants(dirs)
    if not runs and not variants:  # a report of no runs would replace the committed one
        where = ", ".join(str(d) for d in dirs or DEFAULT_RUNS)
        raise ConfigError(
            f"no run directories under {where}{'' if dirs else ' (none of them exists)'}: "
            f"looked for <row>-<ep|bptt>-s<seed>[/version_N] (row one of {', '.join(ROWS)}) or "
            "p1h-<rule>-s<seed> holding results.json and config.yaml; give --runs DIR"
        )
    figure = own.figure or own.out.with_name("reproduction.png")
    for option, path, example in (
        ("--out", own.out, "REPRODUCTION.md"),
        ("--figure", figure, "reproduction.png"),
    ):
        check_file_to_write(path, f"{option} {path}", example)
    for path in (own.out, figure):  # only once both are known to be files
        path.parent.mkdir(parents=True, exist_ok=True)
    published = {ROW_NAMES[r]: v[0] for (r, a), v in PUBLISHED.items() if a == "ep"}
    counted = [r for r in runs if not r.differs]
    plot_table1_curves(curves(counted), published, figure, planned_epochs(counted))
    try:
        link = figure.resolve().relative_to(own.out.resolve().parent)
    except ValueError:
        link = figure.resolve()
    command = "eqprop report " + " ".join(args) if args else "eqprop report"
    text = render(runs, link, command.strip(), variants)
    write_text_atomic(own.out, text)
    print(f"{len(runs)} runs; report written to {own.out}, figure to {figure}")
    return text
