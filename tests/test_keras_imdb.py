"""IMDB from Keras's cache files (``imdb.npz`` + ``imdb_word_index.json``), decoded as seed 2
does, and Keras ``pad_sequences`` padding and truncation, on tiny files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from eqprop_lightning.datamodules.imdb import IMDBDataModule
from eqprop_lightning.datamodules.keras_imdb import read_keras_imdb
from eqprop_lightning.datamodules.text import pad_sequence
from eqprop_lightning.errors import ConfigError, DataError
from tests.test_text_data import _vector

#: Word ranks as Keras numbers them (1 = most frequent); "plot" has the largest rank, so its id
#: (4 + 3 = 7) is load_data's num_words and becomes the OOV id 2 ("#").
WORD_INDEX = {"great": 1, "movie": 2, "bad": 3, "plot": 4}
TRAIN = [([1, 2], 1), ([3, 2, 3], 0), ([3, 4], 0), ([1, 1, 2, 4], 1)]
TEST = [([2, 1], 1), ([3], 0)]
#: seed 2's texts: start id 1 -> "#", rank r -> id r + 3 -> word, "plot" -> OOV -> "#"
TRAIN_TEXTS = ["# great movie", "# bad movie bad", "# bad #", "# great great movie #"]
TEST_TEXTS = ["# movie great", "# bad"]


def _object_array(reviews: list[list[int]]) -> np.ndarray:
    out = np.empty(len(reviews), dtype=object)
    out[:] = reviews
    return out


@pytest.fixture
def keras_root(tmp_path: Path) -> Path:
    """Keras's two cache files and 300-d word2vec vectors for the four words."""
    root = tmp_path / "keras"
    root.mkdir()
    np.savez(
        root / "imdb.npz",
        x_train=_object_array([r for r, _ in TRAIN]),
        y_train=np.array([y for _, y in TRAIN]),
        x_test=_object_array([r for r, _ in TEST]),
        y_test=np.array([y for _, y in TEST]),
    )
    (root / "imdb_word_index.json").write_text(json.dumps(WORD_INDEX))
    kv = KeyedVectors(vector_size=300)
    kv.add_vectors(list(WORD_INDEX), np.stack([_vector(w) for w in WORD_INDEX]))
    kv.save_word2vec_format(str(root / "vectors.txt"), binary=False)
    return root


def keras_order(n_train: int, n_test: int) -> tuple[list[int], list[int]]:
    """load_data's order: one RandomState(113) shuffles train, then test."""
    rng = np.random.RandomState(113)
    train, test = np.arange(n_train), np.arange(n_test)
    rng.shuffle(train)
    rng.shuffle(test)
    return train.tolist(), test.tolist()


@pytest.mark.parametrize(
    ("ids", "padding", "truncating", "expected"),
    [
        ([1, 2, 3, 4, 5], "post", "post", [1, 2, 3]),
        ([1, 2, 3, 4, 5], "post", "pre", [3, 4, 5]),
        ([1, 2, 3, 4, 5], "pre", "pre", [3, 4, 5]),
        ([1, 2], "post", "post", [1, 2, 0]),
        ([1, 2], "pre", "post", [0, 1, 2]),
        ([1, 2], "pre", "pre", [0, 1, 2]),
        ([], "pre", "pre", [0, 0, 0]),
        ([7, 8, 9], "pre", "pre", [7, 8, 9]),
    ],
)
def test_pad_sequence_as_keras(ids, padding, truncating, expected) -> None:
    assert pad_sequence(ids, 3, padding, truncating) == expected


def test_read_keras_imdb_decodes_as_the_seed(keras_root: Path) -> None:
    reviews = read_keras_imdb(keras_root)
    train_order, test_order = keras_order(len(TRAIN), len(TEST))
    assert [(label, text) for _, label, text in reviews["train"]] == [
        (TRAIN[i][1], TRAIN_TEXTS[i]) for i in train_order
    ]
    assert [(label, text) for _, label, text in reviews["test"]] == [
        (TEST[i][1], TEST_TEXTS[i]) for i in test_order
    ]
    assert train_order != sorted(train_order)  # the shuffle is exercised
    # each review is named by its place in the file
    assert [name for name, _, _ in reviews["train"]] == [
        f"imdb.npz:x_train[{i}]" for i in train_order
    ]
    assert [name for name, _, _ in reviews["test"]] == [f"imdb.npz:x_test[{i}]" for i in test_order]


def _tokens(dm: IMDBDataModule, ids: torch.Tensor) -> list[list[str]]:
    words = ["", *dm.vocabulary]
    return [[words[i] for i in row] for row in ids.tolist()]


def _datamodule(root: Path, **kwargs) -> IMDBDataModule:
    dm = IMDBDataModule(
        data_dir=str(root),
        embeddings=str(root / "vectors.txt"),
        cache_dir=str(root / "cache"),
        source="keras",
        **kwargs,
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    ("padding", "truncating", "rows"),
    [
        ("post", "post", [["great", "great"], ["bad", ""], ["great", "movie"], ["bad", "movie"]]),
        ("pre", "pre", [["great", "movie"], ["", "bad"], ["great", "movie"], ["movie", "bad"]]),
        ("pre", "post", [["great", "great"], ["", "bad"], ["great", "movie"], ["bad", "movie"]]),
    ],
)
def test_datamodule_reads_keras_files_with_keras_padding(
    keras_root: Path, padding: str, truncating: str, rows: list
) -> None:
    """Tokens after the seed's cleaning ("#" removed) and OOV drop, padded and truncated to 2,
    in Keras's order of TRAIN, [3, 2, 0, 1]: "great great movie", "bad", "great movie",
    "bad movie bad"."""
    train_order, _ = keras_order(len(TRAIN), len(TEST))
    assert train_order == [3, 2, 0, 1]  # the order the rows below are written in
    dm = _datamodule(keras_root, seq_len=2, padding=padding, truncating=truncating)
    assert _tokens(dm, dm.train_set.ids) == rows
    assert dm.train_set.labels.tolist() == [TRAIN[i][1] for i in train_order]


def test_padding_changes_the_cache(keras_root: Path) -> None:
    post = _datamodule(keras_root, seq_len=2)
    pre = _datamodule(keras_root, seq_len=2, padding="pre", truncating="pre")
    assert post.cache_path() != pre.cache_path()


@pytest.mark.parametrize(
    ("field", "value"), [("padding", "left"), ("truncating", "end"), ("source", "tfds")]
)
def test_bad_options_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}={value!r}"):
        IMDBDataModule(**{field: value})


def test_missing_keras_files_are_named(tmp_path: Path) -> None:
    dm = IMDBDataModule(data_dir=str(tmp_path), source="keras", embeddings=str(tmp_path / "v.bin"))
    with pytest.raises(FileNotFoundError, match="imdb_word_index.json"):
        dm._sources()


def test_malformed_npz_is_a_data_error(keras_root: Path) -> None:
    np.savez(keras_root / "imdb.npz", x_train=_object_array([[1]]))
    with pytest.raises(DataError) as info:
        read_keras_imdb(keras_root)
    missing = ["y_train", "x_test", "y_test"]
    assert str(info.value).startswith(f"{keras_root / 'imdb.npz'} lacks {missing}: expected")


def test_one_class_npz_split_is_named_with_keras_advice(keras_root: Path) -> None:
    """A split of imdb.npz holding one class is refused with advice about its arrays, not about
    the Stanford folder's pos/neg files, which this source does not read."""
    np.savez(
        keras_root / "imdb.npz",
        x_train=_object_array([r for r, _ in TRAIN]),
        y_train=np.array([y for _, y in TRAIN]),
        x_test=_object_array([r for r, _ in TEST]),
        y_test=np.array([1 for _ in TEST]),
    )
    with pytest.raises(DataError) as err:
        _datamodule(keras_root, seq_len=2)
    message = str(err.value)
    assert "test split" in message and "{'neg': 0, 'pos': 2}" in message
    assert "y_test" in message and "aclImdb" not in message
