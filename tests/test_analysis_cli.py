"""`eqprop gdu`, `eqprop recipe` and the GDU callback on tiny nets and fake MNIST."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eqprop_lightning.analysis import setting
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
    tensors = torch.load(out / "gdu.pt", weights_only=True)
    # the reported relative RMSE is that of the saved trajectories, computed here:
    # sqrt(sum_t (n - d)^2 / max(sum_t n^2, sum_t d^2)) per component, then mean and std
    neurons = zip(tensors["nS"], tensors["dS"], strict=True)
    pairs = {f"s{i}": (n, d) for i, (n, d) in enumerate(neurons)}
    pairs |= {k: (tensors["NT"][k], tensors["DT"][k]) for k in tensors["NT"]}
    for name, (n, d) in pairs.items():
        n, d = n.double(), d.double()
        den = torch.maximum((n**2).sum(0), (d**2).sum(0))
        e = torch.where(den > 0, ((n - d) ** 2).sum(0) / den, 0.0).sqrt()
        group = "neurons" if name.startswith("s") else "weights"
        assert summary["rmse"][group][name]["mean"] == pytest.approx(e.mean().item(), rel=1e-4)
        assert summary["rmse"][group][name]["std"] == pytest.approx(e.std().item(), rel=1e-4)
    # the reported sign agreement is that of the saved last-step updates, counted here
    for weight, stats in summary["sign_agreement"].items():
        ep, bptt = tensors["NT"][weight][-1].numpy(), tensors["DT"][weight][-1].numpy()
        same = ((np.sign(ep) == np.sign(bptt)) & (ep != 0) & (bptt != 0)).mean() * 100
        assert stats["same_sign"] == pytest.approx(float(same), abs=1e-4), weight
    assert tensors["nS"][1].shape == (5, 16) and tensors["NT"]["W1x"].shape == (5, 16, 784)
    for name in ("gdu_neurons", "gdu_synapses", "gdu_rmse"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.glob("events.out.tfevents.*"))
    # the printed time is the summary's
    written = f"GDU analysis ({summary['seconds']:.1f} s) written to {out}"
    assert written in capsys.readouterr().out.splitlines()


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
    # the GDU property on the toy model: EP's updates follow BPTT's gradients closely
    # (measured: neurons below 0.05, weights 0.017-0.032)
    assert all(v["mean"] < 0.05 for v in summary["rmse"]["neurons"].values())
    assert all(v["mean"] < 0.05 for v in summary["rmse"]["weights"].values())


def test_double_analyses_the_same_net_and_batch_in_float64(in_tmp, tmp_path, monkeypatch):
    """`gdu --double` and `recipe --double`: the config's net and batches, converted to float64."""
    import eqprop_lightning.analysis as analysis

    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    tensors = {}
    for flag in ([], ["--double"]):
        out = tmp_path / f"gdu{flag}"
        main(["gdu", *config, *flag, "--output_dir", str(out)])
        dtype = json.loads((out / "gdu.json").read_text())["setting"]["dtype"]
        assert dtype == ("float64" if flag else "float32")
        tensors[dtype] = torch.load(out / "gdu.pt", weights_only=True)
    single, double = tensors["float32"], tensors["float64"]
    assert double["x"].dtype == torch.float64 and double["NT"]["W1x"].dtype == torch.float64
    torch.testing.assert_close(double["x"], single["x"].double(), rtol=0, atol=0)
    # the same weights: the float32 curves are the float64 ones up to rounding
    for k in ("NT", "DT"):
        for w in ("W01", "W1x"):
            torch.testing.assert_close(single[k][w].double(), double[k][w], rtol=1e-3, atol=1e-5)

    seen = []
    real_gdu = analysis.gdu

    def recording(net, x, *args, **kwargs):
        seen.append(x)
        return real_gdu(net, x, *args, **kwargs)

    monkeypatch.setattr(analysis, "gdu", recording)
    out = tmp_path / "recipe_out"
    main(["recipe", *config, "--batches", "2", "--double", "--output_dir", str(out)])
    assert json.loads((out / "recipe.json").read_text())["setting"]["dtype"] == "float64"
    assert [x.dtype for x in seen] == [torch.float64] * 2


@pytest.mark.parametrize("command", ["gdu", "recipe"])
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--outputdir", "x"], "unrecognized arguments: --outputdir x"),
        (["--trainer.maxepochs", "3"], "unrecognized arguments: --trainer.maxepochs 3"),
        (["--trainer.logger.init_args.nmae", "x"], "nmae"),
        (["--model.net.init_args.sizetab", "[3]"], "'sizetab' is not accepted"),
        (["--model.T", "abc"], "T='abc' must be a positive integer"),
    ],
    ids=["own-option", "trainer", "logger", "net", "type"],
)
def test_analysis_refuses_what_it_does_not_know(command, extra, expected, in_tmp, tmp_path, capsys):
    """A misspelt option is an error in one line, not ignored (the configs' reader that avoids
    importing Lightning hands whatever it does not know to the CLI, which names it)."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    with pytest.raises(SystemExit) as stop:
        main([command, *config, *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("eqprop: error: ")]
    assert expected in line and "usage:" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["gdu", "recipe"])
def test_output_dir_that_is_a_file_is_refused(command, in_tmp, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    with pytest.raises(SystemExit) as stop:
        main([command, *config, "--output_dir", str(taken)])
    assert stop.value.code == 2
    expected = f"eqprop: error: --output_dir {taken} is a file: give a directory"
    assert capsys.readouterr().err.splitlines() == [expected]
    assert taken.read_text() == "a file"


@pytest.mark.parametrize("command", ["gdu", "recipe"])
def test_output_dir_of_an_earlier_analysis_is_refused(command, in_tmp, tmp_path, capsys):
    """A second analysis into the same --output_dir replaced the first's files, and for gdu
    added a second TensorBoard event file beside them (TensorBoard showed both runs' images
    beside the latest gdu.json): refused, and the first analysis is kept whole."""
    out = tmp_path / "out"
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    batches = ["--batches", "2"] if command == "recipe" else []
    main([command, *config, *batches, "--output_dir", str(out)])
    before = {p: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit) as stop:
        main([command, *config, *batches, "--output_dir", str(out)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"eqprop: error: --output_dir {out} holds {out / f'{command}.json'} of an earlier "
        f"analysis: give a new directory (or none: a new {command}_<n>/)"
    )
    assert {p: p.read_bytes() for p in out.iterdir()} == before


def test_recipe_command(in_tmp, tmp_path, capsys, monkeypatch):
    import eqprop_lightning.analysis as analysis

    seen, results = [], []
    real_gdu = analysis.gdu

    def recording(net, x, y, *args, **kwargs):
        seen.append(x.clone())
        results.append(real_gdu(net, x, y, *args, **kwargs))
        return results[-1]

    monkeypatch.setattr(analysis, "gdu", recording)
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
    # three distinct training batches (the old code analysed the first batch three times)
    assert len(seen) == 3
    assert not any(torch.equal(seen[i], seen[j]) for i in range(3) for j in range(i))
    # mean and sample std over the batches of each batch's last-step sign agreement, counted here
    for weight, stats in recipe["sign_agreement"].items():
        for field in ("same_sign", "both_zero", "total"):
            per_batch = []
            for r in results:
                ep, bptt = r.NT[weight][-1], r.DT[weight][-1]
                same = ((ep.sign() == bptt.sign()) & (ep != 0) & (bptt != 0)).double().mean()
                zero = ((ep == 0) & (bptt == 0)).double().mean()
                per_batch.append(
                    100 * {"same_sign": same, "both_zero": zero}.get(field, same + zero)
                )
            per_batch = torch.stack(per_batch)
            assert stats[field]["mean"] == pytest.approx(per_batch.mean().item(), abs=1e-4)
            assert stats[field]["std"] == pytest.approx(per_batch.std().item(), abs=1e-4)
        assert stats["same_sign"]["std"] > 0  # the batches disagree
    assert "W1x" in capsys.readouterr().out


def test_recipe_compares_symmetric_ep_as_gdu_does(in_tmp, tmp_path):
    """With symmetric nudging, ``recipe`` on one batch is ``gdu``'s sign agreement on it
    (recipe compared BPTT with positive EP whatever the config's nudging)."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    symmetric = ["--model.beta", "0.5", "--model.nudging", "symmetric"]
    outputs = {}
    for command, extra in [("gdu", []), ("recipe", ["--batches", "1"])]:
        outputs[command] = tmp_path / command
        main([command, *config, *symmetric, *extra, "--output_dir", str(outputs[command])])
    gdu = json.loads((outputs["gdu"] / "gdu.json").read_text())
    recipe = json.loads((outputs["recipe"] / "recipe.json").read_text())
    assert recipe["setting"] == gdu["setting"]
    assert recipe["setting"]["symmetric"] is True
    for weight, agreement in gdu["sign_agreement"].items():
        for field, value in agreement.items():
            assert recipe["sign_agreement"][weight][field]["mean"] == value, (weight, field)


def test_gdu_and_recipe_analyse_a_checkpoint(in_tmp, tmp_path, capsys):
    """``--ckpt_path``: the analysis of the checkpoint's weights on the config's first batch, as
    the GDU functions compute it on a net given those weights; a checkpoint of another net is
    refused, naming the difference."""
    from eqprop_lightning.analysis import gdu
    from eqprop_lightning.nets import PrototypicalFC

    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    fit = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5"]
    main(["fit", *config, *fit, "--trainer.limit_val_batches", "1"])
    (ckpt,) = Path().glob("runs/*/version_0/checkpoints/last.ckpt")
    out = {}
    for name, extra in [("seeded", []), ("trained", ["--ckpt_path", str(ckpt)])]:
        out[name] = tmp_path / name
        main(["gdu", *config, *extra, "--output_dir", str(out[name])])
    seeded, trained = (torch.load(out[k] / "gdu.pt", weights_only=True) for k in out)
    torch.testing.assert_close(trained["x"], seeded["x"], rtol=0, atol=0)  # the same batch
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    net = PrototypicalFC([10, 16, 784], activation="tanh")  # fig3_p1h's
    net.load_state_dict({k.removeprefix("net."): v for k, v in weights.items() if "net." in k})
    expected = gdu(net, trained["x"], trained["y"], 30, 5, 0.01)  # fig3_p1h's beta
    for w in ("W01", "W1x"):
        torch.testing.assert_close(trained["NT"][w], expected.NT[w], rtol=0, atol=0)
        torch.testing.assert_close(trained["DT"][w], expected.DT[w], rtol=0, atol=0)
        assert not torch.equal(trained["NT"][w], seeded["NT"][w])
    main(["recipe", *config, "--batches", "2", "--ckpt_path", str(ckpt), "--output_dir", "r"])
    assert json.loads(Path("r/recipe.json").read_text())["batches"] == 2
    other = ["--model.net.init_args.activation", "hardsigm"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["gdu", *config, *other, "--ckpt_path", str(ckpt), "--output_dir", "no"])
    refusal = "model.net.init_args.activation: 'tanh' there, 'hardsigm' here"
    assert refusal in capsys.readouterr().err
    assert not Path("no").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--trainer.precision", "64"], "trainer.precision=64 is not used by eqprop gdu and "
         "eqprop recipe: they run in float32, or in float64 with --double"),
        (["--trainer.accelerator", "gpu"], "trainer.accelerator='gpu' is not used"),
        (["--gdu.beta", "0.5"], "gdu={'every_n_steps': 0, 'T': None, 'K': None, 'beta': 0.5, "
         "'figures': None} is not used by eqprop gdu and eqprop recipe: --gdu.* set the GDU "
         "callback of fit; the analyses take T, K and beta from the model"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["gdu", "recipe"])
def test_options_the_analyses_would_ignore_are_refused(command, option, message, in_tmp, capsys):
    """``--trainer.precision 64`` ran in float32 and ``--gdu.beta`` with the model's beta, while
    ``setting`` recorded what ran: nothing said the option had no effect."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    with pytest.raises(SystemExit) as exc:
        main([command, *config, *option, "--output_dir", "out"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not Path("out").exists()


def test_options_that_say_what_the_analyses_do_are_accepted(in_tmp, tmp_path):
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    what_runs = ["--trainer.precision", "32-true", "--trainer.accelerator", "cpu"]
    main(["gdu", *config, *what_runs, "--output_dir", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "gdu.json").read_text())["setting"]["dtype"] == "float32"


def test_recipe_rejects_more_batches_than_the_epoch_has(in_tmp, capsys):
    too_many = ["--batches", "51"]  # 200 fake training images in batches of 4
    with pytest.raises(SystemExit) as exc:
        main(["recipe", "--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp, *too_many])
    assert exc.value.code == 2
    assert "--batches=51: the training set has only 50 batches" in capsys.readouterr().err


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


README_GDU_ROW = re.compile(r"^\| `(fig3_\w+)` \| (.+) \|$", re.MULTILINE)


def test_readme_gdu_table_is_what_the_command_prints(tmp_path, monkeypatch):
    """The README's table of `eqprop gdu --config gdu/<config>` on the real MNIST (the shipped
    files), each number within 5 % (float32 sums move EB-1h's s0 from 0.0035 on one thread to
    0.0034 on two; the table's earlier numbers were 23-100 % off)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    monkeypatch.delenv("EQPROP_DATA_DIR", raising=False)  # the packaged MNIST, as a user has it
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = README_GDU_ROW.findall(readme)
    assert [name for name, _ in rows] == ["fig3_p1h", "fig3_eb1h"]
    for name, cells in rows:
        documented = [float(cell.split()[0]) for cell in cells.split(" | ")]
        out = tmp_path / name
        main(["gdu", "--config", f"gdu/{name}", "--output_dir", str(out)])
        rmse = json.loads((out / "gdu.json").read_text())["rmse"]
        measured = [rmse["neurons"][k]["mean"] for k in ("s0", "s1")]
        measured += [rmse["weights"][k]["mean"] for k in ("W01", "W1x")]
        assert documented == pytest.approx(measured, rel=0.05), name


def test_setting_records_the_batch_size_and_dtype_of_the_batch():
    """gdu.json's and recipe.json's ``setting``: the batch size is the batch's first axis (3
    examples of 7 features), the dtype its dtype."""
    x = torch.zeros(3, 7, dtype=torch.float64)
    assert setting(40, 15, 0.5, True, x) == {
        "T": 40,
        "K": 15,
        "beta": 0.5,
        "symmetric": True,
        "batch_size": 3,
        "dtype": "float64",
    }


def test_recipe_md_is_the_table_of_recipe_json(in_tmp, tmp_path):
    """recipe.md: the header and one row per weight of recipe.json's sign agreement, each cell
    its mean ± std (one decimal) for same sign, both zero and total."""
    out = tmp_path / "recipe_out"
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    main(["recipe", *config, "--batches", "2", "--output_dir", str(out)])
    agreement = json.loads((out / "recipe.json").read_text())["sign_agreement"]
    assert list(agreement) == ["W01", "W1x"]
    fields = ("same_sign", "both_zero", "total")
    rows = [
        f"| {weight} | "
        + " | ".join(f"{v[f]['mean']:.1f} ± {v[f]['std']:.1f}" for f in fields)
        + " |"
        for weight, v in agreement.items()
    ]
    header = ["| weight | same sign % | both zero % | total % |", "|---|---|---|---|"]
    assert (out / "recipe.md").read_text() == "\n".join([*header, *rows]) + "\n"


#: the analyses' refusal of a trainer option
UNUSED_TRAINER = "is not used by eqprop gdu and eqprop recipe: "
#: and the trainer options they read, named
READ = "of the trainer's options they read only those placing their outputs: "
#: an option the configs' reader does not know, which sends the analysis through the Lightning CLI
VIA_CLI = ["--trainer.accelerator", "cpu"]


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        (["--trainer.max_epochs", "3"], "trainer.max_epochs=3"),
        (["--trainer.limit_train_batches", "1"], "trainer.limit_train_batches=1"),
        (["--trainer.fast_dev_run", "true"], "trainer.fast_dev_run=True"),
        (["--trainer.max_steps=2"], "trainer.max_steps=2"),
        (["--trainer", "{max_epochs: 3}"], "trainer.max_epochs=3"),
        (["--trainer.logger.init_args.version", "3"], "trainer.logger.init_args.version=3"),
    ],
    ids=["max_epochs", "limit_train_batches", "fast_dev_run", "max_steps", "mapping", "version"],
)
@pytest.mark.parametrize("via", ["reader", "cli"])
@pytest.mark.parametrize("command", ["gdu", "recipe"])
def test_trainer_options_the_analyses_do_not_read_are_refused(
    command, via, option, shown, in_tmp, tmp_path, capsys
):
    """``--trainer.max_epochs 3`` and ``--trainer.limit_train_batches 1`` ran and exited 0,
    ``--trainer.fast_dev_run true`` ended in a TypeError traceback: the analyses read only the
    trainer options that place their outputs, and refuse the others in one line, naming those
    (through the configs' reader and the Lightning CLI alike)."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    extra = VIA_CLI if via == "cli" else []
    with pytest.raises(SystemExit) as exc:
        main([command, *config, *extra, *option, "--output_dir", "out"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.splitlines()[0]] and "Traceback" not in err
    assert err.startswith(f"eqprop: error: {shown} {UNUSED_TRAINER}")
    read = ["--trainer.default_root_dir", "--trainer.logger.init_args.save_dir"]
    read += ["--trainer.logger.init_args.name", "--trainer.logger false"]
    assert f"{READ}{', '.join(read)}\n" in err
    assert not Path("out").exists() and not (tmp_path / "runs").exists()


def test_an_analysis_through_the_lightning_cli_says_nothing_of_checkpoints(in_tmp, caplog):
    """Through the Lightning CLI (a config the reader does not know), gdu said "no validation
    set: no best checkpoint by val/error, only last.ckpt", which is fit's to say: the analyses
    write no checkpoint; nor do they print the Trainer's start-up lines (they run none)."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp, *VIA_CLI]
    caplog.set_level(logging.INFO)
    main(["gdu", *config, "--output_dir", "out"])
    assert Path("out/gdu.json").is_file()
    assert "checkpoint" not in caplog.text
    assert "GPU available" not in caplog.text and "Seed set" not in caplog.text


@pytest.mark.parametrize(
    ("placement", "run_root"),
    [
        (["--trainer.default_root_dir", "root"], "root/fig3_p1h"),
        (["--trainer.logger.init_args.save_dir", "logs", "--trainer.logger.name", "n"], "logs/n"),
        (["--trainer.logger", "false", "--trainer.default_root_dir", "root"], "root"),
    ],
    ids=["default_root_dir", "logger", "no-logger"],
)
@pytest.mark.parametrize("via", ["reader", "cli"])
def test_trainer_options_that_place_the_outputs_are_read(via, placement, run_root, in_tmp):
    """The trainer options that the analyses read place ``gdu_<n>``; without a logger (which
    ended in an AttributeError traceback) it goes into ``default_root_dir`` itself, as ``fit``
    writes its run there."""
    config = ["--config", str(CONFIGS / "gdu/fig3_p1h.yaml"), *SMALL, *in_tmp]
    extra = VIA_CLI if via == "cli" else []
    main(["gdu", *config, *extra, *placement])
    assert [str(p) for p in Path().rglob("gdu.json")] == [f"{run_root}/gdu_0/gdu.json"]
