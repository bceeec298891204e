"""``eqprop report`` on synthetic run directories: selection, statistics, partial runs, output."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from eqprop_lightning.cli import main
from eqprop_lightning.config_files import flat
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.report import (
    config_seed,
    curves,
    find_runs,
    planned_epochs,
    render,
    report_command,
)

REPO = Path(__file__).resolve().parents[1]

ROOT = Path(__file__).resolve().parents[1]


def write_run(
    root: Path,
    name: str,
    test: list[float],
    planned: int,
    val: list[float] | None = None,
    train: list[float] | None = None,
    seconds: list[float] | None = None,
    version: str | None = "version_0",
) -> Path:
    """A run directory as benchmarks/table1_queue.sh leaves it: ``<root>/<name>/version_0/``
    with ``config.yaml`` and ``results.json`` (the old schema, without ``sets``, unless ``val``
    is given)."""
    row, alg, seed = re.match(r"(\w+)-(ep|bptt)-s(\d+)", name).groups()
    run = root / name / version if version else root / name
    run.mkdir(parents=True)
    config = {"seed_everything": int(seed), "trainer": {"max_epochs": planned}}
    config["model"] = {"algorithm": alg}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    epochs = []
    for i, t in enumerate(test):
        e = {"epoch": i + 1, "test_error": t, "train_error": (train or test)[i] / 2}
        e["seconds"] = (seconds or [10.0] * len(test))[i]
        if val is not None:
            e["val_error"] = val[i]
        epochs.append(e)
    results: dict = {"algorithm": alg, "epochs": epochs}
    if val is not None:
        results |= {"seed": int(seed), "sets": {"test_error": "test", "val_error": "val split"}}
    (run / "results.json").write_text(json.dumps(results))
    return run


def summary_cell(text: str, row: str, rule: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {row} | {rule} | "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_best_is_chosen_on_validation_not_on_test(tmp_path):
    # validation is lowest at epoch 3 (test 2.5 there); the test error is lowest at epoch 5
    val = [5.0, 3.0, 1.5, 2.0, 2.2, 2.4]
    test = [5.1, 3.1, 2.5, 2.6, 1.0, 2.8]
    write_run(tmp_path, "p1h-ep-s0", test, planned=6, val=val)
    (run,) = find_runs([tmp_path])
    best = run.best_by_validation()
    assert best["epoch"] == 3 and best["test_error"] == 2.5
    text = render([run], None, "eqprop report")
    assert "epoch 3: val 1.50, test 2.50" in text
    assert "epoch 5" not in text


def test_nothing_is_best_without_a_validation_split(tmp_path):
    # the old schema (no "sets"): every number is a test-set evaluation
    write_run(tmp_path, "p1h-ep-s0", [5.0, 2.0, 3.0], planned=3)
    # "sets" names a validation set but an epoch lacks it: no selection either
    run = write_run(tmp_path, "p1h-bptt-s0", [5.0, 2.0, 3.0], planned=3, val=[4.0, 1.0, 2.0])
    results = json.loads((run / "results.json").read_text())
    del results["epochs"][1]["val_error"]
    (run / "results.json").write_text(json.dumps(results))
    runs = find_runs([tmp_path])
    assert [r.best_by_validation() for r in runs] == [None, None]
    text = render(runs, None, "eqprop report")
    cells = [[c.strip() for c in x.strip("|").split("|")] for x in text.splitlines()]
    run_rows = [c for c in cells if c[0] == "P-1h" and len(c) == 11]
    assert [c[8] for c in run_rows] == ["no validation split"] * 2


def test_mean_std_over_seeds_and_last_epochs_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    curves = {seed: rng.uniform(1.0, 4.0, size=8).round(2) for seed in (0, 1, 2, 3)}
    for seed, curve in curves.items():
        write_run(tmp_path, f"p2h-ep-s{seed}", curve.tolist(), planned=8)
    runs = find_runs([tmp_path])
    text = render(runs, None, "eqprop report")
    finals = np.array([c[-1] for c in curves.values()])
    cell = summary_cell(text, "P-2h", "EP")[3]
    assert cell == f"{finals.mean():.2f} ± {finals.std(ddof=1):.2f} (n = 4)"
    for run in runs:
        tail = curves[run.seed][-5:]
        assert run.last_epochs() == pytest.approx((tail.mean(), tail.min(), tail.max()))
        assert f"{tail.mean():.2f} [{tail.min():.2f}-{tail.max():.2f}] (5)" in text


def test_partial_runs_are_labelled_and_left_out_of_the_mean(tmp_path):
    write_run(tmp_path, "pconv-ep-s0", [3.0, 2.0, 1.5], planned=3)
    write_run(tmp_path, "pconv-ep-s1", [3.0, 9.0], planned=3)  # unfinished: 2 of 3 epochs
    write_run(tmp_path, "pconv-bptt-s0", [4.0, 2.5], planned=40, seconds=[30.0, 50.0])
    text = render(find_runs([tmp_path]), None, "eqprop report")
    assert summary_cell(text, "P-conv", "EP")[3] == "1.50 (n = 1)"  # not (1.5 + 9) / 2
    assert summary_cell(text, "P-conv", "BPTT")[3].startswith("partial: 2.50")
    line = next(x for x in text.splitlines() if x.startswith("| P-conv | BPTT | 0 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:6] == ["**partial**", "2 / 40", "2.50 (partial)"]
    assert cells[9] == "40"  # median of 30 and 50 s


def test_a_run_found_twice_counts_once_with_its_most_epochs(tmp_path):
    live, committed = tmp_path / "runs" / "table1", tmp_path / "checkpoints" / "table1"
    write_run(committed, "eb2h-ep-s0", [4.0, 3.0], planned=5, version=None)
    write_run(live, "eb2h-ep-s0", [4.0, 3.0, 2.0], planned=5)
    (run,) = find_runs([live, committed])
    assert run.done == 3 and run.path.parent.parent == live


def test_a_tie_goes_to_the_committed_copy_that_a_fresh_clone_has(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(Path("checkpoints/table1"), "eb2h-ep-s0", [4.0, 3.0], planned=5, version=None)
    write_run(Path("runs/table1"), "eb2h-ep-s0", [4.0, 3.0], planned=5)
    main(["report", "--out", "R.md"])  # the default directories
    assert "`checkpoints/table1/eb2h-ep-s0`" in Path("R.md").read_text()
    assert "`runs/table1/eb2h-ep-s0" not in Path("R.md").read_text()


@pytest.mark.parametrize(
    "model", [{"nudging": "symmetric"}, {"symmetric": True}, {"loss": "cross_entropy"}]
)
def test_a_rule_variant_logged_as_a_row_is_not_counted(tmp_path, model):
    """A run of a config plus a rule override, logged under the row's name (``p1h``), is not the
    row's two-phase EP."""
    write_run(tmp_path, "p1h-ep-s0", [3.0], planned=1)
    variant = write_run(tmp_path / "other", "p1h-ep-s0", [1.0, 1.0], planned=2)
    config = yaml.safe_load((variant / "config.yaml").read_text())
    config["model"] |= model
    (variant / "config.yaml").write_text(yaml.safe_dump(config))
    (run,) = find_runs([tmp_path])
    assert run.done == 1


def test_published_numbers_and_not_retrieved(tmp_path):
    text = render([], None, "eqprop report")
    assert summary_cell(text, "P-2h", "EP")[2] == "1.95 ± 0.10 (0.14)"
    assert summary_cell(text, "P-3h", "EP")[2] == "2.01 ± 0.18 (0.10)"
    assert summary_cell(text, "P-conv", "EP")[2] == "1.02 ± 0.04 (0.54)"
    for row, rule in [("P-1h", "EP"), ("EB-1h", "EP"), ("EB-2h", "EP"), ("P-2h", "BPTT")]:
        assert summary_cell(text, row, rule)[2:4] == ["not retrieved", "not run"]


def test_cli_writes_report_and_figure(tmp_path, capsys):
    runs = tmp_path / "table1"
    write_run(runs, "p1h-ep-s0", [4.0, 3.0], planned=2)
    write_run(runs, "p1h-bptt-s0", [4.5, 2.0], planned=2)
    # into folders that do not exist yet
    out, fig = tmp_path / "out" / "REPRODUCTION.md", tmp_path / "out" / "figures" / "curves.png"
    main(["report", "--runs", str(runs), "--out", str(out), "--figure", str(fig)])
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out.read_text()
    assert "![test error per epoch](figures/curves.png)" in text
    assert summary_cell(text, "P-1h", "BPTT")[3] == "2.00 (n = 1)"
    assert (
        "eqprop fit --config configs/mnist/p1h.yaml --config configs/overrides/bptt.yaml "
        "--seed_everything 0" in text
    )
    assert "benchmarks/table1_queue.sh p1h:ep:0 p1h:bptt:0" in text


@pytest.mark.parametrize("target", ["out", "figure", "results", "config"])
def test_bad_paths_and_files_are_one_line_errors_before_anything_is_written(
    target, tmp_path, capsys
):
    runs = tmp_path / "table1"
    run = write_run(runs, "p1h-ep-s0", [4.0, 3.0], planned=2)
    out, figure = tmp_path / "report" / "R.md", tmp_path / "report" / "R.png"
    expected = {
        "out": f"--out {out} is a directory",
        "figure": f"--figure {figure} is a directory",
        "results": f"{run / 'results.json'}: unreadable (Expecting",
        "config": f"{run / 'config.yaml'}: holds no mapping",
    }[target]
    if target in ("out", "figure"):
        (out if target == "out" else figure).mkdir(parents=True)
    elif target == "results":
        (run / "results.json").write_text('{"epochs": [')
    else:
        (run / "config.yaml").write_text("- a list\n")
    with pytest.raises(SystemExit) as stop:
        main(["report", "--runs", str(runs), "--out", str(out), "--figure", str(figure)])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("eqprop: error: ") and expected in line
    assert not out.is_file() and not figure.is_file()


def test_missing_runs_directory_is_a_config_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md")])
    assert exit_.value.code == 2
    assert "nope: no such directory" in capsys.readouterr().err


@pytest.mark.parametrize("runs", ["empty", "file", "other", "defaults"])
def test_no_runs_is_a_one_line_error_and_nothing_is_written(runs, tmp_path, capsys, monkeypatch):
    """--runs naming an empty directory, a file, or a directory of no Table 1 runs (or no default
    directory existing) refused: a report of 0 runs would replace the committed one."""
    monkeypatch.chdir(tmp_path)
    out, figure = tmp_path / "R.md", tmp_path / "R.png"
    given = tmp_path / "given"
    if runs == "file":
        given.write_text("notes\n")
    else:
        given.mkdir()
    if runs == "other":  # a run directory, but of no Table 1 row
        (given / "mine" / "version_0").mkdir(parents=True)
        (given / "mine" / "version_0" / "results.json").write_text('{"epochs": []}')
    where = "checkpoints/table1, runs/table1" if runs == "defaults" else str(given)
    expected = {
        "file": f"--runs {given} is a file: give a directory",
        "defaults": f"no run directories under {where} (none of them exists)",
    }.get(runs, f"no run directories under {where}: ")
    args = [] if runs == "defaults" else ["--runs", str(given)]
    with pytest.raises(SystemExit) as stop:
        main(["report", *args, "--out", str(out), "--figure", str(figure)])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("eqprop: error: ") and expected in line
    if runs != "file":
        assert "<row>-<ep|bptt>-s<seed>" in line and "results.json" in line
    assert not out.exists() and not figure.exists()


def test_rerun_seed_follows_config_includes(tmp_path):
    (tmp_path / "base.yaml").write_text("seed_everything: 3\nmodel: {}\n")
    (tmp_path / "row.yaml").write_text("config: base.yaml\nmodel.T: 5\n")
    (tmp_path / "own.yaml").write_text("config: base.yaml\nseed_everything: 7\n")
    assert (config_seed(tmp_path / "row.yaml"), config_seed(tmp_path / "own.yaml")) == (3, 7)
    (tmp_path / "none.yaml").write_text("model: {}\n")
    with pytest.raises(ConfigError, match="sets no seed_everything"):
        config_seed(tmp_path / "none.yaml")


def test_p1h_by_learning_rule_lists_each_override_once(tmp_path):
    """Each rule's P-1h run appears once, in the table's order, with its final and last-5
    numbers; of two seeds the lower is shown; names that are no rule are left out."""
    root = tmp_path / "table1"
    write_run(root, "p1h-ep-s0", [3.0, 2.0], planned=2)
    for name, test in [
        ("p1h-rbp-s0", [4.0, 3.5]),
        ("p1h-symmetric-s1", [9.0]),
        ("p1h-symmetric-s0", [2.5, 1.5, 1.0]),
        ("p1h-typo-s0", [1.0]),
    ]:
        run = root / name / "version_0"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_epochs": 3}}))
        epochs = [
            {"epoch": i + 1, "test_error": t, "train_error": t / 4} for i, t in enumerate(test)
        ]
        (run / "results.json").write_text(json.dumps({"algorithm": "ep", "epochs": epochs}))
    report_command(["--runs", str(root), "--out", str(tmp_path / "R.md")])
    text = (tmp_path / "R.md").read_text()
    section = text[text.index("## P-1h by learning rule") : text.index("## Rerunning a row")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]
    assert [c[0] for c in cells] == [
        "EP, positive nudging (two-phase; the config)",
        "EP, symmetric nudging",
        "RBP",
    ]
    assert cells[1][2:7] == ["0", "3 / 3", "1.00", "1.67 [1.00-2.50] (3)", "0.25"]
    assert cells[2][4] == "3.50 (partial)"
    # the symmetric run is not counted as the row's EP
    assert summary_cell(text, "P-1h", "EP")[3] == "2.00 (n = 1)"


def test_a_run_stopped_in_its_first_epoch_is_started_not_absent(tmp_path):
    """A run with a ``last.ckpt`` but no finished epoch (no results.json yet) is listed as
    started; a directory with neither is not a run."""
    write_run(tmp_path, "pconv-ep-s0", [3.0, 2.0], planned=40)
    started = write_run(tmp_path, "pconv-bptt-s0", [], planned=40)
    (started / "results.json").unlink()
    (started / "checkpoints").mkdir()
    (started / "checkpoints" / "last.ckpt").write_bytes(b"")
    empty = write_run(tmp_path, "eb2h-bptt-s7", [], planned=50)
    (empty / "results.json").unlink()
    runs = find_runs([tmp_path])
    assert [(r.row, r.algorithm, r.done) for r in runs] == [
        ("pconv", "ep", 2),
        ("pconv", "bptt", 0),
    ]
    text = render(runs, None, "eqprop report")
    assert summary_cell(text, "P-conv", "BPTT")[3] == "started: no epoch done yet (n = 1)"
    assert summary_cell(text, "P-conv", "BPTT")[6] == "0 / 40"
    line = next(x for x in text.splitlines() if x.startswith("| P-conv | BPTT | 0 |"))
    assert [c.strip() for c in line.strip("|").split("|")][3:7] == [
        "**started**",
        "0 / 40",
        "-",
        "-",
    ]
    assert summary_cell(text, "EB-2h", "BPTT")[3] == "not run"


@pytest.mark.parametrize("row", ["p1h", "eb1h", "p2h", "pconv", "eb2h"])
def test_rerun_commands_rebuild_the_committed_runs(row):
    """Each ``eqprop fit`` line of REPRODUCTION.md resolves to the model, data and seed that
    the committed run of that name recorded in its config.yaml."""
    from eqprop_lightning.config_files import resolved_config
    from eqprop_lightning.report import rerun_commands

    table1 = ROOT / "checkpoints" / "table1"
    checked = 0
    for line in rerun_commands(row, [0, 7])[1:]:
        args = shlex.split(line)[3:]  # after OMP_NUM_THREADS=1 eqprop fit
        name = args[args.index("--trainer.logger.init_args.name") + 1]
        recorded = table1 / name / "config.yaml"
        if not recorded.is_file():
            continue
        configs = [args[i + 1] for i, arg in enumerate(args) if arg == "--config"]
        overrides = [a for i, a in enumerate(args) if "--config" not in (a, args[i - 1])]
        rebuilt = resolved_config(*(ROOT / c for c in configs), overrides=tuple(overrides))
        run = flat(yaml.safe_load(recorded.read_text()))
        rebuilt = flat(rebuilt)
        # options added since the run was recorded are absent from its config.yaml; where the
        # data are and whether the steps are compiled do not change what a run computes
        keys = [
            k
            for k in run
            if k.startswith(("model.", "data.", "seed_"))
            and k not in ("data.init_args.data_dir", "model.compile")
        ]
        assert len(keys) > 10
        assert {k: rebuilt[k] for k in keys} == {k: run[k] for k in keys}, name
        checked += 1
    assert checked == 2  # the EP and the BPTT run of the row's seed


def test_summary_train_error_averages_the_finished_runs_only(tmp_path):
    write_run(tmp_path, "p2h-ep-s0", [3.0, 2.0], planned=2, train=[6.0, 1.0])
    write_run(tmp_path, "p2h-ep-s1", [5.0, 4.0], planned=2, train=[8.0, 3.0])
    write_run(tmp_path, "p2h-ep-s2", [9.0], planned=2, train=[40.0])  # unfinished
    text = render(find_runs([tmp_path]), None, "eqprop report")
    # write_run stores train / 2: finals 0.5 and 1.5 -> 1.00 (with the unfinished 20.0: 7.33)
    assert summary_cell(text, "P-2h", "EP")[4] == "1.00"


def test_seconds_per_epoch_is_the_median(tmp_path):
    write_run(tmp_path, "p1h-ep-s0", [3.0, 2.0, 1.0], planned=3, seconds=[10.0, 20.0, 60.0])
    (run,) = find_runs([tmp_path])
    assert run.seconds_per_epoch() == 20.0  # the mean would be 30
    text = render([run], None, "r")
    line = next(x for x in text.splitlines() if x.startswith("| P-1h | EP | 0 |"))
    assert [c.strip() for c in line.strip("|").split("|")][9] == "20"


def test_rerun_queue_line_runs_each_seed_s_ep_and_bptt_in_turn():
    """The queue line pairs the rules seed by seed (EP then BPTT for seed 0, then seed 7), so
    that a stopped queue leaves comparable EP and BPTT runs; one eqprop fit line per job, in
    the queue's order, the BPTT ones with the BPTT override."""
    from eqprop_lightning.report import rerun_commands

    queue, *fits = rerun_commands("p2h", [0, 7])
    assert queue == (
        "OMP_NUM_THREADS=1 benchmarks/table1_queue.sh p2h:ep:0 p2h:bptt:0 p2h:ep:7 p2h:bptt:7"
    )
    names = [shlex.split(line)[-3] for line in fits]
    assert names == ["p2h-ep-s0", "p2h-bptt-s0", "p2h-ep-s7", "p2h-bptt-s7"]
    overridden = ["configs/overrides/bptt.yaml" in line for line in fits]
    assert overridden == [False, True, False, True]


def test_table1_save_copies_a_run_stopped_in_its_first_epoch_and_goes_on(tmp_path):
    """A run stopped inside its first epoch has last.ckpt and config.yaml but no results.json
    (the report lists it as started): the script saves it and every run after it; it stopped
    at the missing file and left the later runs unsaved. An earlier run's results.json in the
    saved folder goes (it stayed, beside the new run's checkpoint); no temporary file stays."""
    (tmp_path / "benchmarks").mkdir()
    stale = tmp_path / "checkpoints" / "table1" / "a-ep-s0" / "results.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"epochs": [{"epoch": 1}, {"epoch": 2}]}')
    shutil.copy(REPO / "benchmarks" / "table1_save.sh", tmp_path / "benchmarks")
    for name, results in (("a-ep-s0", False), ("b-ep-s0", True)):
        run = tmp_path / "runs" / "table1" / name / "version_0"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
        (run / "config.yaml").write_text("seed_everything: 0\n")
        if results:
            (run / "results.json").write_text('{"epochs": [{"epoch": 1}]}')
    done = subprocess.run(
        ["bash", "benchmarks/table1_save.sh"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "checkpoints" / "table1"
    assert sorted(p.name for p in (saved / "a-ep-s0").iterdir()) == ["config.yaml", "last.ckpt"]
    assert (saved / "b-ep-s0" / "results.json").read_text() == '{"epochs": [{"epoch": 1}]}'
    assert done.stdout.splitlines() == [
        "saved a-ep-s0: no epoch finished",
        "saved b-ep-s0: 1 epochs",
    ]


def test_epochs_without_evaluation_are_left_out_of_the_numbers(tmp_path):
    """results.json holds test_error (and val_error) null for an epoch not evaluated
    (check_val_every_n_epoch > 1): the final error is the last evaluated epoch's, saying which,
    the last-5 statistics and the best epoch skip the others, the curve has no gap point. The
    report died with a TypeError."""
    run = write_run(tmp_path, "p1h-ep-s0", [5.0, 4.0, 3.0, 2.0], planned=4, val=[6, 1, 4, 3])
    results = json.loads((run / "results.json").read_text())
    for epoch in results["epochs"][1::2]:  # epochs 2 and 4 not evaluated
        epoch["test_error"] = epoch["val_error"] = None
    (run / "results.json").write_text(json.dumps(results))
    (found,) = find_runs([tmp_path])
    assert found.final_test == 3.0
    assert found.last_epochs() == (4.0, 3.0, 5.0)
    assert found.tail_cell() == "4.00 [3.00-5.00] (2)"
    assert found.best_by_validation()["epoch"] == 3
    line = next(x for x in render([found], None, "r").splitlines() if "`" + str(run) in x)
    assert "| 3.00 (epoch 3) |" in line
    assert curves([found])["P-1h"]["ep"] == [(0, [1, 3], [5.0, 3.0], False)]


def test_planned_epochs_are_per_row_the_most_any_run_plans(tmp_path):
    """The figure's epoch axis of a row runs to the planned epochs of its longest run."""
    write_run(tmp_path, "p1h-ep-s0", [5.0, 4.0], planned=30)
    write_run(tmp_path, "p1h-bptt-s0", [5.0], planned=40)  # partial
    write_run(tmp_path, "pconv-ep-s0", [2.0], planned=40)
    assert planned_epochs(find_runs([tmp_path])) == {"P-1h": 40, "P-conv": 40}


def test_a_nudge_inside_run_is_no_table1_ep_run(tmp_path):
    """configs/overrides/nudge_inside.yaml (a variant of its own) run under the row's name is
    not the seed's two-phase EP, as the nudging and loss variants are not."""
    run = write_run(tmp_path, "p1h-ep-s0", [5.0], planned=1)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["net"] = {"init_args": {"nudge_in_activation": True}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert find_runs([tmp_path]) == []


def test_a_run_with_other_settings_than_its_row_is_not_counted(tmp_path):
    """A run named as a row but trained with other learning rates (``--model.lrs`` added to the
    queue's command) counted in the row's mean: now it is listed with its differences and left
    out of the statistics; a compiled run and a validation split count."""
    other = write_run(tmp_path, "p2h-ep-s0", [1.0, 1.0], planned=2)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"] |= {"lrs": [0.1, 0.1, 0.1], "T": 100, "compile": True}
    config["data"] = {"init_args": {"batch_size": 20, "val_split": 5000, "data_dir": "/x"}}
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    write_run(tmp_path, "p2h-ep-s1", [3.0, 2.0], planned=2)
    text = render(find_runs([tmp_path]), None, "eqprop report")
    assert summary_cell(text, "P-2h", "EP")[3:6] == ["2.00 (n = 1)", "1.00", "1 / 1"]
    line = next(x for x in text.splitlines() if x.startswith("| P-2h | EP | 0 |"))
    assert line.split("|")[4].strip() == "finished, **not counted** (settings differ)"
    listed = text.split("## Runs not counted: settings that differ from the row's config\n\n")[1]
    assert listed.splitlines()[0] == (
        f"- `{other}`: model.lrs: [0.1, 0.1, 0.1] (config: [0.005, 0.05, 0.2])"
    )


def test_report_figure_leaves_out_a_run_with_other_settings(tmp_path, monkeypatch):
    """The curves and planned epochs drawn are those of the counted runs only; a BPTT run that
    recorded the unused beta of an older config is no difference, a user rule's options
    (compared whole, the config's ``None`` as ``{}``) are."""
    import eqprop_lightning.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "plot_table1_curves", lambda *args: drawn.append(args))
    other = write_run(tmp_path, "p2h-ep-s0", [1.0, 1.0], planned=3)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"] |= {"rule_args": {"a": 1}}
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    old_bptt = write_run(tmp_path, "p2h-bptt-s0", [3.0, 2.0], planned=2)
    config = yaml.safe_load((old_bptt / "config.yaml").read_text())
    config["model"] |= {"beta": 0.5, "symmetric": False}
    (old_bptt / "config.yaml").write_text(yaml.safe_dump(config))
    report_command(["--runs", str(tmp_path), "--out", str(tmp_path / "R.md")])
    ((panels, _, _, planned),) = drawn
    assert panels["P-2h"] == {"ep": [], "bptt": [(0, [1, 2], [3.0, 2.0], False)]}
    assert planned == {"P-2h": 2}
    text = (tmp_path / "R.md").read_text()
    assert f"- `{other}`: model.rule_args: {{'a': 1}} (config: {{}})" in text.splitlines()


def test_table1_queue_logs_each_run_s_exit_status_and_skips_a_malformed_job(tmp_path):
    """The queue's "end" line gives the fit's exit status (it logged rc=0 for every run: the
    $(date) substitution reset $? first), and a job without a seed is refused with a message
    instead of running as "p1h-ep-s" with an empty seed; the jobs after it still run."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "table1_queue.sh", tmp_path / "benchmarks")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "eqprop"  # fails as a diverged run would
    fake.write_text('#!/bin/sh\necho "fit $*"\nexit 3\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "benchmarks/table1_queue.sh", "p1h:ep", "p1h:ep:0"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert "skip 'p1h:ep': expected <row>:<rule>:<seed>" in done.stderr
    ends = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if " end " in line]
    assert ends == ["end p1h-ep-s0 rc=3"]
    assert "--seed_everything 0 " in done.stdout
