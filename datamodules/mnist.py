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
Files are laid out as torchvision expects,
``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, either gunzipped or as ``.gz``.
Missing gunzipped files are extracted next to the ``.gz`` files, or, when that directory is not
writable, into ``$XDG_CACHE_HOME/eqprop_lightning/<key>/MNIST/raw``
(default ``~/.cache``), where ``<key>`` is derived from the data root's absolute path.

``prepare_data`` (which Lightning calls before it creates the run directory) reads each of the four
files once and checks it: a readable gzip stream (for ``.gz``), the IDX header (magic number 2049
for labels, 2051 for images; 28x28 images), a payload of exactly the header's size, labels in
0..9, equal image and label counts per split and, with ``verify_checksums``, the official MD5s.
Any problem raises ``DataError`` naming the file and what was expected. ``setup`` repeats only
the cheap header and size checks on the gunzipped files it loads (the full ones when
``prepare_data`` has not run in this process, e.g. on the other ranks of a multi-GPU run).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import MNIST

from eqprop_lightning.errors import ConfigError, DataError
from eqprop_lightning.resources import packaged

from .checks import check_nonneg_int, check_positive_int
from .sampling import make_loader

ENV_VAR = "EQPROP_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
SHIPPED = "copy shipped with the package"

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
#: IDX magic numbers: unsigned bytes (0x08) and the number of dimensions in the last byte.
LABELS_MAGIC, IMAGES_MAGIC = 0x0801, 0x0803
#: The files of each split: (images, labels).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CHUNK = 1 << 20


def resolve_data_dir(data_dir: str | None = None) -> tuple[Path, str]:
    """Return the data root and a description of where it came from."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir argument"
    env_value = os.environ.get(ENV_VAR)
    if env_value:
        return Path(env_value).expanduser(), f"{ENV_VAR} environment variable"
    default, shipped = Path(DEFAULT_DATA_DIR), packaged("data")
    if not _has_all_files(default) and _has_all_files(shipped):
        return shipped, SHIPPED
    return default, "default"


def _has_all_files(root: Path) -> bool:
    return all(_source_file(_raw_dir(root), name) for name in MNIST_MD5)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/eqprop_lightning`` (default ``~/.cache/eqprop_lightning``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eqprop_lightning"


def cache_root_for(root: Path) -> Path:
    """Cache directory that receives gunzipped copies when ``root`` is not writable."""
    return user_cache_dir() / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def is_writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (probed, as root ignores permission bits)."""
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
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        Path(tmp_name).unlink(missing_ok=True)
        raise _bad_gzip(src, err) from err
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _bad_gzip(path: Path, err: BaseException) -> DataError:
    return DataError(
        f"{path} is not a readable gzip file ({type(err).__name__}: {err}): it is truncated or "
        f"corrupt; expected a gzip-compressed MNIST IDX file. Replace it, or delete it and let "
        f"--data.download true fetch it again."
    )


@dataclass(frozen=True)
class IdxFile:
    """What the checks learned about one MNIST file."""

    path: Path
    count: int  #: examples, per the header (and the payload's size)
    md5: str | None  #: MD5 of the (decompressed) content, when computed


def _idx_layout(name: str) -> tuple[str, int, int]:
    """``(kind, magic, header length)`` of an MNIST file name."""
    if "images" in name:
        return "images", IMAGES_MAGIC, 16
    return "labels", LABELS_MAGIC, 8


def check_idx_file(path: Path, name: str, full: bool = True, md5: bool = False) -> IdxFile:
    """Check one MNIST IDX file (gzipped if its name ends in ``.gz``); raise ``DataError``.

    ``full`` reads the whole file once (required for ``.gz``): the gzip stream, the payload's size,
    the label values and, with ``md5``, the checksum of the decompressed content. Otherwise only
    the header is read and the payload's size is taken from the file's size.
    """
    kind, magic_expected, header_len = _idx_layout(name)
    gz = path.suffix == ".gz"
    full = full or gz or md5
    digest = hashlib.md5(usedforsecurity=False) if md5 else None
    head = bytearray()
    labels = bytearray()  # the whole labels file (60 kB), to check the label values
    size = 0
    try:
        if not full:
            with open(path, "rb") as fh:
                head += fh.read(header_len)
            size = path.stat().st_size
        else:
            with (gzip.open if gz else open)(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    if len(head) < header_len:
                        head += chunk[: header_len - len(head)]
                    if kind == "labels":
                        labels += chunk
                    if digest is not None:
                        digest.update(chunk)
                    size += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise _bad_gzip(path, err) from err
    except OSError as err:
        raise DataError(f"Cannot read the MNIST file {path}: {err}") from err
    content = "decompressed content" if gz else "file"
    what = f"an MNIST {kind} file (IDX, unsigned bytes, {1 if kind == 'labels' else 3}-D)"
    if len(head) < header_len:
        raise DataError(
            f"{path}: the {content} is {size} bytes long, too short for the {header_len}-byte "
            f"header of {what}: expected at least {header_len} bytes"
        )
    magic = int.from_bytes(head[:4], "big")
    if magic != magic_expected:
        raise DataError(
            f"{path}: IDX magic number {magic} (0x{magic:08x}), expected {magic_expected} "
            f"(0x{magic_expected:08x}) for {what}; is it the right file?"
        )
    dims = struct.unpack(f">{(header_len - 4) // 4}I", head[4:header_len])
    if kind == "images" and dims[1:] != (28, 28):
        raise DataError(f"{path}: images of {dims[1]}x{dims[2]} pixels, expected 28x28")
    expected_bytes = math.prod(dims)
    found_bytes = size - header_len
    if found_bytes != expected_bytes:
        unit = "28x28 images" if kind == "images" else "labels"
        raise DataError(
            f"{path}: the header announces {dims[0]} {unit}, so {expected_bytes} bytes of data "
            f"are expected after it, but the {content} holds {found_bytes} bytes "
            f"({'truncated' if found_bytes < expected_bytes else 'trailing data'})"
        )
    if labels:
        top = max(labels[header_len:], default=0)
        if top >= NUM_CLASSES:
            index = labels.index(top, header_len) - header_len
            raise DataError(
                f"{path}: label {top} at index {index}, expected labels 0..{NUM_CLASSES - 1}"
            )
    return IdxFile(path, dims[0], digest.hexdigest() if digest is not None else None)


def check_mnist_files(
    files: dict[str, Path], full: bool = True, md5: bool = False
) -> dict[str, IdxFile]:
    """Check the four files (``files[name]``: gunzipped or ``.gz`` path) and their agreement."""
    infos = {name: check_idx_file(path, name, full=full, md5=md5) for name, path in files.items()}
    for images_name, labels_name in SPLIT_FILES.values():
        images, labels = infos[images_name], infos[labels_name]
        if images.count != labels.count:
            raise DataError(
                f"{images.path} holds {images.count} images but {labels.path} holds "
                f"{labels.count} labels: expected the same count in the images and labels files "
                f"of a split"
            )
    if not md5:
        return infos
    for name, expected in MNIST_MD5.items():
        info = infos[name]
        if info.md5 != expected:
            of = " (of its decompressed content)" if info.path.suffix == ".gz" else ""
            raise DataError(
                f"MD5 mismatch for {info.path}{of}: expected {expected}, got {info.md5}. The "
                f"file is corrupt or not the official MNIST; replace it or pass "
                f"--data.verify_checksums false."
            )
    return infos


def _onehot_tensor_dataset(mnist: MNIST, flatten: bool) -> TensorDataset:
    """Whole split as float32 ``x`` (``ToTensor`` semantics: uint8 / 255) and one-hot ``y``."""
    x = mnist.data.to(torch.float32).div(255)
    x = x.reshape(len(x), -1) if flatten else x.unsqueeze(1)
    targets = mnist.targets.long()
    if len(targets) and int(targets.max()) >= NUM_CLASSES:
        path = Path(mnist.raw_folder) / SPLIT_FILES["train" if mnist.train else "test"][1]
        raise DataError(f"{path}: label {int(targets.max())}, expected labels 0..{NUM_CLASSES - 1}")
    y = F.one_hot(targets, NUM_CLASSES).to(torch.float32)
    return TensorDataset(x, y)


def split_indices(n: int, n_val: int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted ``(train, val)`` indices of ``range(n)``: ``n_val`` drawn by ``randperm`` seeded
    with ``seed`` for validation, the rest for training."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class MNISTDataModule(L.LightningDataModule):
    """MNIST with ``ToTensor`` scaling and one-hot float targets.

    The evaluation loaders (``val_dataloader``) serve the sets of :attr:`evaluation_sets`: the
    held-out validation images then the test set with ``val_split``, else the test set.

    Args:
        data_dir: Root holding ``MNIST/raw``; defaults to ``$EQPROP_DATA_DIR`` or ``./data``.
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
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("test_batch_size", test_batch_size)
        check_nonneg_int("num_workers", num_workers)
        check_nonneg_int("val_split", val_split)
        if split_seed is not None:
            check_nonneg_int("split_seed", split_seed)
        self.save_hyperparameters()
        self.data_root, self._root_origin = resolve_data_dir(data_dir)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
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
        return int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed

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
        """Download missing files (if ``download``), then check all four files' contents.

        Raises ``FileNotFoundError`` when files are missing and cannot be downloaded, and
        ``DataError`` (naming the file and what was expected) when a file is unreadable,
        truncated, malformed, inconsistent with its partner or, with ``verify_checksums``, not
        the official MNIST.
        """
        missing = self._missing_files()
        if missing:
            if not self.hparams.download:
                raise self._not_found_error(missing, "download=False")
            try:
                MNIST(str(self.data_root), train=True, download=True)
            except Exception as err:  # any download failure (no network, read-only root, ...)
                raise self._not_found_error(missing, f"download failed: {err}") from err
            missing = self._missing_files()
            if missing:
                raise self._not_found_error(missing, "files still missing after the download")
        raw_dir = _raw_dir(self.data_root)
        files = {name: _source_file(raw_dir, name) for name in MNIST_MD5}
        infos = check_mnist_files(files, full=True, md5=self.hparams.verify_checksums)
        self._check_val_split(infos[SPLIT_FILES["train"][1]].count)
        self._checked = True

    def _readable_root(self) -> Path:
        """Root whose ``MNIST/raw`` holds all four gunzipped files, extracting them if needed."""
        raw_dir = _raw_dir(self.data_root)
        sources = {name: _source_file(raw_dir, name) for name in MNIST_MD5}
        missing = [name for name, src in sources.items() if src is None]
        if missing:
            raise self._not_found_error(missing, "files missing")
        if all(src == raw_dir / name for name, src in sources.items()):
            return self.data_root
        # the shipped copy is never written to (it may be inside site-packages)
        writable = is_writable(raw_dir) and self._root_origin != SHIPPED
        target_root = self.data_root if writable else cache_root_for(self.data_root)
        target_dir = _raw_dir(target_root)
        for name, src in sources.items():
            dst = target_dir / name
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                _extract(src, dst)
        return target_root

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
        root = self._readable_root()
        raw_dir = _raw_dir(root)
        files = {name: raw_dir / name for name in MNIST_MD5}
        thorough = not self._checked
        check_mnist_files(files, full=thorough, md5=thorough and self.hparams.verify_checksums)
        flatten = self.hparams.flatten
        if need_train:
            train = _onehot_tensor_dataset(MNIST(str(root), train=True), flatten)
            self.train_set = train
            if self.hparams.val_split:
                self._check_val_split(len(train))
                keep, held_out = split_indices(len(train), self.hparams.val_split, self.split_seed)
                self.train_set = TensorDataset(*train[keep])
                self.val_set = TensorDataset(*train[held_out])
        if self.test_set is None:
            self.test_set = _onehot_tensor_dataset(MNIST(str(root), train=False), flatten)

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset, batch_size, shuffle, self.hparams.num_workers, type(self).__name__
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x, y_onehot)``."""
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The evaluation of every epoch, in order: the validation set and the test set with
        ``val_split``, else the test set (as the original, which has no validation split)."""
        sets = {"val": self.val_set, "test": self.test_set}
        loaders = [
            self._loader(sets[name], self.hparams.test_batch_size, shuffle=False)
            for name in self.evaluation_sets
        ]
        return loaders if len(loaders) > 1 else loaders[0]

    def test_dataloader(self) -> DataLoader:
        """The official test set, in order."""
        return self._loader(self.test_set, self.hparams.test_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The official test set, in order (``eqprop predict``)."""
        return self.test_dataloader()
