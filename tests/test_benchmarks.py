"""The benchmark scripts (``benchmarks/``): a short run of ``phases.py`` and of ``throughput.py``
writes the documented JSON keys, and a bad option exits with status 2 and a message naming the
option and the value, before anything is measured."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
#: every script's ``meta`` (benchmarks/README.md)
META_KEYS = {
    "torch",
    "threads",
    "omp_num_threads",
    "clock",
    "device",
    "cpu_count",
    "date",
    "loadavg_before",
    "loadavg_after",
}
#: the options that keep a run of throughput.py to one short row
ONE_ROW = ["--configs", "p1h", "--algorithms", "ep", "--seconds", "0.05", "--synthetic"]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH / name), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def check_meta(meta: dict, clock: str) -> None:
    assert META_KEYS <= set(meta)
    assert meta["clock"] == clock and meta["device"] == "cpu" and meta["threads"] == 1
    assert isinstance(meta["torch"], str) and isinstance(meta["cpu_count"], int)
    for key in ("loadavg_before", "loadavg_after"):
        assert len(meta[key]) == 3 and all(isinstance(x, float) for x in meta[key])


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_phases_writes_its_keys(tmp_path: Path) -> None:
    out = tmp_path / "phases.json"
    run_script(
        "phases.py", "--out", str(out), "--nets", "p1h", "--seconds", "0.05", "--threads", "1"
    )
    report = json.loads(out.read_text())
    assert set(report) == {"p1h", "meta"}
    row = report["p1h"]
    for key in ("two_phase", "symmetric_batched", "symmetric_sequential"):
        assert positive(row[key]), key
    assert row["batched_vs_two_phase"] == pytest.approx(row["symmetric_batched"] / row["two_phase"])
    assert row["sequential_vs_batched"] == pytest.approx(
        row["symmetric_sequential"] / row["symmetric_batched"]
    )
    check_meta(report["meta"], "wall")


def test_holomorphic_writes_its_keys(tmp_path: Path) -> None:
    """Both nets' rows (the script first checks that its holomorphic variants give one
    estimate) and ``meta``."""
    out = tmp_path / "holomorphic.json"
    run_script("holomorphic.py", "--out", str(out), "--seconds", "0.05", "--threads", "1")
    report = json.loads(out.read_text())
    assert set(report) == {"p1h", "eb_tanh", "meta"}
    for row in (report["p1h"], report["eb_tanh"]):
        for key in ("two_phase", "holomorphic", "torch_functions", "static_in_complex"):
            assert positive(row[key]), key
        assert row["static_in_complex_vs_holomorphic"] == pytest.approx(
            row["static_in_complex"] / row["holomorphic"]
        )
    check_meta(report["meta"], "wall")


def test_throughput_writes_its_keys(tmp_path: Path) -> None:
    """One eager P-1h EP row on random inputs: the row, the shipped variant's key and ``meta``
    (the first step on the wall clock whatever ``--clock``)."""
    out = tmp_path / "t.json"
    run_script(
        "throughput.py",
        "--out",
        str(out),
        *ONE_ROW,
        "--variants",
        "eager",
        "--threads",
        "1",
        "--clock",
        "cpu",
    )
    report = json.loads(out.read_text())
    assert set(report) == {"p1h/ep/eager", "p1h/ep", "meta"}
    row = report["p1h/ep/eager"]
    assert positive(row["samples_per_s"]) and positive(row["step_ms"])
    assert positive(row["first_step_s"]) and row["data"] == "synthetic"
    assert row["samples_per_s"] == pytest.approx(20 / (row["step_ms"] / 1e3))
    assert report["p1h/ep"] == row | {"variant": "eager"}  # P-1h ships eager
    check_meta(report["meta"], "cpu")
    assert report["meta"]["first_step_clock"] == "wall"
    assert report["meta"]["seconds"] == 0.05


BAD_OPTIONS = [
    ("throughput.py", [*ONE_ROW, "--variants", "eager", "--threads", "0"], "--threads: 0"),
    ("throughput.py", [*ONE_ROW, "--variants", "eager", "--end-to-end", "0"], "--end-to-end: 0"),
    ("throughput.py", [*ONE_ROW, "--variants", "typo"], "--variants: invalid choice: 'typo'"),
    ("throughput.py", [*ONE_ROW, "--variants", "eager", "--seconds", "0"], "--seconds: 0"),
    ("throughput.py", [*ONE_ROW, "--variants", "eager", "--device", "tpu"], "--device: 'tpu'"),
    # every Table 1 row is a --configs choice: the error is the later --seconds (the old code
    # stopped at "--configs: invalid choice: 'p2h'")
    ("throughput.py", ["--configs", "p2h", "p3h", "eb2h", "--seconds", "0"], "--seconds: 0"),
    ("phases.py", ["--nets", "p1h", "--seconds", "0.05", "--threads", "0"], "--threads: 0"),
    ("holomorphic.py", ["--seconds", "0", "--threads", "1"], "--seconds: 0"),
    ("startup.py", ["--repeats", "0"], "--repeats: 0"),
    ("gdu.py", ["--configs", "fig3_p1h", "--repeats", "0"], "--repeats: 0"),
    ("ddp.py", ["--repeats", "0"], "--repeats: 0"),
    (
        "ddp.py",
        ["--configs", "1p-1t", "--repeats", "1", "--batches", "12", "--warmup", "2"]
        + ["--allreduce-iters", "0"],
        "--allreduce-iters: 0",
    ),
    (
        "drift.py",
        ["--config", str(ROOT / "configs" / "mnist" / "p1h.yaml"), "--batches", "1"]
        + ["--every", "0"],
        "--every: 0",
    ),
    (
        "drift.py",
        ["--config", str(ROOT / "configs" / "mnist" / "p1h.yaml"), "--trainer.max_epochs", "3"],
        "--trainer.max_epochs: drift.py builds only the model and data",
    ),
    # without --out, on which sequence.py's old code stopped before measuring
    ("sequence.py", ["--gpu-tflops", "0"], "--gpu-tflops: 0"),
    ("sequence.py", ["--epochs", "0"], "--epochs: 0"),
]


@pytest.mark.parametrize(("script", "args", "named"), BAD_OPTIONS)
def test_bad_option_exits_2_naming_it(
    script: str,
    args: list[str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Run in this process (the options are checked before anything is imported lazily or
    measured); the old code ran, ignoring the option, or failed later with a traceback."""
    out = [] if script == "sequence.py" else ["--out", str(tmp_path / "out.json")]
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [script, *out, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{script}: error: argument {named}" in message, message
    assert not (tmp_path / "out.json").exists()


OUT_SCRIPTS = [
    "throughput.py",
    "phases.py",
    "holomorphic.py",
    "startup.py",
    "gdu.py",
    "ddp.py",
    "drift.py",
    "floor.py",
    "sequence.py",
]


@pytest.mark.parametrize("script", OUT_SCRIPTS)
def test_an_out_that_cannot_be_written_exits_2_before_measuring(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--out`` a directory, or under a file: the old code measured (tens of CPU minutes for
    sequence.py) and then stopped on the write with a traceback."""
    monkeypatch.syspath_prepend(str(BENCH))
    (tmp_path / "file").write_text("")
    for out, named in ((tmp_path, "is a directory"), (tmp_path / "file" / "o.json", "is a file")):
        monkeypatch.setattr(sys, "argv", [script, "--out", str(out)])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(BENCH / script), run_name="__main__")
        assert exit_info.value.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{script}: error: argument --out: " in message and named in message, message


def test_end_to_end_times_two_fits_after_an_untimed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The N- and 2N-batch epochs both follow a 1-batch fit that fills inductor's cache: the old
    code timed the N-batch fit with a cold compile (about 45 s for EB-1h) and the 2N-batch one
    with a warm cache, and the difference was the compile-time gap, not N batches."""
    monkeypatch.syspath_prepend(str(BENCH))
    import throughput

    fits = []

    def fake_fit(cmd: list, **kwargs) -> None:
        options = dict(arg.split("=", 1) for arg in cmd if arg.startswith("--trainer."))
        batches = int(options["--trainer.limit_train_batches"])
        save_dir, version = (
            options[f"--trainer.logger.init_args.{k}"] for k in ("save_dir", "version")
        )
        run_dir = Path(save_dir, "p1h", version)
        run_dir.mkdir(parents=True)  # a version of its own (a fixed one is never reused)
        seconds = 5.0 + 0.4 * batches + (45.0 if not fits else 0.0)  # the first fit compiles
        (run_dir / "results.json").write_text(json.dumps({"epochs": [{"seconds": seconds}]}))
        fits.append(batches)

    monkeypatch.setattr(throughput, "run_checked", fake_fit)
    for n in (10, 1):
        fits.clear()
        e = throughput.end_to_end("p1h", n, str(tmp_path / str(n)), "cpu", 3000)
        assert fits == [1, n, 2 * n]
        assert e["train_ms_per_batch"] == pytest.approx(400)
        assert e["full_epoch_seconds"] == pytest.approx(5.0 + 3000 * 0.4)


def test_startup_repeats_the_gdu_command_into_directories_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eqprop gdu`` refuses an --output_dir holding an earlier analysis: each repeat gets its
    own (one directory for all stopped the script at the second repeat)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import startup

    gdu_dirs = []

    def fake_wall_seconds(cmd: list, **kwargs) -> float:
        if "gdu" in cmd and "--output_dir" in cmd:
            out = Path(cmd[cmd.index("--output_dir") + 1])
            assert not out.exists()
            out.mkdir(parents=True)
            (out / "gdu.json").write_text("{}")
            gdu_dirs.append(out)
        return 1.0

    monkeypatch.setattr(startup, "wall_seconds", fake_wall_seconds)
    argv = ["startup.py", "--out", str(tmp_path / "s.json"), "--repeats", "3"]
    monkeypatch.setattr(sys, "argv", argv)
    startup.main()
    assert len(set(gdu_dirs)) == 3
    assert json.loads((tmp_path / "s.json").read_text())["meta"]["repeats"] == 3


def test_ddp_reports_each_runs_exit_status_and_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that wrote its result and then exited non-zero (gloo aborting a rank while
    tearing down) is kept, as documented; its exit status was dropped from the report."""
    monkeypatch.syspath_prepend(str(BENCH))
    import ddp

    def fake_run(name: str, args, tmp: Path, repeat: int) -> dict:
        processes, threads, batch = ddp.CONFIGS[name]
        return {
            "processes": processes, "threads_per_process": threads,
            "batch_size_per_process": batch, "global_batch_size": processes * batch,
            "samples_per_s": 100.0 + repeat, "ms_per_step": 10.0, "other_cpu_fraction": 0.0,
            "wall_seconds": 5.0, "rank_seconds": [1.0], "rank_cpu_seconds": [1.0],
            "stopped_at_max_time": False, "allreduce": None,
            "attempts": 1 + repeat, "returncode": -6 if repeat else 0,
        }  # fmt: skip

    monkeypatch.setattr(ddp, "run_config", fake_run)
    out = tmp_path / "d.json"
    monkeypatch.setattr(sys, "argv", ["ddp.py", "--out", str(out), "--configs", "1p-1t"])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--repeats", "2"])
    ddp.main()
    row = json.loads(out.read_text())["1p-1t"]
    assert (row["returncodes"], row["attempts"]) == ([0, -6], [1, 2])


def test_a_benchmark_report_keeps_non_finite_numbers(tmp_path: Path) -> None:
    """drift.py's ``norm_ratio`` is inf where BPTT's gradient is exactly 0 (NaN where both
    are): written as before (``Infinity``, ``NaN``, which Python's json reads back) instead of
    a ValueError that lost the whole run at its end."""
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    common.write_json(tmp_path / "d.json", {"rows": [{"norm_ratio": math.inf}, {"x": math.nan}]})
    rows = json.loads((tmp_path / "d.json").read_text())["rows"]
    assert rows[0]["norm_ratio"] == math.inf and math.isnan(rows[1]["x"])


def test_a_report_cut_short_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every script writes its JSON after each row: a write cut short (the process stopped in
    it) keeps the rows of the previous write; the old code wrote into the file itself."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common

    out = tmp_path / "out.json"
    common.write_json(out, {"rows": [1]})
    write_text = Path.write_text

    def cut_short(self: Path, text: str) -> None:
        write_text(self, text[:5])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(KeyboardInterrupt):
        common.write_json(out, {"rows": [1, 2]})
    assert json.loads(out.read_text()) == {"rows": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "/nonexistent.yaml"], "File does not exist: '/nonexistent.yaml'"),
        (
            ["--config", str(ROOT / "configs" / "mnist" / "p1h.yaml"), "--model.T", "0"],
            "T=0 must be a positive integer",
        ),
    ],
)
def test_drift_exits_2_on_a_bad_config_or_value(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The model and data are built from the options before anything is measured; the old code
    stopped there with a traceback (exit status 1)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", ["drift.py", "--out", str(tmp_path / "out.json"), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH / "drift.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--repo", "{tmp}", "--config", "p1h"], "--repo: {tmp} is not a checkout"),
        (["--config", "p9h", "--repo", "{original}"], "--config: invalid choice: 'p9h'"),
    ],
)
def test_original_refuses_a_wrong_checkout_or_config(
    args: list[str], named: str, tmp_path: Path
) -> None:
    """``original.py`` in a subprocess (its old code changed directory and imported the
    checkout's modules in the running process)."""
    checkout = tmp_path / "original"
    checkout.mkdir()
    for name in ("main.py", "netClasses.py", "netFunctions.py"):
        (checkout / name).write_text("")
    args = [a.format(tmp=tmp_path, original=checkout) for a in args]
    cmd = [sys.executable, str(BENCH / "original.py"), *args, "--alg", "ep"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert f"original.py: error: argument {named.format(tmp=tmp_path)}" in message, message


def test_gdu_says_not_measured_without_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--original`` a speed-up target is neither passed nor failed (JSON null)."""
    monkeypatch.syspath_prepend(str(BENCH))
    gdu = runpy.run_path(str(BENCH / "gdu.py"))
    assert gdu["verdict"]("speed-up", 10.0, None) == "speed-up 10 not measured"
    assert gdu["verdict"]("seconds", 120.0, False) == "seconds 120 FAIL"
    assert gdu["verdict"]("", None, None) == ""


def test_sequence_flops_are_the_counted_flops_of_a_step_and_an_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``flops`` counts on batches of 2 and 4 and extrapolates to ``setting["batch"]``; every
    matrix product is linear in the batch (no intercept), so the estimate must equal, exactly,
    ``FlopCounterMode``'s count of a step and of an evaluation run here at the full batch, built
    from the rules directly (three-phase EP, truncated BPTT, the free phase) rather than with
    ``sequence.py``'s helpers. The evaluation batch (the same for both rules) and the EP step are
    also composed from counts of single pieces at one example: ``eval = static + T step`` and
    ``ep = 2 static + (T + 2 K) step + 4 primitive`` (the free phase at ``B``, both nudged
    phases as one batch of ``2 B``, the primitive at ``2 B`` and its backward, which for each
    product ``W h`` with ``h`` a fixed state costs the forward again, as does the input term's
    ``P``). The old check (``ep_step > bptt_step``) passed with the extrapolation's ``/ 2``
    dropped."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from eqprop_lightning.learning import EquilibriumProp, TruncatedBPTT, free_phase
    from eqprop_lightning.nets import HopfieldClassifier

    def counted(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    monkeypatch.syspath_prepend(str(BENCH))
    sequence = runpy.run_path(str(BENCH / "sequence.py"))
    net = HopfieldClassifier([6], [[0, 0]], [12, 5, 2], embed_dim=8)
    T, K, beta, B = 4, 2, 0.1, 10  # B: neither of the counted batches
    setting = dict(T=T, K=K, beta=beta, lrs=[1e-3] * 4, batch=B)
    g = torch.Generator().manual_seed(0)  # the values do not change the count
    x = torch.randn(B, *net.example_shape, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(2, (B,), generator=g), 2).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step(rule) -> None:
        estimate = rule(net, x, y)
        opt.zero_grad()
        estimate.objective.backward()
        opt.step()

    def evaluate(x: torch.Tensor) -> None:
        with torch.no_grad():
            free_phase(net, net.static_terms(x), net.init_state(x), T)

    rules = dict(ep=EquilibriumProp(T, K, beta, nudging="symmetric"), bptt=TruncatedBPTT(T, K))
    step = {name: counted(lambda rule=rule: train_step(rule)) for name, rule in rules.items()}
    evaluation = counted(lambda: evaluate(x))
    for name in rules:
        assert sequence["flops"](setting, net, name) == (step[name], evaluation), name

    one = x[:1]
    with torch.no_grad():
        static = net.static_terms(one)
        s = free_phase(net, static, net.init_state(one), T)[1]
        per_static = counted(lambda: net.static_terms(one))
        per_step = counted(lambda: net.step(s, static))
        per_primitive = counted(lambda: net.primitive(s, static))
    assert evaluation == B * (per_static + T * per_step) > 0
    assert step["ep"] == B * (2 * per_static + (T + 2 * K) * per_step + 4 * per_primitive)
    assert evaluation < step["bptt"] < step["ep"]  # BPTT: the free phase and its backward


def test_drift_takes_the_model_and_data_options_in_every_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--data MNISTDataModule`` and ``--data=file.yaml`` are the data module's options as much
    as ``--data.batch_size``; ``--trainer...`` and look-alikes are not."""
    monkeypatch.syspath_prepend(str(BENCH))
    honoured = runpy.run_path(str(BENCH / "drift.py"))["honoured"]
    taken = ["--data", "--data=d.yaml", "--data.init_args.batch_size", "--model.T=5"]
    assert all(honoured(a) for a in [*taken, "--seed_everything=3"])
    assert not any(honoured(a) for a in ["--trainer.max_epochs", "--datamodule", "--models"])


def test_median_time_is_the_median_window_after_the_warm_up(monkeypatch) -> None:
    """On a scripted clock: the 3 warm-up calls (100 s each) do not count, each of the 5 windows
    of ``seconds / 5`` = 0.5 s times its calls (0.125, 0.25, 4, 0.5 and 0.0625 s per call): the
    median is 0.25 s, where the minimum is 0.0625, the mean 0.9875 and the warm-up far more."""
    monkeypatch.syspath_prepend(str(BENCH))
    from common import median_time

    windows = [[0.125] * 4, [0.25] * 2, [4.0], [0.5], [0.0625] * 8]
    durations = iter([100.0] * 3 + [d for window in windows for d in window])
    now = 0.0

    def call() -> None:
        nonlocal now
        now += next(durations)

    assert median_time(call, 2.5, lambda: now) == 0.25
    assert next(durations, None) is None  # every scripted call made, none more
