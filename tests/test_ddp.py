"""DDP on CPU (gloo, 2 processes): EP and BPTT updates equal those of one process trained on the
union of the two ranks' batches, and both ranks end with identical weights."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.multiprocessing.spawn import ProcessExitedException
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from eqprop_lightning.datamodules.splits import SplitsDataModule
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import PrototypicalFC

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

SIZES = [4, 16, 12]
N, PER_RANK = 16, 4  # 16 examples, 4 per rank per step: 2 steps of 8 examples in all


def dataset() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, SIZES[-1], generator=gen)
    y = torch.eye(SIZES[0])[torch.randint(0, SIZES[0], (N,), generator=gen)]
    return TensorDataset(x, y)


def model(algorithm: str, nudging: str | None = None) -> EqPropModule:
    torch.manual_seed(0)
    net = PrototypicalFC(SIZES, "sigm")
    beta = None if algorithm == "bptt" else 0.5
    return EqPropModule(net, [0.5, 0.5], algorithm=algorithm, T=12, K=4, beta=beta, nudging=nudging)


class Sequential(L.LightningDataModule):
    """The examples in order; under DDP rank r gets examples r, r + 2, r + 4, ..."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        data, trainer = dataset(), self.trainer
        sampler = DistributedSampler(
            data, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler)


class SaveWeights(L.Callback):
    """Each rank writes its final weights to ``<folder>/rank<r>.pt``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        torch.save(state, self.folder / f"rank{trainer.global_rank}.pt")


def fit(
    algorithm: str, folder: Path, devices: int, batch_size: int, nudging: str | None = None
) -> None:
    """Train; a spawned rank that dies of a signal (gloo on this CPU sandbox aborts now and then
    while tearing down, seen as SIGABRT) is retried up to twice. Wrong weights are not retried."""
    for attempt in range(3):
        try:
            return _fit(algorithm, folder, devices, batch_size, nudging)
        except ProcessExitedException as err:
            if attempt == 2 or "signal" not in str(err):
                raise


def _fit(algorithm: str, folder: Path, devices: int, batch_size: int, nudging: str | None) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveWeights(folder)],
        use_distributed_sampler=False,
    )
    trainer.fit(model(algorithm, nudging), datamodule=Sequential(batch_size))


@pytest.mark.parametrize(
    "algorithm, nudging", [("ep", None), ("bptt", None), ("ep", "random_sign"), ("cep", None)]
)
def test_two_processes_equal_one_process_on_the_union(algorithm, nudging, tmp_path, monkeypatch):
    """Random-sign EP: both ranks draw the sign of each step from the run's seed (here 0: -1
    then +1) and the global step, as the single process does. Continual EP: each of the K
    per-step updates is all-reduced, so the ranks' weights stay equal within the nudged phase."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    fit(algorithm, tmp_path / "ddp", devices=2, batch_size=PER_RANK, nudging=nudging)
    fit(algorithm, tmp_path / "single", devices=1, batch_size=2 * PER_RANK, nudging=nudging)
    rank0, rank1, single = (
        torch.load(p, weights_only=True)
        for p in (
            tmp_path / "ddp/rank0.pt",
            tmp_path / "ddp/rank1.pt",
            tmp_path / "single/rank0.pt",
        )
    )
    initial = model(algorithm, nudging).net.state_dict()
    for key, value in single.items():
        assert (value - initial[key]).abs().max() > 1e-4, "training must move the weights"
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)


class PoisonRank1(L.Callback):
    """Writes a NaN into rank 1's output weights before its second batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and batch_idx == 1:
            with torch.no_grad():
                pl_module.net.weights[0].weight[0, 0] = float("nan")


def test_a_divergence_on_one_rank_stops_both(tmp_path):
    """Rank 1 diverges: both ranks stop with the guard's error instead of rank 0 waiting in the
    gradient all-reduce (a 60 s process-group timeout turns a hang into a failure)."""
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=60)),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PoisonRank1()],
        use_distributed_sampler=False,
    )
    stopped = "training (diverged|stopped) at epoch 1, batch 1"  # rank 1 / rank 0
    with pytest.raises(Exception, match=stopped) as err:
        trainer.fit(model("ep"), datamodule=Sequential(PER_RANK // 2))
    assert "timed out" not in str(err.value).lower()


class TwoProcessFit:
    """`eqprop fit --trainer.devices 2` (gloo, as a subprocess that must finish in time) of a
    tiny P-1h for 2 epochs of 4 batches, in ``root``; :meth:`run` adds options."""

    def __init__(self, data: Path, root: Path) -> None:
        config = Path(__file__).resolve().parents[1] / "configs" / "mnist" / "p1h.yaml"
        self.root = root
        self.eqprop = [sys.executable, "-m", "eqprop_lightning.cli"]
        self.settings = [
            "--config", str(config), "--data.data_dir", str(data),
            "--data.verify_checksums", "false", "--model.net.init_args.size_tab", "[10, 16, 784]",
            "--model.T", "5", "--model.K", "2", "--trainer.enable_progress_bar", "false",
        ]  # fmt: skip
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(self, command: str, *extra: str) -> subprocess.CompletedProcess:
        args = [*self.eqprop, command, *self.settings, *extra]
        if command == "fit":
            args += [
                "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
                "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                "--trainer.strategy", "ddp_spawn",
            ]  # fmt: skip
        for attempt in range(3):  # gloo's teardown abort (see fit) is retried
            done = subprocess.run(
                args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120
            )
            if done.returncode == 0 or "signal" not in done.stderr or attempt == 2:
                break
            if "--ckpt_path" not in args and "--trainer.logger.init_args.version" in args:
                # the aborted try's files would refuse the fresh retry (an earlier run there)
                version = args[args.index("--trainer.logger.init_args.version") + 1]
                shutil.rmtree(self.root / "runs" / "p1h" / version, ignore_errors=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def results(self, version: str) -> list[dict]:
        return json.loads((self.root / f"runs/p1h/{version}/results.json").read_text())["epochs"]


@pytest.fixture(scope="module")
def two_process_fit(fake_mnist, tmp_path_factory) -> TwoProcessFit:
    """One uninterrupted two-process run (``runs/p1h/version_0``), shared by the tests below."""
    fit = TwoProcessFit(fake_mnist, tmp_path_factory.mktemp("ddp_fit"))
    fit.run("fit")
    return fit


def test_eqprop_fit_with_two_cpu_processes(two_process_fit):
    """The user's path: `eqprop fit --trainer.devices 2` (gloo) with the run directory, results,
    checkpoints and guard callbacks of the CLI (rank 0 once waited in a broadcast that rank 1
    never joined)."""
    results = two_process_fit.results("version_0")
    assert [e["epoch"] for e in results] == [1, 2]
    # the test error the two processes recorded is that of the saved model on the whole test
    # set, as one process measures it
    last = two_process_fit.root / "runs/p1h/version_0/checkpoints/last.ckpt"
    run = two_process_fit.run("test", "--ckpt_path", str(last))
    tested = re.search(r"test/error\s+([0-9.]+)", run.stdout)
    assert tested is not None, run.stdout[-3000:]
    assert float(tested.group(1)) == pytest.approx(results[-1]["test_error"], abs=1e-4)


N_EVAL = 5  # 2 ranks: DistributedSampler would give 3 + 3 examples, example 0 twice


class OddEvaluation(SplitsDataModule):
    """Five test examples, the first predicted wrongly and the others rightly by :func:`model`
    (20 % error), in batches of 2: rank 0 gets two batches, rank 1 one."""

    evaluation_sets = property(lambda self: {"test": "5 examples"})

    def __init__(self) -> None:
        super().__init__(batch_size=2, test_batch_size=2, num_workers=0)

    def setup(self, stage: str | None = None) -> None:
        x = torch.rand(N_EVAL, SIZES[-1], generator=torch.Generator().manual_seed(1))
        labels = model("ep")(x).argmax(1)
        labels[0] = (labels[0] + 1) % SIZES[0]
        self.test_set = TensorDataset(x, torch.eye(SIZES[0])[labels])


def _validate(devices: int) -> float:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return trainer.validate(model("ep"), datamodule=OddEvaluation(), verbose=False)[0]["test/error"]


def test_two_processes_evaluate_every_example_once():
    """Lightning's DistributedSampler evens the ranks' shares by repeating the first examples,
    and the error counted example 0 twice (2 of 6: 33.3 %); the data modules' evaluation loaders
    give each rank its share once (uneven batch counts included)."""
    assert _validate(1) == pytest.approx(20.0)
    for attempt in range(3):  # gloo's teardown abort, as fit above
        try:
            two = _validate(2)
            break
        except ProcessExitedException as err:
            if attempt == 2 or "signal" not in str(err):
                raise
    assert two == pytest.approx(20.0)


def test_two_processes_resumed_inside_an_epoch_keep_its_train_means(two_process_fit):
    """Two processes stopped inside epoch 2 (max_steps) and resumed: the epoch's train error,
    loss and free-phase change are the uninterrupted run's. Rank 0 writes the checkpoint: its
    running means were saved alone and every rank resumed with them (rank 0's share counted
    twice, rank 1's lost)."""
    fit = two_process_fit
    fit.run("fit", "--trainer.max_steps", "6", "--trainer.logger.init_args.version", "cut")
    fit.run("fit", "--ckpt_path", "runs/p1h/cut/checkpoints/last.ckpt")
    straight, resumed = fit.results("version_0"), fit.results("cut")
    assert [e["epoch"] for e in resumed] == [1, 2]
    for key in ("train_error", "train_loss", "free_change", "test_error"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-3), key


def test_two_processes_resumed_at_an_evaluation_end_write_the_epoch_entry(two_process_fit):
    """With ``check_val_every_n_epoch 2``, epoch 2's last.ckpt is written at its evaluation's
    end, before its results entry. A run that ended between the two (the entry is cut here)
    and is resumed writes the entry from the checkpoint: its train error, loss and free-phase
    change too, summed over both ranks' shares (only one process wrote them before)."""
    fit = two_process_fit
    cut = ["--trainer.check_val_every_n_epoch", "2", "--trainer.logger.init_args.version"]
    fit.run("fit", *cut, "evaluation_end")
    path = fit.root / "runs/p1h/evaluation_end/results.json"
    uninterrupted = json.loads(path.read_text())
    path.write_text(json.dumps({**uninterrupted, "epochs": uninterrupted["epochs"][:1]}))
    fit.run("fit", "--ckpt_path", "runs/p1h/evaluation_end/checkpoints/last.ckpt")
    resumed = fit.results("evaluation_end")
    assert [e["epoch"] for e in resumed] == [1, 2]
    assert resumed[1]["test_error"] is not None
    for key in ("train_error", "train_loss", "free_change", "test_error"):
        assert resumed[1][key] == pytest.approx(uninterrupted["epochs"][1][key], rel=1e-3), key
