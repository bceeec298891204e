"""MNIST as a LightningDataModule, matching the original Equilibrium Propagation setup.

Images are scaled to ``[0, 1]`` exactly as ``torchvision.transforms.ToTensor`` does (no
normalisation), optionally flattened to 784 features, and targets are one-hot float vectors.
The test set is evaluated every epoch, as the original code does. With ``val_split N`` a seeded
validation set of ``N`` training images is held out (not trained on) and evaluated every epoch
too, before the test set; without one (the default, the original's setup) there is no
validation set, and nothing can be chosen on it.

Data location, in order of precedence: the ``data_dir`` argument (``--data.data_dir`` on the
CLI), the ``EQPROP_DATA_DIR`` environment variable, ``./data``, then the copy shipped with the
package (``eqprop_lightning/data`` when installed, the checkout's ``data/``) when ``./data`` lacks
a file; the shipped copy is gunzipped into the cache directory below, never next to itself.
The files, their layout, checks and reading are in :mod:`.mnist_files` (no Lightning); this
module adds torchvision's download and Lightning's hooks.

``prepare_data`` (which Lightning calls before it creates the run directory) reads each of the four
files once and checks it: a readable gzip stream (for ``.gz``), the IDX header (magic number 2049
for labels, 2051 for images; 28x28 images), a payload of exactly the header's size, labels in
0..9, equal image and label counts per split and, with ``verify_checksums``, the official MD5s.
Any problem raises ``DataError`` naming the file and what was expected. ``setup`` repeats only
the cheap header and size checks on the gunzipped files it loads (the full ones when
``prepare_data`` has not run in this process, e.g. on the other ranks of a multi-GPU run).
"""

from __future__ import annotations

import contextlib

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.rng import run_seed

from .checks import check_nonneg_int
from .mnist_files import (
    FLAT_DIM,
    IMAGE_SHAPE,
    NUM_CLASSES,
    SPLIT_FILES,
    MNISTFiles,
    hold_out,
)
from .splits import SplitsDataModule

__all__ = ["MNISTDataModule"]


class MNISTDataModule(SplitsDataModule):
    """MNIST with ``ToTensor`` scaling and one-hot float targets.

    The evaluation loaders (``val_dataloader``) serve the sets of :attr:`evaluation_sets`: the
    held-out validation images then the test set with ``val_split``, else the test set.

    Args:
        data_dir: Root holding ``MNIST/raw``; defaults to ``$EQPROP_DATA_DIR``, else
            ``./data``, else the copy shipped with the package.
        batch_size: Training batch size.
        test_batch_size: Batch size of the validation and test loaders.
        flatten: Serve images as 784-vectors (fully connected nets) instead of ``(1, 28, 28)``.
        num_workers: DataLoader worker processes.
        download: Download missing files with torchvision in ``prepare_data``.
        verify_checksums: Check the (decompressed) files against the official MD5s in
            ``prepare_data``.
        val_split: Training images held out for validation (0: none, train on all 60,000).
        split_seed: Seed of the split; default the run's seed (``seed_everything``, else 0).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 20,
        test_batch_size: int = 1000,
        flatten: bool = True,
        num_workers: int = 0,
        download: bool = True,
        verify_checksums: bool = True,
        val_split: int = 0,
        split_seed: int | None = None,
    ) -> None:
        super().__init__(batch_size, test_batch_size, num_workers)
        check_nonneg_int("val_split", val_split)
        if split_seed is not None:
            check_nonneg_int("split_seed", split_seed)
            if not val_split:
                raise ConfigError(
                    f"split_seed={split_seed!r} seeds the validation split, and val_split=0 "
                    "holds none out: set val_split N or drop split_seed"
                )
        self.save_hyperparameters()
        self.files = MNISTFiles(data_dir)
        self.data_root = self.files.data_root
        self._checked = False  # prepare_data checked the files in this process

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return NUM_CLASSES

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example: ``(784,)`` if flattened, else ``(1, 28, 28)``."""
        return (FLAT_DIM,) if self.hparams.flatten else IMAGE_SHAPE

    @property
    def split_seed(self) -> int:
        """Seed of the validation split: ``split_seed``, else the run's (``PL_GLOBAL_SEED``)."""
        seed = self.hparams.split_seed
        return (run_seed() or 0) if seed is None else seed

    @property
    def evaluation_sets(self) -> dict[str, str]:
        """``{"val"|"test": what the set is}``, in the order of ``val_dataloader``'s loaders."""
        test = "the MNIST test set (t10k files)"
        if not self.hparams.val_split:
            return {"test": test}
        val = (
            f"{self.hparams.val_split} images held out of the MNIST training set "
            f"(split_seed {self.split_seed}), not trained on"
        )
        return {"val": val, "test": test}

    def _check_val_split(self, n_train: int) -> None:
        if self.hparams.val_split >= n_train:
            raise ConfigError(
                f"val_split={self.hparams.val_split} must be smaller than the {n_train} "
                "training images"
            )

    def prepare_data(self) -> None:
        """Download missing files (if ``download``), then check all four files' contents.

        Raises ``FileNotFoundError`` when files are missing and cannot be downloaded, and
        ``DataError`` (naming the file and what was expected) when a file is unreadable,
        truncated, malformed, inconsistent with its partner or, with ``verify_checksums``, not
        the official MNIST.
        """
        missing = self.files.missing()
        if missing:
            if not self.hparams.download:
                raise self.files.not_found_error(missing, "download=False")
            from torchvision.datasets import MNIST

            # the folders torchvision makes before it downloads (<root>/MNIST/raw)
            folders = (self.data_root, self.data_root / "MNIST", self.data_root / "MNIST" / "raw")
            made = [d for d in folders if not d.exists()]
            try:
                MNIST(str(self.data_root), train=True, download=True)
            except Exception as err:  # any download failure (no network, read-only root, ...)
                for folder in reversed(made):  # leave no empty folder behind
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                raise self.files.not_found_error(missing, f"download failed: {err}") from err
            missing = self.files.missing()
            if missing:
                raise self.files.not_found_error(missing, "files still missing after the download")
        infos = self.files.check(self.hparams.verify_checksums)
        self._check_val_split(infos[SPLIT_FILES["train"][1]].count)
        self._checked = True

    def setup(self, stage: str | None = None) -> None:
        """Load the splits as in-memory tensors (train and validation only when fitting).

        Checks the gunzipped files' headers and sizes (``DataError``); all of ``prepare_data``'s
        checks, MD5 included, when ``prepare_data`` has not run in this process.
        """
        # the validation images come from the training files
        train_stages = (None, "fit", "validate") if self.hparams.val_split else (None, "fit")
        need_train = stage in train_stages and self.train_set is None
        if self.test_set is not None and not need_train:
            return
        splits = ("train",) * need_train + ("test",) * (self.test_set is None)
        thorough = not self._checked
        verify = self.hparams.verify_checksums
        loaded = self.files.load(splits, self.hparams.flatten, thorough, verify)
        if need_train:
            train = self.train_set = loaded["train"]
            if self.hparams.val_split:
                self._check_val_split(len(train))
                self.train_set, self.val_set = hold_out(
                    train, self.hparams.val_split, self.split_seed
                )
        if self.test_set is None:
            self.test_set = loaded["test"]
