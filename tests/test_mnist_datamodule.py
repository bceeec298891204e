"""Tests of MNISTDataModule on the tiny fake MNIST (plus one check of the real files if present),
and of the synthetic ToyDataModule's shapes."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import SequentialSampler
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from eqprop_lightning.datamodules import MNISTDataModule, ToyDataModule, data_root, mnist_files
from eqprop_lightning.datamodules.data_root import ENV_VAR, is_writable
from eqprop_lightning.datamodules.mnist_files import MNIST_MD5
from eqprop_lightning.datamodules.sampling import EpochShuffle
from eqprop_lightning.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_TRAIN_SIZE, FAKE_TEST_SIZE = 200, 100  # sizes written by the fake_mnist fixture


def _gz_only_copy(src_root: Path, dst_root: Path) -> Path:
    """Copy only the ``.gz`` files of a fake MNIST root into a fresh root."""
    raw_dir = dst_root / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for gz in (src_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy2(gz, raw_dir / gz.name)
    return dst_root


def _fake_dm(root: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(root), verify_checksums=False, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's download fail as it does without network."""

    def fail(self: MNIST) -> None:
        raise RuntimeError("simulated: no network")

    monkeypatch.setattr(MNIST, "download", fail)


def test_flat_batches_shapes_dtypes_ranges(fake_mnist: Path) -> None:
    dm = _fake_dm(fake_mnist)
    assert dm.num_classes == 10
    assert dm.example_shape == (784,)
    assert len(dm.train_set) == FAKE_TRAIN_SIZE
    assert len(dm.test_set) == FAKE_TEST_SIZE
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (20, 784) and x.dtype == torch.float32
    assert y.shape == (20, 10) and y.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.max() > 0.7  # the bright patch survives scaling


def test_unflattened_images(fake_mnist: Path) -> None:
    dm = _fake_dm(fake_mnist, flatten=False, batch_size=8)
    assert dm.example_shape == (1, 28, 28)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (8, 10)


def test_onehot_targets_match_labels(fake_mnist: Path) -> None:
    dm = _fake_dm(fake_mnist)
    labels = MNIST(str(fake_mnist), train=False).targets
    y = torch.cat([yb for _, yb in dm.test_dataloader()])
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(dim=1), torch.ones(len(y)))
    assert torch.equal(y.argmax(dim=1), labels)


@pytest.mark.parametrize("flatten", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_matches_torchvision_to_tensor(fake_mnist: Path, train: bool, flatten: bool) -> None:
    """Each image is torchvision's ``ToTensor`` of it, flattened row by row with ``flatten``."""
    dm = _fake_dm(fake_mnist, flatten=flatten)
    images = (dm.train_set if train else dm.test_set).tensors[0]
    reference = MNIST(str(fake_mnist), train=train, transform=ToTensor())
    for i in (0, 1, 17, len(reference) - 1):
        img, _ = reference[i]
        assert torch.equal(images[i], img.flatten() if flatten else img)


def test_loaders_samplers_and_batching(fake_mnist: Path) -> None:
    dm = _fake_dm(fake_mnist, batch_size=7, test_batch_size=30)
    train = dm.train_dataloader()
    # the resumable order (tests/test_sampling.py), not a RandomSampler on the global RNG
    assert isinstance(train.sampler, EpochShuffle) and train.batch_size == 7
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert isinstance(loader.sampler, SequentialSampler)
        assert not loader.drop_last
        assert [len(x) for x, _ in loader] == [30, 30, 30, 10]


def test_val_and_test_serve_the_test_set_in_order(fake_mnist: Path) -> None:
    dm = _fake_dm(fake_mnist)
    val_x = torch.cat([x for x, _ in dm.val_dataloader()])
    test_x = torch.cat([x for x, _ in dm.test_dataloader()])
    assert torch.equal(val_x, test_x)
    assert torch.equal(test_x, dm.test_set.tensors[0])


def test_env_var_resolution(
    fake_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(fake_mnist))
    dm = MNISTDataModule(verify_checksums=False)
    assert dm.data_root == fake_mnist
    dm.setup("test")
    assert len(dm.test_set) == FAKE_TEST_SIZE
    # The argument wins over the environment variable.
    assert MNISTDataModule(data_dir=str(tmp_path)).data_root == tmp_path
    # Without either, ./data relative to the working directory.
    monkeypatch.delenv(ENV_VAR)
    assert MNISTDataModule().data_root == Path("data")


def test_gz_only_directory_is_gunzipped_in_place(fake_mnist: Path, tmp_path: Path) -> None:
    root = _gz_only_copy(fake_mnist, tmp_path / "gz_only")
    dm = _fake_dm(root)
    assert len(dm.train_set) == FAKE_TRAIN_SIZE
    for name in MNIST_MD5:
        assert (root / "MNIST" / "raw" / name).is_file()


def test_unwritable_root_uses_cache(
    fake_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _gz_only_copy(fake_mnist, tmp_path / "read_only")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_files, "is_writable", lambda directory: False)
    dm = _fake_dm(root)
    assert len(dm.test_set) == FAKE_TEST_SIZE
    cache_raw = mnist_files.cache_root_for(root) / "MNIST" / "raw"
    assert cache_raw.is_relative_to(tmp_path / "cache")
    for name in MNIST_MD5:
        assert (cache_raw / name).is_file()
        assert not (root / "MNIST" / "raw" / name).exists()


def test_a_folder_without_write_permission_is_left_alone(
    fake_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (mode r-x for all, like ../shared/data) gets no gunzipped copies,
    even from root, whom the permission bits do not stop: the P-conv runs wrote 55 MB there."""
    root = _gz_only_copy(fake_mnist, tmp_path / "read_only")
    raw = root / "MNIST" / "raw"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw.chmod(0o555)
    try:
        assert not is_writable(raw)
        dm = _fake_dm(root)
        assert len(dm.test_set) == FAKE_TEST_SIZE
        assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in MNIST_MD5)
    finally:
        raw.chmod(0o755)
    assert is_writable(raw)


def test_a_folder_whose_write_probe_fails_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The permission bits are not enough: a folder with write bits on a read-only mount (the
    probe's file cannot be created) is not writable; a folder that does not exist is not."""
    assert is_writable(tmp_path)
    assert not is_writable(tmp_path / "missing")

    def read_only_mount(**kwargs) -> None:
        raise OSError(30, "Read-only file system", str(kwargs["dir"]))

    monkeypatch.setattr(data_root, "tempfile", SimpleNamespace(TemporaryFile=read_only_mount))
    assert tmp_path.stat().st_mode & 0o200
    assert not is_writable(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root writes past the owner's bits")
def test_a_folder_its_group_or_others_may_write_is_writable(tmp_path: Path) -> None:
    """Any write bit (the owner's, the group's or the others') lets root write there: only a
    folder no one may write is left alone."""
    for mode in (0o575, 0o557):
        tmp_path.chmod(mode)
        try:
            assert is_writable(tmp_path), oct(mode)
        finally:
            tmp_path.chmod(0o755)


def test_missing_data_download_fails_with_clear_error(tmp_path: Path, no_download: None) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as excinfo:
        dm.prepare_data()
    message = str(excinfo.value)
    raw_dir = tmp_path / "nowhere" / "MNIST" / "raw"
    for name in MNIST_MD5:
        assert str(raw_dir / name) in message
        assert str(raw_dir / f"{name}.gz") in message
    assert "simulated: no network" in message
    assert "--data.data_dir" in message and ENV_VAR in message


def test_a_failed_download_leaves_no_empty_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision makes <root>/MNIST/raw before it downloads: a failed download left them."""

    def fail(self: MNIST) -> None:
        os.makedirs(self.raw_folder, exist_ok=True)  # as torchvision's download does first
        raise RuntimeError("simulated: no network")

    monkeypatch.setattr(MNIST, "download", fail)
    (tmp_path / "kept").mkdir()
    for root in (tmp_path / "nowhere", tmp_path / "kept"):
        with pytest.raises(FileNotFoundError, match="simulated: no network"):
            MNISTDataModule(data_dir=str(root)).prepare_data()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_missing_data_without_download(tmp_path: Path, no_download: None) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="download=False") as excinfo:
        dm.prepare_data()
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(excinfo.value)
    with pytest.raises(FileNotFoundError, match="--data.data_dir"):
        dm.setup("fit")


def test_prepare_data_does_not_download_when_files_present(
    fake_mnist: Path, no_download: None
) -> None:
    MNISTDataModule(data_dir=str(fake_mnist), verify_checksums=False).prepare_data()


TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def _edited_copy(
    fake_mnist: Path, tmp_path: Path, name: str, edit: Callable[[bytes], bytes], gz: bool = True
) -> Path:
    """A ``.gz``-only copy of the fake MNIST whose file ``name`` (its ``.gz`` if ``gz``, else a
    gunzipped one next to it) holds ``edit`` of the file's gunzipped content; return the file."""
    root = _gz_only_copy(fake_mnist, tmp_path / "bad")
    gz_path = root / "MNIST" / "raw" / f"{name}.gz"
    content = gzip.decompress(gz_path.read_bytes())
    if gz:
        gz_path.write_bytes(gzip.compress(edit(content)))
        return gz_path
    path = gz_path.with_suffix("")
    path.write_bytes(edit(content))
    return path


def _root_of(path: Path) -> Path:
    return path.parents[2]


def _set_count(count: int) -> Callable[[bytes], bytes]:
    """Rewrite an IDX file's example count (first dimension) and cut its payload to match."""

    def edit(content: bytes) -> bytes:
        item = 784 if content[3] == 3 else 1
        header_len = 4 + 4 * content[3]
        header = content[:4] + struct.pack(">I", count) + content[8:header_len]
        return header + content[header_len : header_len + count * item]

    return edit


def _set_byte(offset: int, value: int) -> Callable[[bytes], bytes]:
    return lambda content: content[:offset] + bytes([value]) + content[offset + 1 :]


BAD_CONTENTS = [
    # (id, file, edit of the gunzipped content, texts the message must contain)
    ("short-labels", TRAIN_LABELS, lambda b: b[:-7],
     ["header announces 200 labels", "200 bytes", "193 bytes", "truncated"]),
    ("trailing-data", TEST_IMAGES, lambda b: b + b"\0" * 5,
     ["header announces 100 28x28 images", "78400 bytes", "78405 bytes"]),
    ("header-only-part", TEST_LABELS, lambda b: b[:6], ["6 bytes long", "8-byte header"]),
    ("empty", TRAIN_IMAGES, lambda b: b"", ["0 bytes long", "16-byte header"]),
    ("wrong-magic", TEST_IMAGES, _set_byte(3, 0x0C), ["magic number 2060", "expected 2051"]),
    ("labels-as-images", TRAIN_IMAGES, lambda b: gzip.decompress(
        gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 200) + bytes(200))),
     ["magic number 2049", "expected 2051"]),
    ("image-size", TRAIN_IMAGES, _set_byte(15, 27), ["28x27 pixels", "expected 28x28"]),
    ("label-range", TEST_LABELS, _set_byte(8 + 42, 12), ["label 12 at index 42", "0..9"]),
    ("count-mismatch", TRAIN_LABELS, _set_count(150),
     ["holds 200 images", "holds 150 labels", "same count"]),
]  # fmt: skip


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "gunzipped"])
@pytest.mark.parametrize(
    ("name", "edit", "expected"), [c[1:] for c in BAD_CONTENTS], ids=[c[0] for c in BAD_CONTENTS]
)
def test_bad_file_contents_fail_in_prepare_data(
    fake_mnist: Path, tmp_path: Path, name: str, edit, expected: list[str], gz: bool
) -> None:
    path = _edited_copy(fake_mnist, tmp_path, name, edit, gz=gz)
    dm = MNISTDataModule(data_dir=str(_root_of(path)), verify_checksums=False)
    with pytest.raises(DataError) as excinfo:
        dm.prepare_data()
    message = str(excinfo.value)
    assert str(path) in message
    for text in expected:
        assert text in message
    # setup, without prepare_data (as on the other ranks), also fails with a DataError
    with pytest.raises(DataError, match="expected") as excinfo:
        MNISTDataModule(data_dir=str(_root_of(path)), verify_checksums=False).setup("fit")
    assert str(path.with_suffix("")) in str(excinfo.value)  # the gunzipped file it loads


def test_count_mismatch_names_both_files(fake_mnist: Path, tmp_path: Path) -> None:
    labels = _edited_copy(fake_mnist, tmp_path, TEST_LABELS, _set_count(99))
    dm = MNISTDataModule(data_dir=str(_root_of(labels)), verify_checksums=False)
    with pytest.raises(DataError) as excinfo:
        dm.prepare_data()
    message = str(excinfo.value)
    assert str(labels) in message and str(labels.with_name(f"{TEST_IMAGES}.gz")) in message


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        (TRAIN_LABELS, lambda data: data[: len(data) // 2]),  # truncated gzip stream
        (TEST_IMAGES, lambda data: b"this is not a gzip file"),
        (TRAIN_IMAGES, lambda data: data[:-8] + bytes(8)),  # CRC and size trailer zeroed
        (TEST_LABELS, lambda data: data[:12] + bytes(20) + data[32:]),  # corrupt deflate data
    ],
    ids=["truncated", "garbage", "bad-trailer", "corrupt"],
)
def test_unreadable_gzip_fails_in_prepare_data(
    fake_mnist: Path, tmp_path: Path, name: str, damage
) -> None:
    root = _gz_only_copy(fake_mnist, tmp_path / "bad")
    path = root / "MNIST" / "raw" / f"{name}.gz"
    path.write_bytes(damage(path.read_bytes()))
    dm = MNISTDataModule(data_dir=str(root), verify_checksums=False)
    with pytest.raises(DataError, match="not a readable gzip file") as excinfo:
        dm.prepare_data()
    assert str(path) in str(excinfo.value)
    assert not (root / "MNIST" / "raw" / name).exists()  # nothing was extracted
    # setup alone fails while extracting, with the same message, and leaves no temporary file
    with pytest.raises(DataError, match="not a readable gzip file") as excinfo:
        MNISTDataModule(data_dir=str(root), verify_checksums=False).setup("fit")
    assert str(path) in str(excinfo.value)
    assert not list((root / "MNIST" / "raw").glob(".*"))


def test_md5_mismatch_names_file_and_checksums(fake_mnist: Path, tmp_path: Path) -> None:
    root = _gz_only_copy(fake_mnist, tmp_path / "gz_only")
    dm = MNISTDataModule(data_dir=str(root), verify_checksums=True)
    with pytest.raises(DataError, match="MD5 mismatch") as excinfo:
        dm.prepare_data()
    message = str(excinfo.value)
    name = next(n for n in MNIST_MD5 if n in message)
    path = root / "MNIST" / "raw" / f"{name}.gz"
    assert str(path) in message and MNIST_MD5[name] in message
    assert hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest() in message
    assert "--data.verify_checksums false" in message
    # gunzipped files are checked as they are; setup alone checks them as well
    dm = MNISTDataModule(data_dir=str(root), verify_checksums=False)
    dm.prepare_data()
    dm.setup("test")  # gunzips next to the .gz files
    with pytest.raises(DataError, match="MD5 mismatch") as excinfo:
        MNISTDataModule(data_dir=str(root), verify_checksums=True).prepare_data()
    assert str(root / "MNIST" / "raw" / name) + ":" in str(excinfo.value)
    with pytest.raises(DataError, match="MD5 mismatch"):
        MNISTDataModule(data_dir=str(root), verify_checksums=True).setup("fit")


@pytest.mark.parametrize("flatten", [True, False])
def test_example_shape_and_num_classes_match_a_batch(
    fake_mnist: Path, tmp_path: Path, flatten: bool
) -> None:
    # known right after __init__, without any data files
    empty = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), flatten=flatten)
    assert empty.example_shape == ((784,) if flatten else (1, 28, 28))
    assert empty.num_classes == 10
    dm = MNISTDataModule(data_dir=str(fake_mnist), verify_checksums=False, flatten=flatten)
    shape, classes = dm.example_shape, dm.num_classes
    dm.prepare_data()
    dm.setup("fit")
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert shape == tuple(x[0].shape) and classes == y.shape[1]


def test_toy_example_shape_and_num_classes_match_a_batch() -> None:
    dm = ToyDataModule(n_in=7, n_out=4, batch_size=3, n_train=12, n_test=6)
    shape, classes = dm.example_shape, dm.num_classes
    assert shape == (7,) and classes == 4
    dm.setup("fit")
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert shape == tuple(x[0].shape) and classes == y.shape[1]


def test_toy_predicts_its_test_examples_in_order() -> None:
    """``eqprop predict`` on the toy model's config: the test examples, in order (before, the
    data module had no predict loader and Lightning refused)."""
    dm = ToyDataModule(n_in=3, n_out=4, n_train=10, n_test=6)
    dm.setup("predict")
    x = torch.cat([batch[0] for batch in dm.predict_dataloader()])
    assert torch.equal(x, dm.test_set.tensors[0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"test_batch_size": 0}, "test_batch_size"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_invalid_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field) as excinfo:
        MNISTDataModule(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(excinfo.value)


def test_loaders_require_setup() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        MNISTDataModule().train_dataloader()


def _real_data_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or REPO_ROOT / "data")


def _has_real_data(root: Path) -> bool:
    raw_dir = root / "MNIST" / "raw"
    return all((raw_dir / n).is_file() or (raw_dir / f"{n}.gz").is_file() for n in MNIST_MD5)


@pytest.mark.skipif(not _has_real_data(_real_data_root()), reason="real MNIST files not found")
def test_real_mnist_checksums_and_sizes() -> None:
    dm = MNISTDataModule(data_dir=str(_real_data_root()), download=False, verify_checksums=True)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.tensors[0].shape == (60000, 784)
    assert dm.test_set.tensors[0].shape == (10000, 784)
    # the per-digit counts of LeCun et al.'s MNIST files, digits 0-9
    train = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert dm.train_set.tensors[1].sum(dim=0).tolist() == train
    assert dm.test_set.tensors[1].sum(dim=0).tolist() == test


def test_toy_classes_are_one_linear_teacher_of_the_centred_inputs() -> None:
    """The targets are ``argmax((x - 1/2) W)`` for one ``W``, the same for train and test: a
    multi-class perceptron on the centred inputs (no bias) separates all 60 examples, which
    it did not within 2000 epochs (seeds 0-4) for the same labels shuffled or for the uncentred
    inputs."""

    def perceptron_separates(x: torch.Tensor, labels: list[int], n_out: int) -> bool:
        W = torch.zeros(x.shape[1], n_out, dtype=torch.float64)
        for _ in range(200):  # the teacher's labels are separated after 13 epochs
            mistakes = 0
            for xi, c in zip(x, labels, strict=True):
                guess = int((xi @ W).argmax())
                if guess != c:
                    W[:, c] += xi
                    W[:, guess] -= xi
                    mistakes += 1
            if not mistakes:
                return True
        return False

    dm = ToyDataModule(n_in=3, n_out=4, n_train=40, n_test=20, seed=0)
    dm.setup("fit")
    x = torch.cat([dm.train_set.tensors[0], dm.test_set.tensors[0]]).double()
    labels = torch.cat([dm.train_set.tensors[1], dm.test_set.tensors[1]]).argmax(1).tolist()
    assert len(set(labels)) == 4
    assert perceptron_separates(x - 0.5, labels, 4)


def test_toy_test_examples_are_not_training_examples() -> None:
    """n_train training and n_test test examples, drawn apart: no test input is a training
    input, and every target is one-hot."""
    dm = ToyDataModule(n_in=3, n_out=4, batch_size=2, n_train=12, n_test=6, seed=5)
    dm.setup("fit")
    train_x, train_y = dm.train_set.tensors
    test_x, test_y = dm.test_set.tensors
    assert train_x.shape == (12, 3) and test_x.shape == (6, 3)
    assert not any(torch.equal(t, x) for t in test_x for x in train_x)
    for y in (train_y, test_y):
        assert torch.equal(y.sum(1), torch.ones(len(y))) and set(y.unique().tolist()) == {0, 1}
