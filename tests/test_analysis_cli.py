"""`eqprop gdu`, `eqprop recipe` and the GDU callback on tiny nets and fake MNIST."""

import json
from pathlib import Path

import pytest
import torch

from eqprop_lightning.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SMALL = [
    "--model.net.init_args.size_tab",
    "[10, 16, 784]",
    "--model.T",
    "30",
    "--model.K",
    "5",
    "--data.batch_size",
    "4",
    "--data.verify_checksums",
    "false",
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, fake_mnist):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    return ["--data.data_dir", str(fake_mnist)]


def test_gdu_command_writes_tensors_table_and_figures(in_tmp, tmp_path, capsys):
    out = tmp_path / "gdu_out"
    main(
        [
            "gdu",
            "--config",
            str(CONFIGS / "gdu/fig3_p1h.yaml"),
            *SMALL,
            *in_tmp,
            "--output_dir",
            str(out),
        ]
    )
    summary = json.loads((out / "gdu.json").read_text())
    assert set(summary["rmse"]["neurons"]) == {"s0", "s1"}
    assert set(summary["rmse"]["weights"]) == {"W01", "W1x"}
    assert all(0 <= v["mean"] for g in summary["rmse"].values() for v in g.values())
    assert summary["sign_agreement"]["W01"]["total"] <= 100
    assert summary["seconds"] > 0
    tensors = torch.load(out / "gdu.pt", weights_only=True)
    assert tensors["nS"][1].shape == (5, 16) and tensors["NT"]["W1x"].shape == (5, 16, 784)
    for name in ("gdu_neurons", "gdu_synapses", "gdu_rmse"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.glob("events.out.tfevents.*"))
    assert str(out) in capsys.readouterr().out


def test_gdu_command_runs_the_toy_model(in_tmp, tmp_path):
    main(
        [
            "gdu",
            "--config",
            str(CONFIGS / "gdu/fig2_toy.yaml"),
            "--model.T",
            "200",
            "--model.K",
            "20",
        ]
    )
    (run,) = (tmp_path / "runs" / "fig2_toy").glob("gdu_*")
    summary = json.loads((run / "gdu.json").read_text())
    assert set(summary["rmse"]["weights"]) == {"W01", "W0x", "W1x"}
    assert all(v["mean"] < 0.05 for v in summary["rmse"]["neurons"].values())


def test_recipe_command(in_tmp, tmp_path, capsys):
    out = tmp_path / "recipe_out"
    main(
        [
            "recipe",
            "--config",
            str(CONFIGS / "gdu/fig3_p1h.yaml"),
            *SMALL,
            *in_tmp,
            "--batches",
            "3",
            "--output_dir",
            str(out),
        ]
    )
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["batches"] == 3
    for stats in recipe["sign_agreement"].values():
        total = stats["same_sign"]["mean"] + stats["both_zero"]["mean"]
        assert stats["total"]["mean"] == pytest.approx(total)
    assert "W1x" in capsys.readouterr().out


def test_recipe_rejects_zero_batches(in_tmp, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "recipe",
                "--config",
                str(CONFIGS / "gdu/fig3_p1h.yaml"),
                *SMALL,
                *in_tmp,
                "--batches",
                "0",
            ]
        )
    assert exc.value.code == 2
    assert "--batches=0" in capsys.readouterr().err


def test_gdu_callback_logs_without_touching_training(in_tmp, tmp_path):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "mnist/p1h.yaml"),
        *SMALL,
        *in_tmp,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "6",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.num_sanity_val_steps",
        "0",
    ]
    main([*args, "--seed_everything", "3"])
    main([*args, "--seed_everything", "3", "--gdu.every_n_steps", "2"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = tmp_path / "runs" / "p1h"
    events = EventAccumulator(str(next((runs / "version_1").glob("events*"))))
    events.Reload()
    steps = [e.step for e in events.Scalars("gdu/rmse/s1")]
    assert steps == [2, 4, 6]
    assert "gdu/gdu_neurons" in events.Tags()["images"]
    # the training itself is unchanged by the analysis
    ckpts = [
        torch.load(runs / v / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for v in ("version_0", "version_1")
    ]
    for key, value in ckpts[0].items():
        torch.testing.assert_close(ckpts[1][key], value, rtol=0, atol=0)
