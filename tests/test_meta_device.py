"""Device bugs caught on the CPU: every net's phases, the EP surrogate's backward and a BPTT step
with the net and the batch on the ``meta`` device (shapes only, no data). A tensor that the code
creates on the CPU by mistake (``torch.zeros(n)`` without ``device=``) meets a meta tensor in some
op and fails there, as it would on a GPU."""

import pytest
import torch
from torch.nn import functional as F

from eqprop_lightning.learning import make_rule
from eqprop_lightning.learning.phases import free_phase, nudged_phase
from tests.test_compile import NETS

META = torch.device("meta")


def meta_batch(kind: str, B: int = 4):
    torch.manual_seed(0)
    factory, shape = NETS[kind]
    net = factory().to(META)
    x = torch.rand(B, *shape, device=META)
    y = F.one_hot(torch.arange(B) % 3, 3).float().to(META)
    return net, x, y


@pytest.mark.parametrize("kind", sorted(NETS))
def test_free_and_nudged_phases_stay_on_the_device(kind):
    net, x, y = meta_batch(kind)
    with torch.no_grad():
        static = net.static_terms(x)
        _, s = free_phase(net, static, net.init_state(x), 3)
        _, s = nudged_phase(net, static, s, 2, 0.5, y)
    assert all(t.device == META for t in s)


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("algorithm", ["ep", "bptt"])
def test_rule_backward_stays_on_the_device(kind, algorithm):
    net, x, y = meta_batch(kind)
    estimate = make_rule(algorithm, 6, 4, 0.5 if algorithm == "ep" else None)(net, x, y)
    estimate.objective.backward()
    assert estimate.objective.device == META and estimate.last_change.device == META
    assert all(p.grad is not None and p.grad.device == META for p in net.parameters())


def test_a_cpu_tensor_meets_a_meta_tensor_loudly():
    """The premise: a CPU tensor created by mistake fails against the meta batch."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.rand(4, 3, device=META) + torch.zeros(4, 3)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("algorithm", ["ep", "bptt"])
def test_cuda_estimate_matches_the_cpu(kind, algorithm):
    """The same rule on CUDA and on the CPU (float64 on both: no TF32, no reordering noise)."""
    from tests.test_compile import assert_estimates_close, estimate, make

    net, x, y = make(kind)
    net, x, y = net.double(), x.double(), y.double()
    expected = estimate(net, algorithm, x, y)
    got = estimate(net.cuda(), algorithm, x.cuda(), y.cuda())
    assert_estimates_close(expected, got, rtol=1e-9, atol=1e-12)
