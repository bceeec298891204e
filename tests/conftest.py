"""Shared fixtures: a tiny, learnable MNIST in the real (gzipped IDX) format."""

from __future__ import annotations

import gzip
import os
import signal
import struct
from pathlib import Path

import pytest
import torch

FAKE_TRAIN_SIZE = 200
FAKE_TEST_SIZE = 100


def _idx_bytes(data: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file (magic 0x08 = unsigned byte, big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, data.dim())
    header += struct.pack(f">{data.dim()}I", *data.shape)
    return header + data.contiguous().numpy().tobytes()


def _fake_split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images plus a bright 5x5 patch whose position (2 rows x 5 cols) encodes the label."""
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=generator)].to(torch.uint8)
    images = torch.randint(0, 80, (n, 28, 28), generator=generator, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        top, left = 4 + 12 * (label // 5), 2 + 5 * (label % 5)
        patch = torch.randint(200, 256, (5, 5), generator=generator, dtype=torch.uint8)
        images[i, top : top + 5, left : left + 5] = patch
    return images, labels


def write_fake_mnist(
    root: Path, n_train: int = FAKE_TRAIN_SIZE, n_test: int = FAKE_TEST_SIZE, seed: int = 0
) -> Path:
    """Write ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; return root."""
    raw_dir = root / "MNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = _fake_split(n, generator)
        (raw_dir / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (raw_dir / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return root


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root dir of a tiny fake MNIST (200 train / 100 test); use ``verify_checksums=False``.

    The directory is shared by the whole session and the data module may gunzip files into it;
    copy it first if a test needs a pristine ``.gz``-only tree.
    """
    return write_fake_mnist(tmp_path_factory.mktemp("fake_mnist"))


@pytest.fixture(autouse=True)
def _restore_deterministic_mode():
    """``--trainer.deterministic true`` switches torch's global deterministic mode on for the rest
    of the process; put it back after each test so that no test depends on the order."""
    mode, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """Ctrl-C raises KeyboardInterrupt in every test, however pytest was started (a shell
    starts a background job with SIGINT ignored, which a run keeps: the stop tests would not
    stop)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """The data modules' cache (MNIST copies, tokenised IMDB/SNLI) goes to the session's tmp
    dir, not ``~/.cache``: no test reads what an earlier session or older code left there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _forget_the_global_seed():
    """``seed_everything`` (every ``eqprop`` command) exports ``PL_GLOBAL_SEED`` and
    ``PL_SEED_WORKERS`` for the rest of the process; drop them after each test."""
    yield
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        os.environ.pop(name, None)
