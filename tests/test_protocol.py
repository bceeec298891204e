"""The net interface (:class:`eqprop_lightning.nets.Net`) and the one-way layering of the
package: ``nets <- learning <- module <- callbacks, datamodules <- cli``."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from eqprop_lightning import EqPropModule, nets
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import EquilibriumProp, make_rule
from eqprop_lightning.nets import NET_FLAGS, Net
from eqprop_lightning.nets.protocol import missing_members

PACKAGE = Path(nets.__file__).resolve().parents[1]

#: One small instance of every net class (two for the conv net's pooling modes).
EXAMPLES = {
    "PrototypicalFC": lambda: nets.PrototypicalFC([10, 8, 6]),
    "EnergyBasedFC": lambda: nets.EnergyBasedFC([10, 8, 6], clamp=True),
    "ConvPrototypical": lambda: nets.ConvPrototypical([4, 3, 1], [10], input_size=16),
    "ConvPrototypical-legacy": lambda: nets.ConvPrototypical(
        [4, 3, 1], [10], input_size=16, legacy_pooling=True
    ),
    "HopfieldClassifier": lambda: nets.HopfieldClassifier([4], [[0, 0]], [6, 2], embed_dim=5),
    "ToyEnergyBased": lambda: nets.ToyEnergyBased([3, 4, 5]),
    "SoftmaxReadout": lambda: nets.SoftmaxReadout(nets.EnergyBasedFC([10, 8, 6]), classes=4),
}


def net_classes() -> set[str]:
    """The exported classes that define dynamics (a ``step``)."""
    exported = (getattr(nets, name) for name in nets.__all__)
    return {
        c.__name__
        for c in exported
        if isinstance(c, type) and issubclass(c, nn.Module) and hasattr(c, "step")
    }


def test_every_net_class_has_an_example() -> None:
    """Every exported net class has one; a net of one's own may be added too (README)."""
    assert net_classes() <= {name.split("-")[0] for name in EXAMPLES}


@pytest.mark.parametrize("name", EXAMPLES)
def test_net_satisfies_the_protocol(name: str) -> None:
    net = EXAMPLES[name]()
    assert isinstance(net, Net)
    for flag, kind in NET_FLAGS.items():
        assert type(getattr(net, flag)) is kind, (flag, getattr(net, flag))
    assert len(net.synapse_labels()) == len(net.synapse_groups())


def test_flags_follow_the_arguments() -> None:
    assert EXAMPLES["ConvPrototypical-legacy"]().uses_previous_state is True
    assert EXAMPLES["ConvPrototypical"]().uses_previous_state is False
    assert EXAMPLES["EnergyBasedFC"]().clamp is True
    assert nets.EnergyBasedFC([10, 8, 6], clamp=False).clamp is False
    assert EXAMPLES["PrototypicalFC"]().clamp is False


def test_an_object_without_the_flags_is_not_a_net() -> None:
    class NoFlags(nn.Module):
        def init_state(self, x): ...

    assert not isinstance(NoFlags(), Net)


def test_a_module_that_is_not_a_net_is_a_config_error_naming_what_it_lacks() -> None:
    """A user's own net (``model.net: {class_path: ...}``) that misses part of the interface
    is named with what it lacks when the module is built (it was an AttributeError from deep
    inside the rule's checks)."""
    members = [*NET_FLAGS, "example_shape", "num_classes", "init_state", "static_terms", "step"]
    members += ["primitive", "output", "synapse_groups", "synapse_labels"]
    with pytest.raises(ConfigError) as info:
        EqPropModule(nn.Linear(3, 2), lrs=[0.1], T=5, K=2, beta=0.5)
    message = str(info.value)
    assert message.startswith("model.net: Linear is not a net of eqprop_lightning: it lacks ")
    assert message.split("it lacks ")[1].split(" (")[0].split(", ") == members
    net = nets.PrototypicalFC([10, 8, 6])
    assert missing_members(net) == []
    no_primitive = SimpleNamespace(**{m: getattr(net, m) for m in members if m != "primitive"})
    assert missing_members(no_primitive) == ["primitive"]


def test_static_terms_without_repeat_are_a_config_error_naming_the_net() -> None:
    """A net of one's own whose ``static_terms`` returns a plain tensor is told what EP needs
    (it was torch's "Number of dimensions of repeat dims" from inside the nudged phases)."""

    class TensorStatic(nets.EnergyBasedFC):
        def static_terms(self, x: torch.Tensor) -> torch.Tensor:
            return x

    net = TensorStatic([3, 4, 5])
    x, y = torch.rand(2, 5), torch.eye(3)[:2]
    with pytest.raises(ConfigError, match=r"TensorStatic.static_terms returned a Tensor, not a"):
        EquilibriumProp(5, 2, 0.5)(net, x, y)


def test_holomorphic_refusal_of_a_net_of_ones_own_does_not_blame_pooling() -> None:
    with pytest.raises(ConfigError) as info:
        make_rule("ep", 10, 5, 0.1, "holomorphic", net=nn.Linear(2, 2))
    message = str(info.value)
    assert "(LayeredFC, ToyEnergyBased)" in message and "not Linear" in message
    assert "pooling" not in message


# ---------------------------------------------------------------------------- import layers


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    ]


LIGHTNING = ("lightning", "pytorch_lightning", "torchmetrics")
UPPER = ("eqprop_lightning.callbacks", "eqprop_lightning.datamodules")


def test_nets_import_neither_learning_nor_lightning() -> None:
    files = sorted((PACKAGE / "nets").glob("*.py"))
    forbidden = ("eqprop_lightning.learning", "eqprop_lightning.module", *UPPER, *LIGHTNING)
    assert violations(files, forbidden) == []


def test_learning_imports_neither_module_nor_lightning() -> None:
    files = sorted((PACKAGE / "learning").glob("*.py"))
    assert violations(files, ("eqprop_lightning.module", *UPPER, *LIGHTNING)) == []


def test_core_imports_no_callbacks_or_datamodules() -> None:
    """Only the command line (``cli.py``, and ``analysis_commands.py``, which reads MNIST for
    ``eqprop gdu`` without Lightning) puts the upper layers together."""
    command_line = ("cli.py", "analysis_commands.py")
    files = [p for p in sorted(PACKAGE.glob("*.py")) if p.name not in command_line]
    files += sorted((PACKAGE / "nets").glob("*.py")) + sorted((PACKAGE / "learning").glob("*.py"))
    assert violations(files, UPPER) == []


def test_the_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from eqprop_lightning.callbacks.resume import RNGState\n")
    assert imported_modules(source) == {"eqprop_lightning.callbacks.resume"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_repeated_static_terms_step_every_copy_like_the_batch(name: str) -> None:
    """``static_terms(x).repeat(n)`` is the :class:`Static` of ``n`` phase-major copies of the
    batch: one step of the repeated state equals the step of the batch, copy by copy."""
    torch.manual_seed(0)
    net = EXAMPLES[name]()
    x = torch.rand(3, *net.example_shape)
    static = net.static_terms(x)
    s = [torch.rand_like(t) for t in net.init_state(x)]
    with torch.no_grad():
        once = net.step(s, static)
        thrice = net.step([torch.cat([t] * 3) for t in s], static.repeat(3))
    for a, b in zip(once, thrice, strict=True):
        torch.testing.assert_close(b, torch.cat([a] * 3))
