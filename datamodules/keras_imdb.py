"""Keras's IMDB: its cache files read as ``keras.datasets.imdb.load_data()`` reads them with its
defaults, decoded to text as seed 2 does (spec B.7); the padding, Keras ``pad_sequences``'s, is
:func:`~.text.pad_sequence`.

Files (Keras's cache, ``~/.keras/datasets``): ``imdb.npz`` holds ``x_train``, ``y_train``,
``x_test``, ``y_test``, the reviews as object arrays of lists of word ranks (1 = the most
frequent word) and 0/1 labels; ``imdb_word_index.json`` maps each word to its rank.

``load_data()`` with its defaults shuffles each split with ``RandomState(113)`` (train, then
test, one generator), prepends the start id 1 to every review, adds ``index_from = 3`` to every
rank (ids 0, 1, 2 are padding, start and out-of-vocabulary) and, with ``num_words`` unset,
replaces every id ``>= max id`` (the rarest word) by the OOV id 2. Seed 2 then decodes each id
``i`` as ``reverse_word_index.get(i - 3, "#")`` joined by spaces, so that start, padding and OOV
become ``"#"``, which its character filter later removes.

Checked against Keras 2's ``keras/datasets/imdb.py``: ``np.random.seed(113)`` then
``np.random.shuffle`` of the train indices and then of the test indices (one stream, as
``RandomState(113)`` here), ``num_words = max(max(x) for x in xs)`` over the shifted ids of both
splits (start id included), and ``w if skip_top <= w < num_words else oov_char`` for every id.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from eqprop_lightning.errors import DataError

NPZ_NAME = "imdb.npz"
WORD_INDEX_NAME = "imdb_word_index.json"
SHUFFLE_SEED, START_ID, OOV_ID, INDEX_FROM = 113, 1, 2, 3
UNKNOWN_WORD = "#"
SPLITS = ("train", "test")


def keras_ids(ranks: list[list[int]], num_words: int) -> list[list[int]]:
    """``load_data``'s ids: start id, ranks shifted by ``index_from``, ids ``>= num_words``
    replaced by the OOV id."""
    return [
        [START_ID] + [r + INDEX_FROM if r + INDEX_FROM < num_words else OOV_ID for r in review]
        for review in ranks
    ]


def decode(ids: list[int], reverse_word_index: dict[int, str]) -> str:
    """Seed 2's text of a review: ``reverse_word_index.get(i - 3, "#")`` joined by spaces."""
    return " ".join(reverse_word_index.get(i - INDEX_FROM, UNKNOWN_WORD) for i in ids)


def _read_word_index(path: Path) -> dict[int, str]:
    try:
        word_index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"Cannot read the Keras IMDB word index {path}: {err}") from err
    if not isinstance(word_index, dict) or not all(
        isinstance(w, str) and isinstance(r, int) for w, r in word_index.items()
    ):
        raise DataError(f"{path} must map words to integer ranks (Keras's imdb_word_index.json)")
    return {rank: word for word, rank in word_index.items()}


def _read_npz(path: Path) -> dict[str, tuple[list[list[int]], list[int]]]:
    keys = [f"{k}_{s}" for s in SPLITS for k in ("x", "y")]
    try:
        with np.load(path, allow_pickle=True) as f:
            files = f.files
            arrays = {k: f[k] for k in keys if k in files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"Cannot read the Keras IMDB file {path}: {err}") from err
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {missing}: expected Keras's imdb.npz ({keys})")
    out = {}
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y) or not set(np.unique(y).tolist()) <= {0, 1}:
            raise DataError(f"{path}: x_{split} and y_{split} must pair reviews with 0/1 labels")
        out[split] = ([[int(r) for r in review] for review in x], [int(v) for v in y])
    return out


def read_keras_imdb(root: Path) -> dict[str, list[tuple[str, int, str]]]:
    """``{split: [(name, label, text)]}`` from ``<root>/imdb.npz`` and
    ``<root>/imdb_word_index.json``, in ``load_data``'s shuffled order (names
    ``imdb.npz:x_train[i]``: each review's place in the file), each text decoded as seed 2
    does."""
    splits = _read_npz(root / NPZ_NAME)
    reverse = _read_word_index(root / WORD_INDEX_NAME)
    rng = np.random.RandomState(SHUFFLE_SEED)
    shuffled = {}
    for split in SPLITS:  # one generator, train first, as load_data
        ranks, labels = splits[split]
        order = np.arange(len(ranks))
        rng.shuffle(order)
        shuffled[split] = (
            [ranks[i] for i in order],
            [labels[i] for i in order],
            [f"{NPZ_NAME}:x_{split}[{i}]" for i in order],
        )
    # the largest id, the start id included (load_data's num_words when it is not given)
    shifted = (
        r + INDEX_FROM for ranks, *_ in shuffled.values() for review in ranks for r in review
    )
    num_words = max(shifted, default=START_ID)
    out = {}
    for split, (ranks, labels, names) in shuffled.items():
        ids = keras_ids(ranks, num_words)
        out[split] = [
            (name, label, decode(review, reverse))
            for name, label, review in zip(names, labels, ids, strict=True)
        ]
    return out
