"""What an exact resume needs beyond Lightning's checkpoint (the random states are the module's,
see :mod:`eqprop_lightning.rng`): a ``last.ckpt`` written only in states that resume exactly, and
checkpoint files written atomically."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from eqprop_lightning.errors import NO_CHECKPOINT_NOTE
from eqprop_lightning.io import write_atomic


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch, and when training stops gracefully in the middle of one.

    The first Ctrl-C is handled as SIGTERM (in a single process): Lightning finishes the batch in
    progress and stops, and the checkpoint written then resumes exactly (the training loader
    skips the batches done). A first stop during an evaluation of ``fit`` (or during the last
    batch before one) waits for the evaluation to end and its checkpoint to be written: stopping
    inside it would lose the epoch's training, as Lightning cannot resume from there.
    A second Ctrl-C or SIGTERM stops at once. That, an error or a divergence keep the last good
    ``last.ckpt`` (the previous epoch end, or an earlier graceful stop). A Ctrl-C ignored when
    the run started (``nohup``, a shell's background job) stays ignored.
    """

    def __init__(
        self,
        filename: str = "last",
        enable_version_counter: bool = False,
        save_on_exception: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            filename=filename,
            enable_version_counter=enable_version_counter,
            save_on_exception=save_on_exception,
            **kwargs,
        )
        self._default_sigint: Any = None
        self._handles_signals = False
        self._lightning_sigterm: Any = None  # Lightning's SIGTERM handler while ours defers it
        self._deferred = False  # a stop waits for the evaluation in progress to end
        self._cut_short = False  # the last batch ended the run inside its epoch

    @property
    def last_path(self) -> Path | None:
        """This run's ``last.ckpt``, if there is one (``best_model_path`` is not it: the saves
        inside an epoch do not set it, and a resumed callback restores the path of the run its
        checkpoint came from)."""
        if self.dirpath is None:
            return None
        path = Path(self.format_checkpoint_name({}))
        return path if path.is_file() else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # one process only: under DDP, Lightning's SIGTERM handler broadcasts from inside the
        # handler, so Ctrl-C keeps Lightning's behaviour there (and the last epoch's checkpoint)
        self._handles_signals = (
            trainer.world_size == 1
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        )  # Lightning's SIGTERM handler is in place
        # an ignored Ctrl-C (nohup, a shell's background job) stays ignored, as Python leaves it
        if self._handles_signals and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._default_sigint = signal.signal(signal.SIGINT, self._first_ctrl_c)

    def _first_ctrl_c(self, signum: int, frame: Any) -> None:
        if self._lightning_sigterm is None:  # else the evaluation's deferral says what happens
            rank_zero_info("\nCtrl-C: stopping after this batch (press Ctrl-C again to stop now)")
        self._restore_sigint()
        signal.raise_signal(signal.SIGTERM)

    def _restore_sigint(self) -> None:
        if self._default_sigint is not None:
            signal.signal(signal.SIGINT, self._default_sigint)
            self._default_sigint = None

    def _defer_stop(self, signum: int, frame: Any) -> None:
        rank_zero_info(
            "\nstopping after this evaluation, to save the epoch it ends"
            " (Ctrl-C or SIGTERM again stops now and keeps the last checkpoint)"
        )
        self._deferred = True
        self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if self._lightning_sigterm is not None:
            signal.signal(signal.SIGTERM, self._lightning_sigterm)
            self._lightning_sigterm = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Inside ``fit``, a first stop waits for the evaluation's end (Lightning would raise it
        after the batch in progress): a stop already received in the last training batch, or one
        that comes during the evaluation. (The sanity check runs before ``on_train_start``, so
        a stop there is Lightning's: nothing could be saved yet.)"""
        if not self._handles_signals or trainer.state.fn != TrainerFn.FITTING:
            return
        connector = trainer._signal_connector  # Lightning's flag for a SIGTERM received
        if connector.received_sigterm:
            connector.received_sigterm = False
            self._defer_stop(signal.SIGTERM, None)
        else:
            self._lightning_sigterm = signal.signal(signal.SIGTERM, self._defer_stop)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """A batch after which ``max_steps`` or ``max_time`` (Lightning's ``Timer`` sets
        ``should_stop`` before checkpoint callbacks run) stops the run inside an epoch: save
        here, a state Lightning resumes inside the epoch; the cut-short epoch's end saves none
        (Lightning would mark the epoch done, and the resumed run skip its last batches)."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stops = trainer.should_stop or 0 <= trainer.max_steps <= trainer.global_step
        self._cut_short = stops and batch_idx + 1 < trainer.num_training_batches
        if self._cut_short and not self._should_skip_saving_checkpoint(trainer):
            self._save_checkpoint(trainer, self.format_checkpoint_name({}))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Every epoch's end is saved: Lightning leaves an epoch end without an evaluation
        (``check_val_every_n_epoch > 1``, evaluations inside the epoch only) in no checkpoint;
        this saves it (an end already saved at this step is skipped)."""
        if self._cut_short:
            return
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # no save at this step yet
            self._save_checkpoint(trainer, self.format_checkpoint_name({}))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigterm()
        if not self._cut_short:
            super().on_validation_end(trainer, pl_module)
        if self._deferred:  # Lightning stops now: inside the epoch, or at its end
            self._deferred = False
            signal.raise_signal(signal.SIGTERM)

    def _release_signals(self) -> None:
        """Give Ctrl-C and SIGTERM back to whoever handled them before ``fit``."""
        self._handles_signals = False
        self._restore_sigint()
        self._restore_sigterm()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release_signals()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._release_signals()
        if trainer.state.fn != TrainerFn.FITTING:  # test, validate, predict write no checkpoint
            return
        self._report_stop(trainer, pl_module, exception)
        if self.last_path is None:
            exception.add_note(NO_CHECKPOINT_NOTE)

    def _report_stop(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Save a graceful stop inside an epoch; else say which checkpoint is kept, if any."""
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        mid_epoch = 0 < done < trainer.num_training_batches and not trainer.validating
        stopped = isinstance(exception, SIGTERMException)
        if stopped and mid_epoch:
            super().on_exception(trainer, pl_module, exception)
        elif self.dirpath is None:  # stopped before setup (bad data): the error says it all
            return
        elif (last := self.last_path) is not None:
            at_epoch_end = done == trainer.num_training_batches and not trainer.validating
            if stopped and at_epoch_end:
                rank_zero_info(f"stopped after epoch {trainer.current_epoch}, saved in {last}")
            else:
                rank_zero_info(f"kept the last good checkpoint {last}")
        else:
            rank_zero_info(f"{NO_CHECKPOINT_NOTE} (none in {self.dirpath})")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a local checkpoint with :func:`~eqprop_lightning.io.write_atomic`, so that an
    interruption never leaves a truncated checkpoint (remote paths as Lightning)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        save = super().save_checkpoint
        if "://" in str(path):
            return save(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda name: save(checkpoint, name, storage_options))
