"""A learning rule of the user's own, outside the package: ``algorithm: package.module.Class``
(``learning.rules.user_rule``), from Python and from the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from eqprop_lightning.analysis import rule_name
from eqprop_lightning.callbacks import GDUCallback
from eqprop_lightning.cli import main
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import EquilibriumProp
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import PrototypicalFC
from eqprop_lightning.validation import check_same_hparams
from tests.plugin_rules import RecordingBPTT, ScaledNudgeEP
from tests.test_cli import config, shrink
from tests.test_rule_options import SIZES, Recorder, fit, model


def trained(algorithm: str, beta: float | None, callbacks=(), logger=False, **options):
    """A small net trained for one epoch of two batches with ``algorithm`` (the helpers of
    ``test_rule_options``)."""
    module = model(algorithm=algorithm, beta=beta, **options)
    fit(module, callbacks=callbacks, logger=logger)
    return module


def test_a_rule_built_on_ours_trains_as_it_is_written() -> None:
    """ScaledNudgeEP at beta 0.4 is EP at beta 0.2 (its default scale 0.5) and at 0.1 with
    rule_args {"scale": 0.25}, to the bit, and not EP at 0.4."""
    path = "tests.plugin_rules.ScaledNudgeEP"
    for rule_args, beta in ((None, 0.2), ({"scale": 0.25}, 0.1)):
        ours = trained(path, beta=0.4, rule_args=rule_args)
        assert isinstance(ours.rule, ScaledNudgeEP) and ours.rule.beta == beta
        same = trained("ep", beta=beta).state_dict()
        for name, weight in ours.state_dict().items():
            assert torch.equal(weight, same[name]), name
    other = trained("ep", beta=0.4).state_dict()
    assert any(not torch.equal(w, other[n]) for n, w in ours.state_dict().items())


def test_a_rule_from_scratch_is_called_at_each_step() -> None:
    ours = trained("tests.plugin_rules.RecordingBPTT", beta=None)
    assert isinstance(ours.rule, RecordingBPTT) and ours.rule.steps == [0, 1]
    bptt = trained("bptt", beta=None).state_dict()
    for name, weight in ours.state_dict().items():
        assert torch.equal(weight, bptt[name]), name


def test_the_gdu_callback_measures_it_against_bptt() -> None:
    """RecordingBPTT is BPTT: the callback finds its estimate's error 0 at every step."""
    recorder = Recorder()
    gdu = GDUCallback(every_n_steps=1, beta=0.1, figures=False)
    trained("tests.plugin_rules.RecordingBPTT", None, [gdu], recorder)
    errors = {
        step: {k: v for k, v in logged.items() if k.startswith("gdu/estimate_error/bptt/")}
        for step, logged in recorder.metrics.items()
    }
    zero = {"gdu/estimate_error/bptt/W01": 0.0, "gdu/estimate_error/bptt/W1x": 0.0}
    assert errors == {1: zero, 2: zero}


def test_the_gdu_analysis_names_it_by_its_class() -> None:
    """Its estimate's error against BPTT is reported under its own name, not EP's."""
    assert rule_name(EquilibriumProp(6, 2, 0.4)) == "ep/positive"
    assert rule_name(ScaledNudgeEP(6, 2, 0.4)) == "ScaledNudgeEP"
    assert rule_name(RecordingBPTT(6, 2, None)) == "RecordingBPTT"


@pytest.mark.parametrize(
    "algorithm, options, match",
    [
        ("contrastive", {}, r"algorithm='contrastive' is not supported; choose one of \['ep'"),
        ("tests.plugin_rules.Nope", {}, "does not import as a class.*AttributeError"),
        ("nosuchpackage.Rule", {}, "does not import as a class.*ModuleNotFoundError"),
        ("tests.plugin_rules.NotARule", {}, "not a learning rule: it lacks K, continual, __call"),
        ("tests.plugin_rules.OwnT", {}, "built with T=6, K=2 has T=12, K=2"),
        ("tests.plugin_rules.NoBeta", {}, r"NoBeta\(T=6, K=2, beta=0.1\) does not match .*'beta'"),
        ("tests.plugin_rules", {}, "'tests.plugin_rules' is a module, not a class"),
        ("tests.test_user_rule.trained", {}, "is a function, not a class"),
        ("tests.plugin_rules.ScaledNudgeEP", {"nudging": "symmetric"}, "applies to algorithm 'ep'"),
        ("ep", {"rule_args": {"scale": 2}}, "rule_args={'scale': 2} applies to a rule of your"),
        ("tests.plugin_rules.ScaledNudgeEP", {"rule_args": {"K": 3}}, "without T, K or beta"),
        (
            "tests.plugin_rules.ScaledNudgeEP",
            {"rule_args": {"shift": 1}},
            r"ScaledNudgeEP\(T=6, K=2, beta=0.1, shift=1\) does not match .*'shift'",
        ),
    ],
)
def test_a_rule_that_cannot_be_built_is_named(algorithm: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], algorithm, T=6, K=2, beta=0.1, **options)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"optimizer": "adam"}, "optimizer='adam' with algorithm 'eqprop_lightning.learning.Co"),
        ({"loss": "cross_entropy"}, "loss=cross_entropy is not implemented for continual EP"),
    ],
)
def test_a_continual_rule_is_checked_as_continual_ep(options: dict, match: str) -> None:
    """The checks of continual EP go by the rule's ``continual``, not by the name 'cep'."""
    with pytest.raises(ConfigError, match=match):
        EqPropModule(
            PrototypicalFC(SIZES), [0.1, 0.2], "eqprop_lightning.learning.ContinualEP",
            T=6, K=2, beta=0.1, **options,
        )  # fmt: skip


def test_an_error_inside_the_rules_init_is_the_rules() -> None:
    """A TypeError raised inside __init__ propagates with its traceback, not as a config
    error about the arguments."""
    with pytest.raises(TypeError, match="has no len"):
        EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], "tests.plugin_rules.Broken", T=6, K=2)


def test_empty_rule_args_are_none() -> None:
    """``rule_args: {}`` (YAML's empty mapping) is accepted with our rules, as None is."""
    assert EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], beta=0.1, rule_args={}).rule.beta == 0.1


def test_a_resume_with_other_rule_args_is_refused() -> None:
    """rule_args are compared whole: added, removed or changed, they are named."""
    path = "tests.plugin_rules.ScaledNudgeEP"
    saved = {"algorithm": path, "T": 6, "K": 2, "beta": 0.4, "rule_args": {"scale": 0.25}}
    checkpoint = {"hyper_parameters": saved}
    check_same_hparams("a.ckpt", checkpoint, dict(saved))
    check_same_hparams("a.ckpt", {"hyper_parameters": {**saved, "rule_args": None}}, {
        **saved, "rule_args": {}})  # fmt: skip
    for given in (None, {"scale": 0.5}, {"scale": 0.25, "shift": 1}):
        with pytest.raises(ConfigError, match=r"model.rule_args: \{'scale': 0.25\} there"):
            check_same_hparams("a.ckpt", checkpoint, {**saved, "rule_args": given})


def test_the_cli_trains_with_it_and_its_checkpoint_loads_it(
    fake_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    path = "tests.plugin_rules.ScaledNudgeEP"
    ours = ["--model.algorithm", path, "--model.rule_args", '{"scale": 0.25}']
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, 1), *ours])
    run_dir = tmp_path / "runs" / "p1h" / "version_0"
    assert json.loads((run_dir / "results.json").read_text())["algorithm"] == path
    model = EqPropModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert isinstance(model.rule, ScaledNudgeEP)
    assert model.hparams.rule_args == {"scale": 0.25}
    assert model.rule.beta == model.hparams.beta * 0.25
