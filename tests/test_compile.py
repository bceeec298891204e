"""``compile: true``: the relaxations through ``torch.compile`` (whole phases, in chunks of
``UNROLL`` steps), against eager.

The default suite only traces with a counting backend (no code generation) or fakes a compiler
failure; the comparisons that run inductor (about 3 minutes here with a cold compile cache) are
marked slow and deselected by default: ``python -m pytest -m slow`` runs them.
"""

import copy
import gc
import pickle
import warnings
import weakref

import pytest
import torch
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import compiled, make_rule
from eqprop_lightning.learning.compiled import (
    UNROLL,
    CompiledRelaxation,
    compile_dynamics,
    compiled_relaxation,
)
from eqprop_lightning.learning.phases import _loop, relax_with_previous
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import (
    ConvPrototypical,
    EnergyBasedFC,
    HopfieldClassifier,
    PrototypicalFC,
    SoftmaxReadout,
    ToyEnergyBased,
)
from tests.reference import REFERENCE, build_net, needs_reference, original_to_ours

# one tiny net per kind, with an input batch maker
NETS = {
    "prototypical": (lambda: PrototypicalFC([3, 5, 4], "sigm"), (4,)),
    "energy_based": (lambda: EnergyBasedFC([3, 5, 4], "sigm", dt=0.3), (4,)),
    "toy": (lambda: ToyEnergyBased([3, 5, 4], "tanh", dt=0.2), (4,)),
    "conv": (lambda: ConvPrototypical([4, 3, 1], [3], kernel_size=3, input_size=14), (1, 14, 14)),
    "hopfield": (
        lambda: HopfieldClassifier([3], [[0, 0]], [5, 3], embed_dim=4, attn_scale=0.5),
        (3, 4),
    ),
    "readout": (lambda: SoftmaxReadout(PrototypicalFC([3, 5, 4], "sigm"), classes=3), (4,)),
    "hidden-readout": (
        lambda: SoftmaxReadout(PrototypicalFC([5, 4], "sigm", nudge_in_activation=True), 3),
        (4,),
    ),
    "nudge-inside": (lambda: PrototypicalFC([3, 5, 4], "hardsigm", nudge_in_activation=True), (4,)),
}


def make(kind: str, B: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    factory, shape = NETS[kind]
    net = factory()
    x = torch.rand(B, *shape)
    y = F.one_hot(torch.arange(B) % 3, 3).float()
    return net, x, y


def estimate(net, algorithm: str, x, y):
    """The rule's objective and parameter gradients, and its free-phase output."""
    rule = make_rule(algorithm, 6, 3, 0.5 if algorithm == "ep" else None)
    est = rule(net, x, y)
    grads = torch.autograd.grad(est.objective, list(net.parameters()), allow_unused=True)
    return est.objective.detach(), est.output.detach(), grads


def assert_estimates_close(expected, got, **tol) -> None:
    """Objective, output and every parameter gradient (``None`` where unused) close."""
    flat_e, flat_g = [expected[0], expected[1], *expected[2]], [got[0], got[1], *got[2]]
    assert len(flat_e) == len(flat_g)
    for e, g in zip(flat_e, flat_g, strict=True):
        assert (e is None) == (g is None)
        if e is not None:
            torch.testing.assert_close(g.cpu(), e.cpu(), **tol)


@pytest.fixture
def counting_compile(monkeypatch):
    """``torch.compile`` in :mod:`compiled` with a backend that counts the graphs it is given and
    runs them as traced (no code generation): what dynamo would hand to inductor."""
    graphs, real_compile = [], torch.compile

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def fake_compile(fn, **kwargs):
        assert kwargs == {"dynamic": False, "mode": None}
        return real_compile(fn, backend=backend, dynamic=False)

    monkeypatch.setattr(compiled.torch, "compile", fake_compile)
    torch._dynamo.reset()
    return graphs


def test_module_option_registers_the_compiled_relaxation():
    net, _, _ = make("prototypical")
    EqPropModule(net, [0.1, 0.1], T=4, K=2, beta=0.5, compile=True)
    assert isinstance(compiled_relaxation(net), CompiledRelaxation)
    EqPropModule(net, [0.1, 0.1], T=4, K=2, beta=0.5)
    assert compiled_relaxation(net) is None
    with pytest.raises(ConfigError, match="compile='yes' must be true or false"):
        EqPropModule(net, [0.1, 0.1], T=4, K=2, beta=0.5, compile="yes")


def test_compiler_failure_warns_once_and_runs_eagerly(monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(1)
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return run

    net, x, y = make("energy_based")
    expected = estimate(net, "ep", x, y)
    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    compile_dynamics(net)
    with pytest.warns(RuntimeWarning, match="torch.compile failed on EnergyBasedFC.step"):
        got = estimate(net, "ep", x, y)
    assert calls == [1]  # not retried at every step
    assert_estimates_close(expected, got, rtol=0, atol=0)
    compile_dynamics(net, False)


def traced_eagerly(fn, **kwargs):
    """A stand-in for ``torch.compile`` that runs ``fn`` as it is (errors are eager's)."""
    return fn


def test_an_error_of_the_inputs_is_raised_and_keeps_compile_on(monkeypatch):
    """An error that eager raises too (inputs of another dtype) is the caller's, not the
    compiler's: the old code warned "torch.compile failed" and ran eagerly for good."""
    net, x, y = make("prototypical")
    monkeypatch.setattr(compiled.torch, "compile", traced_eagerly)
    compile_dynamics(net)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "torch.compile failed" warning
            with pytest.raises(RuntimeError, match="must have the same dtype"):
                estimate(net, "ep", x, y.double())  # the nudge promotes the state
        assert not compiled_relaxation(net).failed
    finally:
        compile_dynamics(net, False)


def test_a_compiled_net_is_freed_with_its_last_reference(monkeypatch):
    """The compiled relaxation lives with its net: the old module-level dict held each net
    through its wrapper's ``net.step``, so no net given ``compile=True`` was ever freed."""
    net, x, y = make("prototypical")
    monkeypatch.setattr(compiled.torch, "compile", traced_eagerly)
    compile_dynamics(net)
    estimate(net, "ep", x, y)
    alive = weakref.ref(net)
    del net
    gc.collect()
    assert alive() is None


def test_a_copy_of_a_compiled_net_relaxes_eagerly_and_pickles():
    """``copy.deepcopy`` (the GDU analysis copies its net) and pickling leave the compiled
    functions behind."""
    net, _, _ = make("prototypical")
    compile_dynamics(net)
    try:
        for copied in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            assert compiled_relaxation(copied) is None
            assert compiled_relaxation(net) is not None
    finally:
        compile_dynamics(net, False)


def test_one_graph_per_phase_and_batch_size_not_per_batch(counting_compile):
    """Three batches of 4 and a last batch of 2: the free and the nudged step are traced once per
    batch size (static shapes), and the traced steps give eager's estimate."""
    net, x, y = make("prototypical", B=4)
    compile_dynamics(net)
    try:
        for b in range(3):
            xb, yb = torch.rand_like(x), y.roll(b, 0)
            compile_dynamics(net, False)
            expected = estimate(net, "ep", xb, yb)
            compile_dynamics(net)
            got = estimate(net, "ep", xb, yb)
            assert_estimates_close(expected, got)
        assert len(counting_compile) == 2  # free (beta = 0) and nudged step, batch 4
        estimate(net, "ep", x[:2], y[:2])
        assert len(counting_compile) == 4  # the same two for the last batch of 2
        estimate(net, "ep", x[:2], y[:2])
        assert len(counting_compile) == 4
    finally:
        compile_dynamics(net, False)


def test_a_long_phase_runs_one_graph_per_chunk_length(counting_compile):
    """``2 UNROLL + 3`` steps: the ``UNROLL``-step graph twice, then a 3-step graph; the state
    and the state one step before the end are eager's."""
    net, x, y = make("energy_based")
    steps = 2 * UNROLL + 3
    with torch.no_grad():
        static = net.static_terms(x)
        expected = relax_with_previous(net, net.init_state(x), static, steps, 0.5, y)
        compile_dynamics(net)
        try:
            got = relax_with_previous(net, net.init_state(x), static, steps, 0.5, y)
        finally:
            compile_dynamics(net, False)
    assert len(counting_compile) == 2
    for e, g in zip([*expected[0], *expected[1]], [*got[0], *got[1]], strict=True):
        torch.testing.assert_close(g, e)


def test_batched_real_nudges_are_compiled(counting_compile):
    """Symmetric EP relaxes +beta and -beta as one batch with a tensor of nudges: compiled."""
    net, x, y = make("prototypical")
    rule = make_rule("ep", 6, 3, 0.5, nudging="symmetric")
    expected = rule(net, x, y).objective
    compile_dynamics(net)
    try:
        got = rule(net, x, y).objective
    finally:
        compile_dynamics(net, False)
    assert len(counting_compile) == 2  # free phase (batch 4), nudged phases (batch 8)
    torch.testing.assert_close(got, expected)


def test_complex_nudges_run_eagerly(counting_compile):
    """Complex relaxations (holomorphic EP) are never compiled."""
    net, x, y = make("prototypical")
    net, x, y = net.to(torch.complex64), x.to(torch.complex64), y.to(torch.complex64)
    relaxation = CompiledRelaxation(net)
    s = [torch.rand_like(t) for t in net.init_state(x)]
    beta = torch.full((4, 1), 0.5j)
    with torch.no_grad():
        static = net.static_terms(x)
        out = relaxation(_loop, s, static, 3, beta, y)
        expected = _loop(net.step, s, static, 3, beta, y)
    assert counting_compile == []
    for e, g in zip(expected[1], out[1], strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("algorithm", ["ep", "bptt"])
def test_inductor_matches_eager(kind, algorithm):
    net, x, y = make(kind)
    expected = estimate(net, algorithm, x, y)
    compile_dynamics(net)
    try:
        got = estimate(net, algorithm, x, y)
        assert not compiled_relaxation(net).failed
    finally:
        compile_dynamics(net, False)
    assert_estimates_close(expected, got, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@needs_reference
@pytest.mark.parametrize("kind, method", [("p1h", "ep"), ("eb1h", "bptt")])
def test_compiled_training_reproduces_the_original_weights(kind, method):
    from tests.reference import train_like_the_original

    fixture = torch.load(REFERENCE / f"train_{kind}_{method}.pt", weights_only=True)
    net = build_net(fixture["args"])
    net.load_state_dict(original_to_ours(fixture["init"]))
    compile_dynamics(net)
    try:
        train_like_the_original(net, fixture)
        assert not compiled_relaxation(net).failed
    finally:
        compile_dynamics(net, False)
    expected = original_to_ours(fixture["final"])
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("algorithm", ["ep", "bptt"])
def test_cuda_graphs_match_eager(kind, algorithm):
    """``mode="reduce-overhead"`` (CUDA graphs) against eager on the GPU, two batches in a row
    (the second replays the graphs)."""
    net, x, y = make(kind)
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    compile_dynamics(net)
    try:
        for xb in (x, torch.rand_like(x)):
            got = estimate(net, algorithm, xb, y)
            assert not compiled_relaxation(net).failed
            compile_dynamics(net, False)
            expected = estimate(net, algorithm, xb, y)
            compile_dynamics(net)
            assert_estimates_close(expected, got, rtol=1e-4, atol=1e-6)
    finally:
        compile_dynamics(net, False)


def test_a_failure_after_the_first_chunks_reruns_the_phase_eagerly_from_its_start(monkeypatch):
    """The compiler fails on the last chunk only (the 3-step graph of ``2 UNROLL + 3`` steps):
    the phase runs again eagerly from its first state, as eager would (not 2 UNROLL + 3 more
    steps from where the compiled chunks stopped)."""

    def compile_then_fail(fn, **kwargs):
        def run(step, s, static, steps, beta, y):
            if steps < UNROLL:
                raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
            return fn(step, s, static, steps, beta, y)

        return run

    net, x, y = make("energy_based")
    steps = 2 * UNROLL + 3
    with torch.no_grad():
        static = net.static_terms(x)
        expected = relax_with_previous(net, net.init_state(x), static, steps, 0.5, y)
        monkeypatch.setattr(compiled.torch, "compile", compile_then_fail)
        compile_dynamics(net)
        try:
            with pytest.warns(RuntimeWarning, match="torch.compile failed on EnergyBasedFC"):
                got = relax_with_previous(net, net.init_state(x), static, steps, 0.5, y)
        finally:
            compile_dynamics(net, False)
    for e, g in zip([*expected[0], *expected[1]], [*got[0], *got[1]], strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
