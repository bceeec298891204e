"""The MNIST files, without Lightning or torchvision: where they are (data root, shipped copy,
cache), their checks, and the splits as tensors. :class:`MNISTFiles` is what
:class:`~eqprop_lightning.datamodules.MNISTDataModule` (which adds torchvision's download) and the
Lightning-free analyses read MNIST with.

Files are laid out as torchvision expects,
``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, either gunzipped or as ``.gz``.
Missing gunzipped files are extracted next to the ``.gz`` files, or, when that directory is not
writable, into ``$XDG_CACHE_HOME/eqprop_lightning/<key>/MNIST/raw`` (default ``~/.cache``), where
``<key>`` is derived from the data root's absolute path.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from eqprop_lightning.errors import DataError
from eqprop_lightning.io import write_atomic
from eqprop_lightning.resources import packaged

from .data_root import (
    data_not_found,
    is_writable,
    resolve_data_dir,
    user_cache_dir,
)

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


def resolve_mnist_root(data_dir: str | None = None) -> tuple[Path, str]:
    """The data root of :func:`~.data_root.resolve_data_dir`, or the copy shipped with the
    package where the default ``./data`` lacks a file and no root was given."""
    root, origin = resolve_data_dir(data_dir)
    shipped = packaged("data")
    if origin == "default" and not _has_all_files(root) and _has_all_files(shipped):
        return shipped, SHIPPED
    return root, origin


def _has_all_files(root: Path) -> bool:
    return all(_source_file(_raw_dir(root), name) for name in MNIST_MD5)


def cache_root_for(root: Path) -> Path:
    """Cache directory that receives gunzipped copies when ``root`` is not writable."""
    return user_cache_dir() / hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


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

    def copy(name: str) -> None:
        with opener(src, "rb") as fin, open(name, "wb") as fout:
            shutil.copyfileobj(fin, fout)

    try:
        write_atomic(dst, copy)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise _bad_gzip(src, err) from err


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


def _payload(path: Path, header: int) -> Tensor:
    """The bytes of an IDX file after its header, as uint8."""
    return torch.frombuffer(bytearray(path.read_bytes()[header:]), dtype=torch.uint8)


def read_split(raw_dir: Path, split: str, flatten: bool) -> TensorDataset:
    """A whole split from its gunzipped IDX files: float32 ``x`` (``ToTensor`` semantics:
    uint8 / 255; ``(N, 784)`` if ``flatten``, else ``(N, 1, 28, 28)``) and one-hot ``y``."""
    images_name, labels_name = SPLIT_FILES[split]
    images = _payload(raw_dir / images_name, header=16)
    labels = _payload(raw_dir / labels_name, header=8)
    x = images.to(torch.float32).div(255).view(len(labels), *IMAGE_SHAPE)
    x = x.reshape(len(x), -1) if flatten else x
    y = F.one_hot(labels.long(), NUM_CLASSES).to(torch.float32)
    return TensorDataset(x, y)


def split_indices(n: int, n_val: int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted ``(train, val)`` indices of ``range(n)``: ``n_val`` drawn by ``randperm`` seeded
    with ``seed`` for validation, the rest for training."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def hold_out(train: TensorDataset, n_val: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """The training set without ``n_val`` images held out by :func:`split_indices`, and them."""
    keep, held_out = split_indices(len(train), n_val, seed)
    return TensorDataset(*train[keep]), TensorDataset(*train[held_out])


class MNISTFiles:
    """The four MNIST files under a data root (``data_dir``, else ``$EQPROP_DATA_DIR``, ``./data``,
    then the shipped copy): what is missing, their checks, and the splits as tensors."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_root, self.root_origin = resolve_mnist_root(data_dir)

    def missing(self) -> list[str]:
        """The files found neither gunzipped nor as ``.gz``."""
        raw_dir = _raw_dir(self.data_root)
        return [name for name in MNIST_MD5 if _source_file(raw_dir, name) is None]

    def not_found_error(self, missing: list[str], reason: str) -> FileNotFoundError:
        raw_dir = _raw_dir(self.data_root)
        looked = "\n".join(f"  {raw_dir / n}\n  {raw_dir / n}.gz" for n in missing)
        return data_not_found(
            f"MNIST data not found ({reason})",
            self.data_root,
            self.root_origin,
            f"looked for (either form of each file):\n{looked}",
            "MNIST/raw/",
        )

    def check(self, verify_checksums: bool) -> dict[str, IdxFile]:
        """Read each file once and check it (see :func:`check_mnist_files`)."""
        raw_dir = _raw_dir(self.data_root)
        files = {name: _source_file(raw_dir, name) for name in MNIST_MD5}
        return check_mnist_files(files, full=True, md5=verify_checksums)

    def readable_root(self) -> Path:
        """Root whose ``MNIST/raw`` holds all four gunzipped files, extracting them if needed."""
        raw_dir = _raw_dir(self.data_root)
        sources = {name: _source_file(raw_dir, name) for name in MNIST_MD5}
        missing = [name for name, src in sources.items() if src is None]
        if missing:
            raise self.not_found_error(missing, "files missing")
        if all(src == raw_dir / name for name, src in sources.items()):
            return self.data_root
        # the shipped copy is never written to (it may be inside site-packages)
        writable = is_writable(raw_dir) and self.root_origin != SHIPPED
        target_root = self.data_root if writable else cache_root_for(self.data_root)
        target_dir = _raw_dir(target_root)
        for name, src in sources.items():
            dst = target_dir / name
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                _extract(src, dst)
        return target_root

    def load(
        self, splits: tuple[str, ...], flatten: bool, thorough: bool, verify_checksums: bool
    ) -> dict[str, TensorDataset]:
        """The ``splits`` (``train``, ``test``) as tensors, after the cheap header and size checks
        of the gunzipped files (all of :meth:`check`'s with ``thorough``)."""
        raw_dir = _raw_dir(self.readable_root())
        files = {name: raw_dir / name for name in MNIST_MD5}
        check_mnist_files(files, full=thorough, md5=thorough and verify_checksums)
        return {split: read_split(raw_dir, split, flatten) for split in splits}
