"""Exactness against outputs recorded from the original NeurIPS-2019 code.

The fixtures live in ``<data dir>/reference`` (``../shared/data/reference`` beside the repository,
or ``$EQPROP_DATA_DIR/reference``); the tests skip when they are absent.
"""

import pytest
import torch

from tests.reference import (
    REFERENCE,
    build_net,
    fit_one_epoch,
    needs_reference,
    original_to_ours,
    train_like_the_original,
)

pytestmark = needs_reference


@pytest.mark.parametrize("kind", ["p1h", "eb1h", "p2h", "eb2h"])
@pytest.mark.parametrize("method", ["ep", "bptt"])
def test_training_reproduces_the_original_weights(kind, method):
    fixture = torch.load(REFERENCE / f"train_{kind}_{method}.pt", weights_only=True)
    args = fixture["args"]
    net = build_net(args)
    net.load_state_dict(original_to_ours(fixture["init"]))
    train_like_the_original(net, fixture)
    expected = original_to_ours(fixture["final"])
    initial = original_to_ours(fixture["init"])
    for name, value in net.state_dict().items():
        update = expected[name] - initial[name]
        assert update.abs().max() > 1e-4, "the fixture must move the weights"
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, method", [("p1h", "ep"), ("eb2h", "bptt")])
def test_lightning_module_reproduces_the_original_weights(kind, method):
    """The same check through ``EqPropModule.training_step`` under a Lightning Trainer."""

    from eqprop_lightning.module import EqPropModule

    fixture = torch.load(REFERENCE / f"train_{kind}_{method}.pt", weights_only=True)
    args = fixture["args"]
    net = build_net(args)
    net.load_state_dict(original_to_ours(fixture["init"]))
    beta = args["beta"] if method == "ep" else None  # BPTT has no nudge
    model = EqPropModule(
        net, args["lr_tab"], algorithm=method, T=args["T"], K=args["Kmax"], beta=beta
    )
    fit_one_epoch(model, list(zip(fixture["x"], fixture["y"], strict=True)))
    expected = original_to_ours(fixture["final"])
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
