"""MNIST as a LightningDataModule, matching the original Equilibrium Propagation setup.

Images are scaled to ``[0, 1]`` exactly as ``torchvision.transforms.ToTensor`` does (no
normalisation), optionally flattened to 784 features, and targets are one-hot float vectors.
The official test set doubles as the validation set: the original code evaluates it every epoch.

Data location, in order of precedence: the ``data_dir`` argument (``--data.data_dir`` on the
CLI), the ``EQPROP_DATA_DIR`` environment variable, then ``./data``. Files are laid out as
torchvision expects, ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, either
gunzipped or as ``.gz``. Missing gunzipped files are extracted next to the ``.gz`` files, or, when
that directory is not writable, into ``$XDG_CACHE_HOME/eqprop_lightning/<key>/MNIST/raw``
(default ``~/.cache``), where ``<key>`` is derived from the data root's absolute path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.utils import calculate_md5

from datamodules.checks import check_nonneg_int, check_positive_int
from datamodules.sampling import make_loader

ENV_VAR = "EQPROP_DATA_DIR"
DEFAULT_DATA_DIR = "./data"

#: MD5 of the gunzipped files (the ``.gz`` checksums in torchvision depend on the compressor).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
FLAT_DIM = 28 * 28


def resolve_data_dir(data_dir: str | None = None) -> tuple[Path, str]:
    """Return the data root and a description of where it came from."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir argument"
    env_value = os.environ.get(ENV_VAR)
    if env_value:
        return Path(env_value).expanduser(), f"{ENV_VAR} environment variable"
    return Path(DEFAULT_DATA_DIR), "default"


def cache_root_for(root: Path) -> Path:
    """Cache directory that receives gunzipped copies when ``root`` is not writable."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return cache_home / "eqprop_lightning" / key


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _is_writable(directory: Path) -> bool:
    """Probe by creating a file: ``os.access`` ignores permission bits when running as root."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _source_file(raw_dir: Path, name: str) -> Path | None:
    """The gunzipped file if present, else its ``.gz``, else ``None``."""
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _extract(src: Path, dst: Path) -> None:
    """Write ``src`` (gunzipping a ``.gz``) to ``dst`` atomically, so concurrent ranks are safe."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if src.suffix == ".gz" else open
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with opener(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp_name, dst)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _onehot_tensor_dataset(mnist: MNIST, flatten: bool) -> TensorDataset:
    """Whole split as float32 ``x`` (``ToTensor`` semantics: uint8 / 255) and one-hot ``y``."""
    x = mnist.data.to(torch.float32).div(255)
    x = x.reshape(len(x), -1) if flatten else x.unsqueeze(1)
    y = F.one_hot(mnist.targets.long(), NUM_CLASSES).to(torch.float32)
    return TensorDataset(x, y)


class MNISTDataModule(L.LightningDataModule):
    """MNIST with ``ToTensor`` scaling and one-hot float targets; test set used for validation.

    Args:
        data_dir: Root holding ``MNIST/raw``; defaults to ``$EQPROP_DATA_DIR`` or ``./data``.
        batch_size: Training batch size.
        test_batch_size: Batch size of the validation/test loaders (both serve the test set).
        flatten: Serve images as 784-vectors (fully connected nets) instead of ``(1, 28, 28)``.
        num_workers: DataLoader worker processes.
        download: Download missing files with torchvision in ``prepare_data``.
        verify_checksums: Check the gunzipped files against the official MD5s in ``setup``.
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
    ) -> None:
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("test_batch_size", test_batch_size)
        check_nonneg_int("num_workers", num_workers)
        self.save_hyperparameters()
        self.data_root, self._root_origin = resolve_data_dir(data_dir)
        self.train_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return NUM_CLASSES

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample: ``(784,)`` if flattened, else ``(1, 28, 28)``."""
        return (FLAT_DIM,) if self.hparams.flatten else IMAGE_SHAPE

    def _missing_files(self) -> list[str]:
        raw_dir = _raw_dir(self.data_root)
        return [name for name in MNIST_MD5 if _source_file(raw_dir, name) is None]

    def _not_found_error(self, missing: list[str], reason: str) -> FileNotFoundError:
        raw_dir = _raw_dir(self.data_root)
        looked = "\n".join(f"  {raw_dir / n}\n  {raw_dir / n}.gz" for n in missing)
        return FileNotFoundError(
            f"MNIST data not found ({reason}). Data root {str(self.data_root)!r} "
            f"(from the {self._root_origin}, resolved to {self.data_root.resolve()}); "
            f"looked for (either form of each file):\n{looked}\n"
            f"Point at a directory containing MNIST/raw/ with --data.data_dir /path/to/root "
            f"or the {ENV_VAR} environment variable."
        )

    def prepare_data(self) -> None:
        """Download missing files (if ``download``); raise a clear error if that is impossible."""
        missing = self._missing_files()
        if not missing:
            return
        if not self.hparams.download:
            raise self._not_found_error(missing, "download=False")
        try:
            MNIST(str(self.data_root), train=True, download=True)
        except Exception as err:  # any download failure (no network, read-only root, ...)
            raise self._not_found_error(missing, f"download failed: {err}") from err

    def _readable_root(self) -> Path:
        """Root whose ``MNIST/raw`` holds all four gunzipped files, extracting them if needed."""
        raw_dir = _raw_dir(self.data_root)
        sources = {name: _source_file(raw_dir, name) for name in MNIST_MD5}
        missing = [name for name, src in sources.items() if src is None]
        if missing:
            raise self._not_found_error(missing, "files missing")
        if all(src == raw_dir / name for name, src in sources.items()):
            return self.data_root
        target_root = self.data_root if _is_writable(raw_dir) else cache_root_for(self.data_root)
        target_dir = _raw_dir(target_root)
        for name, src in sources.items():
            dst = target_dir / name
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                _extract(src, dst)
        return target_root

    def _verify_checksums(self, raw_dir: Path) -> None:
        for name, expected in MNIST_MD5.items():
            path = raw_dir / name
            actual = calculate_md5(str(path))
            if actual != expected:
                raise RuntimeError(
                    f"MD5 mismatch for {path}: expected {expected}, got {actual}. The file is "
                    f"corrupt or not the official MNIST; replace it or pass "
                    f"--data.verify_checksums false."
                )

    def setup(self, stage: str | None = None) -> None:
        """Load the splits as in-memory tensors (train only when fitting)."""
        need_train = stage in (None, "fit") and self.train_set is None
        if self.test_set is not None and not need_train:
            return
        root = self._readable_root()
        if self.hparams.verify_checksums:
            self._verify_checksums(_raw_dir(root))
        flatten = self.hparams.flatten
        if need_train:
            self.train_set = _onehot_tensor_dataset(MNIST(str(root), train=True), flatten)
        if self.test_set is None:
            self.test_set = _onehot_tensor_dataset(MNIST(str(root), train=False), flatten)

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset, batch_size, shuffle, self.hparams.num_workers, type(self).__name__
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x, y_onehot)``."""
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The official test set (the original code has no separate validation split)."""
        return self._loader(self.test_set, self.hparams.test_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The official test set, in order."""
        return self._loader(self.test_set, self.hparams.test_batch_size, shuffle=False)
