"""The LightningModule that trains a convergent RNN with EP, continual EP, truncated BPTT or
recurrent backpropagation."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchmetrics import MeanMetric

from eqprop_lightning.errors import ConfigError, DataError
from eqprop_lightning.learning import (
    DivergenceError,
    Estimate,
    cost,
    first_nonfinite_weight,
    locate_nonfinite,
    net_and_rule,
    real_nudges,
)
from eqprop_lightning.learning.phases import free_phase
from eqprop_lightning.rng import CHECKPOINT_KEY as RNG_KEY
from eqprop_lightning.rng import SEED_KEY, capture_rng_states, restore_rng_states, run_seed
from eqprop_lightning.validation import (
    check_net_fits_data,
    check_same_data,
    check_same_hparams,
    check_same_weights,
)

try:  # Lightning's guard of load_from_checkpoint (private: a plain classmethod where it is gone)
    from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
except ImportError:  # pragma: no cover
    _restricted_classmethod = classmethod

#: the cosine schedule's default final learning rate
ETA_MIN = 1e-5


def error_percent(output: Tensor, y: Tensor) -> Tensor:
    """Per-example error in percent: 100 where ``argmax(output) != argmax(y)``, else 0."""
    return (output.argmax(1) != y.argmax(1)).float() * 100.0


def check_targets(y: Tensor, classes: int, dtype: torch.dtype | None = None) -> None:
    """The targets are one-hot floats ``(B, classes)`` (class indices would broadcast against
    the output state in the cost, silently, when B is 1 or ``classes``), of the net's ``dtype``
    where given (training: the nudge would promote the state to the targets' dtype)."""
    if y.ndim != 2 or y.shape[1] != classes or not y.is_floating_point():
        raise DataError(
            f"targets of shape {tuple(y.shape)} and dtype {y.dtype}: the net takes one-hot float "
            f"targets of shape (batch, {classes}) (torch.nn.functional.one_hot(labels, "
            f"{classes}).float() for class indices)"
        )
    if dtype is not None and y.dtype != dtype:
        raise DataError(
            f"targets of dtype {y.dtype} for a net of {dtype}: give targets of the net's dtype "
            f"(y.to({dtype}))"
        )


def warn_silent_outputs(output: Tensor) -> None:
    """Warn about output units that are exactly 0 for every example of a batch: at a clamp's or
    hard sigmoid's lower bound BPTT gets no gradient through them, and if they stay there for
    every input their class is never predicted (a seed-dependent trap of the original code)."""
    silent = (output == 0).all(0).nonzero().flatten().tolist()
    if silent:
        rank_zero_warn(
            f"output units {silent} are 0 for every example of the first batch: BPTT gets no "
            "gradient through a unit held at its lower bound, so their classes may never be "
            "predicted (EP's nudge can still move them); if BPTT stalls, try another seed"
        )


def evaluation_sets(datamodule: Any) -> dict[str, str]:
    """``{"val"|"test": what the set is}`` of the evaluation loaders of ``datamodule`` (its
    ``evaluation_sets``, in the order of its ``val_dataloader``); a data module that does not
    say has one loader, taken as validation."""
    sets = getattr(datamodule, "evaluation_sets", None)
    if sets:
        return dict(sets)
    if datamodule is None:  # loaders given to Trainer.fit directly
        return {"val": "the val_dataloaders given to Trainer.fit"}
    return {"val": f"the val_dataloader of {type(datamodule).__name__}"}


def drop_module_hparam(module: L.LightningModule, name: str) -> None:
    """Remove the ``nn.Module`` hyperparameter ``name`` that ``save_hyperparameters`` recorded
    (Lightning's ``ignore`` would also drop the CLI's ``class_path`` description of it)."""
    del module._hparams[name]
    module._hparams_initial.pop(name, None)


class EqPropModule(L.LightningModule):
    """Trains ``net`` with EP (``algorithm: ep``), continual EP (``cep``), truncated BPTT
    (``bptt``) or recurrent backpropagation (``rbp``).

    Optimization is manual: the rule returns a scalar whose gradient is its estimate, which goes
    through ``manual_backward`` (so DDP all-reduces it), then the optimizer, with one learning
    rate per synapse group, takes a step: plain SGD as seed 1, or Adam (eps 1e-8) as seed 2,
    optionally with a cosine schedule stepped once per epoch for ``cosine_t_max`` epochs.

    Args:
        net: the dynamics, e.g. :class:`~eqprop_lightning.nets.PrototypicalFC`. A net built in
            code is not stored among the hyperparameters (a pickled module would not load with
            ``weights_only=True``): load such a checkpoint with
            ``EqPropModule.load_from_checkpoint(path, net=<the same net>)``. The CLI stores the
            net's ``class_path`` and ``init_args`` instead, and needs no ``net`` (nor do the
            checkpoints of a module loaded from it without one).
        algorithm: ``ep``, ``cep`` (continual EP: an optimizer step at each of the ``K`` nudged
            steps, so that ``global_step`` counts ``K`` per batch), ``bptt`` or ``rbp``
            (recurrent backpropagation, the implicit gradient at the free fixed point), or the
            import path of a rule of your own, ``package.module.Class``, built as
            ``Class(T=T, K=K, beta=beta, **rule_args)``
            (:func:`~eqprop_lightning.learning.rules.user_rule`).
        T: free-phase steps.
        K: nudged-phase steps (EP), tracked steps (BPTT) or adjoint iterations (RBP).
        beta: nudging strength; required by EP and continual EP, None for BPTT and RBP.
        symmetric: the old spelling of ``nudging: symmetric`` (an alias); False for BPTT.
        nudging: EP's nudging scheme, ``positive`` (the default, two-phase), ``symmetric``
            (``+beta`` and ``-beta``), ``random_sign`` (``+-beta`` drawn per batch from the run's
            seed, that of ``seed_everything`` called before the module is built, and the global
            step) or ``holomorphic`` (complex nudges, tanh/sigm/sigmoid nets
            without clamp); EP only (see :mod:`eqprop_lightning.learning.nudging`).
        holomorphic_points: the ``N`` complex nudges ``beta exp(2 pi i k / N)`` of holomorphic EP
            (default 4, at least 2); holomorphic nudging only.
        lrs: learning rates, one per synapse group in the net's order (seed 1: output layer
            first, as ``--lr_tab``; seed 2: projections, then the fc layers upwards).
        optimizer: ``sgd`` or ``adam`` (not with continual EP, whose per-step updates add up
            to EP's only under SGD).
        cosine_t_max: epochs of cosine annealing (``CosineAnnealingLR``, seed 2: 100), or None.
        eta_min: the schedule's final learning rate (with ``cosine_t_max`` only).
        convergence_tol: stop training when a batch's free phase still moves by more than this
            at its last step (per layer, the batch mean of each example's largest
            ``|s(T) - s(T-1)|``; ``train/free_change`` logs the largest layer's value, averaged
            over the epoch's batches); None never stops. Training always stops, with the
            layer, phase and step named, when a state or weight is not finite.
        loss: the cost that nudges the output and that BPTT descends: ``mse`` (the seeds'
            ``1/2 |s_0 - y|^2``) or ``cross_entropy`` (a softmax readout ``W_r s_0 + b_r`` of the
            output layer, trained by the same estimate, Laborieux et al. 2021; ``lrs`` then
            starts with the readout's rate), see :mod:`eqprop_lightning.nets.readout`.
        readout_classes: the softmax readout's logits (``loss: cross_entropy``; default: as many
            as the net's output units). With a net whose last layer is a hidden layer (e.g.
            ``size_tab: [512, 784]`` and 10 classes) the readout is Laborieux et al.'s: the
            prediction is not a layer of the dynamics.
        compile: run the relaxations' step through ``torch.compile`` (inductor on CPU, CUDA
            graphs on CUDA; eager with a warning where compilation fails), see
            :mod:`eqprop_lightning.learning.compiled`.
        rule_args: the options of a rule of your own (``algorithm: package.module.Class``)
            other than ``T``, ``K`` and ``beta``, e.g. ``{"scale": 0.5}``; None for ours.
    """

    def __init__(
        self,
        net: nn.Module,
        lrs: list[float],
        algorithm: str = "ep",
        T: int = 40,
        K: int = 15,
        beta: float | None = None,
        symmetric: bool = False,
        nudging: str | None = None,
        holomorphic_points: int | None = None,
        optimizer: Literal["sgd", "adam"] = "sgd",
        cosine_t_max: int | None = None,
        eta_min: float = ETA_MIN,
        convergence_tol: float | None = None,
        compile: bool = False,
        loss: Literal["mse", "cross_entropy"] = "mse",
        readout_classes: int | None = None,
        rule_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # its advice, to ignore a module, is followed below
            warnings.filterwarnings("ignore", "Attribute 'net' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("net"), nn.Module):  # built in code, not by the CLI
            drop_module_hparam(self, "net")
        self.automatic_optimization = False
        self.net, self.rule = net_and_rule(
            net,
            algorithm,
            T,
            K,
            beta,
            symmetric,
            nudging,
            holomorphic_points,
            compile,
            loss,
            readout_classes,
            rule_args,
            seed=run_seed() or 0,  # the run's seed_everything
        )
        net = self.net
        groups = net.synapse_groups()
        if len(lrs) != len(groups):
            raise ConfigError(
                f"lrs={lrs} has {len(lrs)} entries but the net has {len(groups)} weight layers: "
                "give one learning rate per weight layer, output layer first"
                + (" (the readout's first with loss: cross_entropy)" if loss != "mse" else "")
            )
        if any(not 0 < lr < math.inf for lr in lrs):
            raise ConfigError(f"lrs={lrs} must all be finite and > 0")
        if optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer={optimizer!r} is not supported; choose 'sgd' or 'adam'")
        if optimizer == "adam" and self.rule.continual:
            raise ConfigError(
                f"optimizer='adam' with algorithm {algorithm!r}: continual EP's K per-step "
                "updates add up to EP's update only under plain SGD (Adam rescales each of "
                "them); use 'sgd'"
            )
        if cosine_t_max is not None and cosine_t_max < 1:
            raise ConfigError(f"cosine_t_max={cosine_t_max} must be a positive number of epochs")
        if not 0 <= eta_min < math.inf:
            raise ConfigError(f"eta_min={eta_min} must be finite and >= 0")
        if cosine_t_max is None and eta_min != ETA_MIN:
            raise ConfigError(
                f"eta_min={eta_min} is the cosine schedule's final learning rate, and there is "
                "no schedule: set cosine_t_max too, or leave eta_min out"
            )
        if convergence_tol is not None and not (
            isinstance(convergence_tol, (int, float)) and convergence_tol > 0
        ):
            raise ConfigError(f"convergence_tol={convergence_tol} must be > 0 (or null: no check)")
        # the epoch's running means go into checkpoints, for a resume in the middle of an epoch
        self.train_error = MeanMetric()
        self.train_loss = MeanMetric()
        self.free_change = MeanMetric()
        self.train_metrics = {  # logged name -> the epoch's running mean
            "train/error": self.train_error,
            "train/loss": self.train_loss,
            "train/free_change": self.free_change,
        }
        for metric in self.train_metrics.values():
            metric.persistent(True)
        self.val_error = MeanMetric()
        self.test_error = MeanMetric()
        self._resumed_rng_states: dict | None = None  # put back when training starts

    def configure_optimizers(self):
        hp = self.hparams
        groups = zip(self.net.synapse_groups(), hp.lrs, strict=True)
        params = [{"params": list(g.parameters()), "lr": lr} for g, lr in groups]
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(params, eps=1e-8)
        else:
            optimizer = torch.optim.SGD(params)
        if hp.cosine_t_max is None:
            return optimizer
        schedule = CosineAnnealingLR(optimizer, T_max=hp.cosine_t_max, eta_min=hp.eta_min)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_train_epoch_end(self) -> None:
        """Manual optimization: step the cosine schedule once per epoch, for ``cosine_t_max``
        epochs (as seed 2)."""
        schedule = self.lr_schedulers()
        if schedule is not None and self.current_epoch < self.hparams.cosine_t_max:
            schedule.step()

    def forward(self, x: Tensor) -> Tensor:
        """Output of the free phase (``T`` steps from zeros), without gradients (it runs under
        ``torch.no_grad``: the rules build their own graphs)."""
        with torch.no_grad():
            _, s = free_phase(
                self.net, self.net.static_terms(x), self.net.init_state(x), self.rule.T
            )
        return self.net.output(s)

    def setup(self, stage: str) -> None:
        """The net against the data module's example shape and classes (a model and data
        module used from code get the CLI's one-line error, not a shape error deep in torch)."""
        if self.trainer.datamodule is not None:
            check_net_fits_data(self.net, self.trainer.datamodule)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        check_targets(y, self.net.num_classes, next(self.net.parameters()).dtype)
        if batch_idx == 0:  # a new epoch (a run resumed mid-epoch keeps its running means)
            for metric in self.train_metrics.values():
                metric.reset()
        opt = self.optimizers()

        def update(estimate: Estimate) -> None:
            self.guard(estimate, x, y, batch_idx)
            if self.global_step == 0:
                warn_silent_outputs(estimate.output)
            opt.zero_grad()
            self.manual_backward(estimate.objective)
            opt.step()

        if self.rule.continual:  # continual EP: an update per nudged step
            estimate = self.rule(self.net, x, y, self.global_step, apply=update)
        else:
            estimate = self.rule(self.net, x, y, self.global_step)
            update(estimate)
        self.train_error.update(error_percent(estimate.output, y))
        self.train_loss.update(cost(self.net, estimate.output, y))
        self.free_change.update(estimate.last_change.max())
        if batch_idx + 1 == self.trainer.num_training_batches:
            # log the epoch's means once: a self.log per step costs as much as the P-1h step
            for name, metric in self.train_metrics.items():
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name == "train/error")

    def guard(self, estimate: Estimate, x: Tensor, y: Tensor, batch_idx: int) -> None:
        """Stop with :class:`DivergenceError` (before the update, so that no checkpoint holds
        the result) when the estimate is not finite, naming the first non-finite weight or
        state, or when the free phase has not converged to ``convergence_tol``. All ranks
        agree, so that none waits for the others in the gradient all-reduce."""
        finite = bool(
            torch.isfinite(estimate.objective) & torch.isfinite(estimate.last_change).all()
        )
        tol = self.hparams.convergence_tol
        converged = tol is None or bool((estimate.last_change <= tol).all())
        if self.trainer.world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(finite and converged, all=True)
        else:
            ok = finite and converged
        if ok:
            return
        where = (
            f"epoch {self.current_epoch + 1}, batch {batch_idx} (global step {self.global_step})"
        )
        hp = self.hparams
        if not finite:
            nudges, complex_phases = real_nudges(self.rule, self.global_step)
            found = locate_nonfinite(self.net, x, y, hp.T, hp.K, nudges)
            if found is None and complex_phases:
                found = (
                    "the gradient estimate is not finite while every input, weight and real "
                    "state is finite: the complex nudged phases (not replayed) may have "
                    "overflowed (a beta past the activation's complex poles)"
                )
            elif found is None:  # every value is finite: the estimate itself overflowed
                largest = max(float(p.detach().abs().max()) for p in self.net.parameters())
                found = (
                    "the gradient estimate is not finite while every input, weight and state is "
                    f"(an overflow; the largest weight is {largest:.3g} in magnitude)"
                )
            raise DivergenceError(
                f"training diverged at {where}: {found}; lower the learning rates, beta or dt"
            )
        if not converged:
            layer = int(estimate.last_change.argmax())
            raise DivergenceError(
                f"the free phase has not converged at {where}: state s{layer} still moves by "
                f"{float(estimate.last_change[layer]):.3g} at step {hp.T} of {hp.T} "
                f"(convergence_tol={tol}); raise T, or lower dt or the learning rates"
            )
        raise DivergenceError(
            f"training stopped at {where}: another process diverged (its message says where)"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Never write non-finite weights, so that the last checkpoint is a good one (an update
        at the end of an epoch is checked here, the others by the next batch's :meth:`guard`);
        store the torch, Python and NumPy random states, so that whatever draws from them while
        training draws in a resumed run as in an uninterrupted one, and the run's seed, from
        which the training order and the random signs are drawn. Under DDP, where every rank
        saves (rank 0 writes), the epoch's running means are stored summed over the ranks."""
        if (label := first_nonfinite_weight(self.net)) is not None:
            raise DivergenceError(
                f"training diverged at epoch {self.current_epoch + 1} (global step "
                f"{self.global_step}): weight {label} is not finite; not saved"
            )
        checkpoint[RNG_KEY] = capture_rng_states()
        checkpoint[SEED_KEY] = run_seed()
        if self.trainer.world_size > 1:
            state = checkpoint["state_dict"]
            for key in self._running_sum_keys(state):
                state[key] = self.trainer.strategy.reduce(state[key].clone(), reduce_op="sum")

    def _running_sum_keys(self, state: dict) -> list[str]:
        """The entries of a checkpoint's ``state`` that hold the running means' sums."""
        means = list(self.train_metrics.values())
        names = {n for n, m in self.named_children() if any(m is mean for mean in means)}
        return [key for key in state if key.split(".", 1)[0] in names]

    @_restricted_classmethod  # as Lightning's: a TypeError when called on an instance
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's; without a ``net`` argument, a CLI checkpoint's description of its net
        (``class_path``, ``init_args``) stays among the hyperparameters (Lightning builds the
        net, and :meth:`__init__` drops a built one), so that what the module saves loads
        without ``net`` too."""
        model = super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        described = model.__dict__.pop("_described_net", {})
        if "net" not in kwargs:
            model._hparams.update(described)
            model._hparams_initial.update(copy.deepcopy(described))
        return model

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the checkpoint's random states for :meth:`on_train_start`, and its net's
        description for :meth:`load_from_checkpoint`. A fit that resumes it from code
        (``Trainer.fit(model, data, ckpt_path=...)``) must give the model and data module it was
        trained with: Lightning would go on with the ones given (the CLI checks its config
        before anything is built)."""
        self._resumed_rng_states = checkpoint.get(RNG_KEY)
        if self._trainer is None:  # load_from_checkpoint, not a Trainer's restore
            hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}
            if isinstance(hparams.get("net"), dict) and "net" not in self.hparams:
                keys = ("net", "_instantiator")
                self._described_net = {k: hparams[k] for k in keys if k in hparams}
            return
        if self.trainer.state.fn != "fit":
            return
        if self.trainer.global_rank > 0:  # the sums of every rank are rank 0's to resume
            state = checkpoint["state_dict"]
            for key in self._running_sum_keys(state):
                state[key] = torch.zeros_like(state[key])
        ckpt_path = self.trainer.ckpt_path
        check_same_hparams(ckpt_path, checkpoint, dict(self.hparams), here="this module")
        state = self.state_dict()  # the running means: older checkpoints lack them (they load)
        means = frozenset(self._running_sum_keys(state))
        check_same_weights(ckpt_path, checkpoint["state_dict"], state, exempt=means)
        if (data := self.trainer.datamodule) is not None:
            given = {"init_args": dict(data.hparams)}
            check_same_data(ckpt_path, checkpoint, given, here="this data module")

    def on_train_start(self) -> None:
        """Put back a checkpoint's random states: after the sanity check, whose data loader
        iterators draw from the torch generator (the uninterrupted run drew those before
        saving), and before the first training batch is drawn."""
        states, self._resumed_rng_states = self._resumed_rng_states, None
        if states is not None and self.trainer.ckpt_path:  # a resume, not a loaded model
            restore_rng_states(states)

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """The error on each evaluation set as ``<set>/error``: ``val/error`` on a validation
        split, ``test/error`` on the test set (evaluated every epoch as the original)."""
        sets = list(evaluation_sets(self.trainer.datamodule))
        self._evaluate(batch, sets[dataloader_idx])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor], name: str) -> None:
        """``<name>/error``: the percentage of ``batch`` whose free-phase prediction is wrong."""
        x, y = batch
        check_targets(y, self.net.num_classes)
        metric = {"val": self.val_error, "test": self.test_error}[name]
        metric(error_percent(self(x), y))
        self.log(f"{name}/error", metric, on_epoch=True, prog_bar=True, add_dataloader_idx=False)

    def predict_step(
        self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """The free phase's output state ``s_0`` (``output``, ``(B, classes)``) and the class it
        predicts, ``argmax_c s_0[c]`` (``prediction``, ``(B,)``), as the error counts it."""
        output = self(batch[0])
        return {"prediction": output.argmax(1), "output": output}
