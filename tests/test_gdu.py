"""GDU quantities: one-pass BPTT per step, EP -> BPTT as beta -> 0, RMSE and sign agreement,
and the original's recorded GDU tensors."""

import pytest
import torch

from eqprop_lightning.analysis import analyse
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import DivergenceError, TruncatedBPTT
from eqprop_lightning.learning.gdu import (
    _relative,
    gdu,
    instantaneous,
    relative_rmse,
    rmse_table,
    sign_agreement,
    synapse_weights,
)
from eqprop_lightning.learning.phases import relax
from eqprop_lightning.nets import EnergyBasedFC, HopfieldClassifier, PrototypicalFC, SoftmaxReadout
from eqprop_lightning.nets.toy import ToyEnergyBased
from tests.reference import REFERENCE, build_net, original_to_ours


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.rand(3, 6, dtype=torch.float64), 0.1 * torch.eye(3, dtype=torch.float64)


def energy_based_net():
    torch.manual_seed(1)
    return EnergyBasedFC([3, 8, 5, 6], "tanh", dt=0.1, clamp=False, output_rho_prime=True).double()


def test_one_pass_bptt_equals_separate_truncated_runs(batch):
    """NT[t] from the one-pass computation equals BPTT truncated to the last t + 1 transitions."""
    x, y = batch
    net = PrototypicalFC([3, 8, 5, 6], "sigm").double()
    T, K = 30, 6
    result = gdu(net, x, y, T, K, beta=0.01)
    weights = synapse_weights(net)
    for t in range(1, K):  # the FC rule tracks K + 1 transitions: K = t gives t + 1
        net.zero_grad()
        TruncatedBPTT(T, t)(net, x, y).objective.backward()
        for k, w in weights.items():
            expected = torch.zeros_like(w) if w.grad is None else w.grad
            torch.testing.assert_close(result.NT[k][t], expected)


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.2])
def test_leaky_prototypical_neuron_updates_are_per_unit_of_dt(batch, dt):
    """A prototypical net with ``dt < 1`` (the original's HEAD code) moves the state by ``dt``
    times its update: the original's ``dS = -d / beta`` takes the update before ``dt``, so dS
    is ``-(s_{t+1} - s_t) / (dt beta)`` and matches nS (it was ``dt`` times too small: neuron
    RMSE 1 - dt; the hidden layer's is about 0.12 at any dt, as this net is not exactly
    derived from its primitive)."""
    x, y = batch
    torch.manual_seed(1)
    net = PrototypicalFC([3, 8, 6], "tanh", dt=dt).double()
    beta = 1e-5
    result = gdu(net, x, y, T=400, K=30, beta=beta)
    assert relative_rmse(result.nS[0], result.dS[0]).mean() < 0.05  # 1 - dt before the fix
    with torch.no_grad():
        static = net.static_terms(x)
        s = relax(net, net.init_state(x), static, 400)
        moved = net.step(s, static, beta, y)
    torch.testing.assert_close(result.dS[0][0], -((moved[0] - s[0]) / dt).mean(0) / beta)


@pytest.mark.parametrize(("T", "K"), [(5, 10), (5, 0)])
def test_gdu_refuses_phases_outside_1_to_T(batch, T, K):
    """K > T tracked K transitions under a T-step label; K = 0 died inside autograd."""
    x, y = batch
    with pytest.raises(ConfigError, match=f"K={K}"):
        gdu(PrototypicalFC([3, 8, 6], "sigm").double(), x, y, T, K, 0.01)


def largest_rmse(net, x, y, T: int, K: int, beta: float) -> float:
    """The largest mean relative RMSE between EP's updates and BPTT's gradients (rmse_table)."""
    table = rmse_table(gdu(net, x, y, T=T, K=K, beta=beta))
    return max(v["mean"] for group in table.values() for v in group.values())


def test_ep_updates_approach_bptt_gradients_as_beta_goes_to_zero(batch):
    x, y = batch
    net = energy_based_net()
    errors = [largest_rmse(net, x, y, 800, 60, beta) for beta in (1e-1, 1e-3)]
    assert errors[1] < 0.01
    assert errors[1] < errors[0] / 10


def test_gdu_holds_for_the_cross_entropy_of_a_softmax_readout(batch):
    """The GDU property for ``L = CE(W_r s_0(T), y)``: the per-step EP updates of the neurons and
    of the net's weights tend to the per-step BPTT gradients of the cross-entropy (the readout's
    weights enter ``L`` only and are not compared). Against the squared error's gradients they
    stay far apart: the curves are those of the readout's cost."""
    x, _ = batch
    y = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 2, 3])]
    torch.manual_seed(1)
    inner = EnergyBasedFC([3, 8, 5, 6], "tanh", dt=0.1, clamp=False, output_rho_prime=True)
    net = SoftmaxReadout(inner, classes=4).double()
    errors = []
    for beta in (1e-1, 1e-3):
        result = gdu(net, x, y, T=800, K=60, beta=beta)
        assert set(result.NT) == {"W01", "W12", "W2x"}
        table = rmse_table(result)
        errors.append(max(v["mean"] for group in table.values() for v in group.values()))
    assert errors[1] < 0.01
    assert errors[1] < errors[0] / 10
    squared_error = gdu(inner, x, 0.1 * torch.eye(3, dtype=torch.float64), T=800, K=60, beta=1e-3)
    assert relative_rmse(squared_error.NT["W01"], result.NT["W01"]).mean() > 0.5


def test_toy_model_satisfies_gdu(batch):
    x, y = batch
    torch.manual_seed(2)
    net = ToyEnergyBased([3, 7, 6], "tanh", dt=0.1).double()
    errors = [largest_rmse(net, x, y, 600, 40, beta) for beta in (1e-1, 1e-4)]
    assert errors[1] < 0.01
    # the control: EP's bias is O(beta), so the curves that agree at 1e-4 part at 1e-1
    assert errors[1] < errors[0] / 10


def test_instantaneous_keeps_the_first_step():
    cumulative = torch.tensor([1.0, 3.0, 6.0])
    torch.testing.assert_close(instantaneous(cumulative), torch.tensor([1.0, 2.0, 3.0]))


def test_relative_rmse_formula():
    n = torch.tensor([[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    # component 0: sqrt(1 / max(2, 1)); component 1: both zero -> 0; component 2: sqrt(4 / 4);
    # component 3, where d is the larger: sqrt(9 / max(1, 10))
    expected = torch.tensor([0.5**0.5, 0.0, 1.0, 0.9**0.5])
    torch.testing.assert_close(relative_rmse(n, d), expected)


def test_non_finite_trajectories_are_no_match():
    """A NaN in either trajectory gives a NaN RMSE (the original's): the old ``den > 0`` test
    read it as 0, a perfect match; and the analysis of a net with a NaN weight is refused,
    naming it, before anything is summarised or written."""
    nan = float("nan")
    n, d = torch.tensor([[nan, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    rmse = relative_rmse(n, d)
    assert rmse[0].isnan() and rmse[1] == 0.0
    torch.manual_seed(0)
    net = PrototypicalFC([10, 8, 12])
    with torch.no_grad():
        next(net.synapse_groups()[0].parameters())[0, 0] = nan
    x, y = torch.rand(4, 12), torch.eye(10)[:4]
    with pytest.raises(DivergenceError, match="the GDU analysis is not finite: weight W01"):
        analyse(net, x, y, 6, 2, 0.1)


def test_relative_error_is_undefined_only_against_a_zero_reference():
    """``|a - b| / |b|``; 0 where both are 0; ``None`` where only the reference ``b`` is 0 (as
    when every output unit is dead on the batch): not 0, which would read as a perfect match."""
    b = torch.tensor([3.0, 4.0])
    assert _relative(torch.tensor([3.0, 3.0]), b) == pytest.approx(1 / 5)
    assert _relative(torch.zeros(2), torch.zeros(2)) == 0.0
    assert _relative(torch.tensor([0.0, 1e-3]), torch.zeros(2)) is None


def test_sign_agreement_adds_up_and_is_total_on_agreeing_case():
    torch.manual_seed(0)
    n = torch.randn(4, 5, 6)
    n[-1, 0] = 0.0
    agree = sign_agreement({"W": n}, {"W": 3 * n})["W"]
    assert agree["total"] == pytest.approx(100.0)
    assert agree["both_zero"] == pytest.approx(100 * 6 / 30)
    # last step counted by hand: same sign at 0 and 5, both zero at 2, a zero on one side only
    # at 3 and 4, opposite signs at 1
    first = torch.zeros(1, 6)
    mixed = sign_agreement(
        {"W": torch.cat([first, torch.tensor([[1.0, -1.0, 0.0, 2.0, 0.0, 3.0]])])},
        {"W": torch.cat([first, torch.tensor([[2.0, 1.0, 0.0, 0.0, 4.0, 5.0]])])},
    )["W"]
    assert mixed == pytest.approx({"same_sign": 100 * 2 / 6, "both_zero": 100 / 6, "total": 50.0})


def test_gdu_leaves_parameter_grads_untouched(batch):
    x, y = batch
    net = energy_based_net()
    gdu(net, x, y, T=20, K=5, beta=0.01)
    assert all(p.grad is None for p in net.parameters())


def toy_from_fixture(fixture):
    args = fixture["args"]
    net = ToyEnergyBased(
        args["size_tab"], args["activation_function"], dt=args["dt"], clamp=not args["no_clamp"]
    )
    names = {"w.1": "w01", "w.2": "w0x", "w.4": "w1x"}
    net.load_state_dict(
        {
            f"{names[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v
            for k, v in fixture["init"].items()
        }
    )
    return net, {1: "W01", 2: "W0x", 4: "W1x"}


@pytest.mark.skipif(REFERENCE is None, reason="reference fixtures not found")
@pytest.mark.parametrize("kind", ["p1h", "eb1h", "p2h", "toy"])
def test_gdu_reproduces_the_original(kind):
    """nS and NT to float precision; dS and DT, which divide float32 differences of states by
    beta (by dt * beta = 8e-5 for EB-1h), to 1e-3 of their scale."""
    fixture = torch.load(REFERENCE / f"gdu_{kind}.pt", weights_only=True)
    args = fixture["args"]
    if kind == "toy":
        net, labels = toy_from_fixture(fixture)
    else:
        net = build_net(args)
        net.load_state_dict(original_to_ours(fixture["init"]))
        labels = {2 * i: label for i, label in enumerate(net.synapse_labels())}
    result = gdu(net, fixture["x"][0], fixture["y"][0], args["T"], args["Kmax"], args["beta"])

    def close(ours, theirs, rel):
        scale = theirs.abs().max()
        assert (ours - theirs).abs().max() <= rel * scale + 1e-7

    for i, (n, d) in enumerate(zip(result.nS, result.dS, strict=True)):
        close(n, fixture["nS"][i].squeeze(1), 1e-5)
        close(d, fixture["dS"][i].squeeze(1), 2e-3)
    for j, label in labels.items():
        close(result.NT[label], fixture["NT"][j], 1e-5)
        close(result.DT[label], fixture["DT"][j], 2e-3)


def test_symmetric_gdu_is_closer_to_bptt(batch):
    x, y = batch
    net = energy_based_net()

    def worst(result):
        table = rmse_table(result)
        return max(v["mean"] for group in table.values() for v in group.values())

    one_sided = worst(gdu(net, x, y, T=800, K=60, beta=0.1))
    symmetric = worst(gdu(net, x, y, T=800, K=60, beta=0.1, symmetric=True))
    assert symmetric < one_sided / 5


def test_hopfield_net_weight_updates_match_bptt_step_by_step():
    """The sequence nets' step-by-step GDU on the weights (projection and fc): each truncated
    BPTT gradient NT[t] is EP's cumulative update DT[t] up to O(beta) for one-sided nudging and
    O(beta^2) for symmetric nudging (tanh, so that no unit is saturated)."""
    torch.manual_seed(0)
    net = HopfieldClassifier([5], [[0, 0]], [6, 3], embed_dim=4, activation="tanh").double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    y = 0.5 * torch.eye(3, dtype=torch.float64)

    def worst(beta: float, symmetric: bool) -> float:
        table = rmse_table(gdu(net, x, y, T=400, K=40, beta=beta, symmetric=symmetric))
        assert set(table["weights"]) == {"P0", "W1", "W2"}
        return max(v["mean"] for v in table["weights"].values())

    one_sided = [worst(beta, False) for beta in (1e-2, 1e-3)]
    assert one_sided[1] < 5e-3 and one_sided[1] < one_sided[0] / 5
    symmetric = worst(1e-2, True)
    assert symmetric < 1e-3 and symmetric < one_sided[0] / 20
