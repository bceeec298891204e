"""GDU check during training: EP updates against BPTT gradients on a fixed batch, every N steps."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from eqprop_lightning.analysis import analyse, gdu_figures, summary_metrics
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import DivergenceError
from eqprop_lightning.learning.estimator import check_beta, check_phases

#: The commands (and Lightning stages) that train, during which the check runs.
TRAINING_COMMANDS = ("fit", "compare")


class GDUCallback(L.Callback):
    """Every ``every_n_steps`` optimizer steps (0, the default, turns it off; with continual EP,
    whose batch takes ``K`` steps, at the first batch end past each multiple), runs the GDU
    analysis of the model on a fixed batch (the first training batch it sees: the run's first,
    or after a resume the first one trained after it) and logs the mean relative RMSE per layer
    (``gdu/rmse/<s0|W01|...>``), the sign agreement per weight
    (``gdu/sign_agreement/<W01|...>``, percent) and the relative error of the model's learning
    rule against truncated BPTT and RBP per weight (``gdu/estimate_error/<bptt|rbp>/<W01|...>``;
    not for continual EP, which has no estimate at fixed weights) as scalars, and the GDU
    figures to TensorBoard. The per-step curves use the model's nudging when it is symmetric,
    else the positive nudge (they are defined for these two).

    Runs on rank 0 only and computes its gradients with ``torch.autograd.grad``: the parameters'
    ``.grad`` and the training are left untouched.

    Args:
        every_n_steps: analysis period in optimizer steps; 0 disables the callback.
        T, K: the model's ``T`` and ``K`` (the default): the check is about the dynamics that
            train, so other values are a ``ConfigError``.
        beta: the EP nudge of the analysis; default the model's ``beta`` (required when the
            model trains with BPTT, which has none).
        figures: also log the neuron, synapse and RMSE figures: null (the default) to each
            TensorBoard logger, true requires one, false to none.
    """

    def __init__(
        self,
        every_n_steps: int = 0,
        T: int | None = None,
        K: int | None = None,
        beta: float | None = None,
        figures: bool | None = None,
    ) -> None:
        if (
            not isinstance(every_n_steps, int)
            or isinstance(every_n_steps, bool)
            or every_n_steps < 0
        ):
            raise ConfigError(
                f"gdu.every_n_steps={every_n_steps!r} must be an integer >= 0 (0: off)"
            )
        if figures is not None and not isinstance(figures, bool):
            raise ConfigError(
                f"gdu.figures={figures!r} must be true, false or null (to each TensorBoard logger)"
            )
        if beta is not None:
            check_beta(beta, "(or null: the model's)", field="gdu.beta")
        unused = {"T": T, "K": K, "beta": beta}
        if not every_n_steps and any(v is not None for v in unused.values()):
            given = ", ".join(f"gdu.{k}={v!r}" for k, v in unused.items() if v is not None)
            raise ConfigError(
                f"{given}: the GDU check is off (gdu.every_n_steps=0); turn it on with "
                "gdu.every_n_steps N"
            )
        self.every_n_steps = every_n_steps
        self.T, self.K, self.beta = T, K, beta
        self.figures = figures
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step_before = 0  # global step at the start of the batch in progress

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.check_against(pl_module.hparams, trainer, stage)

    def check_against(self, hp, trainer: L.Trainer, command: str) -> None:
        """The analysis' settings against the model's hyperparameters ``hp``, the trainer's
        loggers and the command (or Lightning stage) that runs: ``ConfigError`` for a check
        that would do nothing (outside training, without a logger; ``figures: true`` without
        TensorBoard; ``fast_dev_run``, whose logger logs nothing, is a smoke test and may). The
        CLI calls it before anything is written."""
        if not self.every_n_steps:
            return
        given = f"gdu.every_n_steps={self.every_n_steps}"
        if command not in TRAINING_COMMANDS:
            raise ConfigError(
                f"{given}: {command} trains nothing, and the GDU check runs while training "
                f"({', '.join(TRAINING_COMMANDS)})"
            )
        for name in ("T", "K"):
            value = getattr(self, name)
            if value is not None and value != hp[name]:
                raise ConfigError(
                    f"gdu.{name}={value} differs from model.{name}={hp[name]}: the GDU check "
                    f"analyses the dynamics that train; leave gdu.{name} unset (null)"
                )
        try:
            check_phases(hp["T"], hp["K"])
        except ConfigError:
            raise ConfigError(
                f"{given}: the GDU check compares the last model.K={hp['K']} steps of "
                f"model.T={hp['T']} (K <= T), and algorithm {hp.get('algorithm')!r} runs K "
                "steps of its own; turn the check off (gdu.every_n_steps 0)"
            ) from None
        if self.beta is None and hp.get("beta") is None:
            raise ConfigError(
                f"gdu.beta=None and model.beta=None (algorithm {hp.get('algorithm')!r}): the "
                "GDU check nudges as EP does; set gdu.beta"
            )
        if trainer.fast_dev_run:
            return
        loggers = trainer.loggers
        if not loggers:
            raise ConfigError(
                f"{given} and trainer.logger=false: the GDU check logs to the logger; keep one"
            )
        if self.figures is True and not any(isinstance(lg, TensorBoardLogger) for lg in loggers):
            names = ", ".join(type(lg).__name__ for lg in loggers)
            raise ConfigError(
                f"gdu.figures=True: only a TensorBoard logger takes figures, and the loggers are "
                f"{names}; set gdu.figures false, or log to TensorBoard"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.every_n_steps and self.batch is None:
            self.batch = tuple(t.detach().clone() for t in batch)
        self._step_before = trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step, n = trainer.global_step, self.every_n_steps  # continual EP: K steps per batch
        if not n or step // n == self._step_before // n:  # no multiple of n passed
            return
        hp = pl_module.hparams
        beta = hp.beta if self.beta is None else self.beta
        x, y = self.batch
        try:
            with torch.enable_grad():
                result, summary = analyse(
                    pl_module.net, x, y, hp.T, hp.K, beta, rule=pl_module.rule
                )
        except DivergenceError as err:  # a diagnostic does not end the run
            rank_zero_warn(f"GDU check at step {step} skipped: {err}")
            return
        metrics = summary_metrics(summary)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if self.figures is not False and isinstance(logger, TensorBoardLogger):
                for name, fig in gdu_figures(result, summary["rmse"]).items():
                    logger.experiment.add_figure(f"gdu/{name}", fig, global_step=step)
