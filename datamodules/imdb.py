"""IMDB Large Movie Review sentiment (Maas et al. 2011) as word2vec token ids (spec B.7 / C.2).

Source: the Stanford layout ``<root>/aclImdb/{train,test}/{pos,neg}/*.txt`` or, when that folder
is absent, the ``<root>/aclImdb_v1.tar.gz`` archive, read member by member (never extracted);
files are read in sorted path order; labels are neg 0 / pos 1. Or Keras's cache files
``<root>/imdb.npz`` + ``<root>/imdb_word_index.json``, read and decoded back to words as the
original does (:mod:`.keras_imdb`), in Keras's order. The data root is ``data_dir``, else
``$EQPROP_DATA_DIR``, else ``./data``. The test and validation reviews are evaluated (and
predicted) with the classes alternating, neg, pos, neg, ..., each class in that order, so that
an evaluation cut short (``limit_test_batches 0.5``) measures both classes.

Each review's kept tokens are padded with zeros or truncated to ``seq_len`` as Keras's
``pad_sequences`` does with ``padding`` and ``truncating`` (``post``: at the end, the original's
choice and the default here; Keras's own default is ``pre`` for both).
"""

from __future__ import annotations

import re
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from eqprop_lightning.errors import ConfigError, DataError

from .checks import check_nonneg_int, check_positive_int
from .data_root import data_not_found
from .keras_imdb import NPZ_NAME, WORD_INDEX_NAME, read_keras_imdb
from .text import (
    Split,
    TextDataModule,
    TokenIdsDataset,
    VocabularyBuilder,
    alternate_classes,
    balanced_subset,
    check_side,
    clean_imdb,
    encode_texts,
    file_fingerprint,
    folder_fingerprint,
)

ARCHIVE_NAME = "aclImdb_v1.tar.gz"
#: Where the Stanford archive is published (Maas et al. 2011).
ARCHIVE_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
#: Where Keras's two IMDB files are published (``load_data`` downloads from here).
KERAS_FOLDER_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
#: Reviews per class and split in the complete Stanford data (and Keras's).
REVIEWS_PER_CLASS = 12_500
SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")

#: One review: (name, label, text); the name is its path under the data root (and in the
#: archive), ``aclImdb/test/neg/0_2.txt``, or its place in Keras's file, ``imdb.npz:x_test[17]``.
Review = tuple[str, int, str]
SOURCES = ("auto", "stanford", "keras")


class IMDBDataModule(TextDataModule):
    """IMDB reviews as word2vec ids, embedded per batch to ``x`` of shape ``(B, seq_len, 300)``.

    Args:
        data_dir: Root holding ``aclImdb/`` or ``aclImdb_v1.tar.gz`` (and ``word2vec/``).
        embeddings: word2vec file (binary or text, told apart by content; ``.gz`` allowed) or
            gensim-data name; default
            ``<root>/word2vec/GoogleNews-vectors-negative300-subset.bin`` if present, else
            ``word2vec-google-news-300``.
        seq_len: Tokens per review, zero-padded or truncated.
        padding: ``post`` (zeros after the review, the original) or ``pre`` (before it).
        truncating: ``post`` (keep the first ``seq_len`` tokens, the original) or ``pre``
            (keep the last).
        source: ``auto`` (the Stanford folder, else its archive, else Keras's files),
            ``stanford`` (folder or archive) or ``keras`` (``imdb.npz`` and
            ``imdb_word_index.json``).
        batch_size: Training batch size.
        test_batch_size: Validation/test batch size (default: ``batch_size``, as the original).
        val_size: Examples held out (seeded) of train for validation; 0: no validation set
            (the test set is evaluated every epoch either way).
        limit_train_examples: Seeded class-balanced subset of the training reviews.
        limit_test_examples: Seeded class-balanced subset of the test reviews.
        keep_oov: Keep out-of-vocabulary tokens as zero vectors instead of dropping them.
        num_workers: DataLoader worker processes.
        seed: Seed of the validation split and of the ``limit_*`` subsets (another than 0
            without either is refused).
        cache_dir: Cache folder (default ``<root>/cache`` if writable, else the user cache).
    """

    kind = "imdb"

    def __init__(
        self,
        data_dir: str | None = None,
        embeddings: str | None = None,
        seq_len: int = 600,
        batch_size: int = 20,
        test_batch_size: int | None = None,
        val_size: int = 0,
        limit_train_examples: int | None = None,
        limit_test_examples: int | None = None,
        keep_oov: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        padding: str = "post",
        truncating: str = "post",
        source: str = "auto",
    ) -> None:
        super().__init__(
            data_dir,
            embeddings,
            batch_size,
            test_batch_size,
            keep_oov,
            num_workers,
            seed,
            cache_dir,
        )
        check_positive_int("seq_len", seq_len)
        check_nonneg_int("val_size", val_size)
        check_positive_int("limit_train_examples", limit_train_examples, allow_none=True)
        check_positive_int("limit_test_examples", limit_test_examples, allow_none=True)
        self.save_hyperparameters()
        self._seq_len = seq_len
        self._val_size = val_size
        self._limits = {"train": limit_train_examples, "test": limit_test_examples}
        self._check_seed_draws(
            {
                "val_size": val_size,
                "limit_train_examples": limit_train_examples,
                "limit_test_examples": limit_test_examples,
            }
        )
        check_side("padding", padding)
        check_side("truncating", truncating)
        if source not in SOURCES:
            raise ConfigError(f"source={source!r} is not supported; choose one of {list(SOURCES)}")
        self._padding, self._truncating, self._source = padding, truncating, source

    @property
    def num_classes(self) -> int:
        """2 (neg 0, pos 1)."""
        return 2

    @property
    def seq_len(self) -> int:
        """Tokens per review."""
        return self._seq_len

    def _validation_set(self) -> str | None:
        if not self._val_size:
            return None
        return (
            f"{self._val_size} reviews held out of the IMDB training reviews (seed "
            f"{self._seed}), not trained on"
        )

    def _test_set_name(self) -> str:
        return "the IMDB test reviews" + self._subset_note("test", self._limits["test"])

    # -- sources ---------------------------------------------------------------------------
    def _folder(self) -> Path:
        return self.data_root / "aclImdb"

    def _archive(self) -> Path:
        return self.data_root / ARCHIVE_NAME

    def _label_dirs(self) -> list[Path]:
        return [self._folder() / s / lab for s in SPLITS for lab in LABELS]

    def _use_folder(self) -> bool:
        return self._source != "keras" and self._folder().is_dir()

    def _keras_files(self) -> list[Path]:
        return [self.data_root / NPZ_NAME, self.data_root / WORD_INDEX_NAME]

    def _use_keras(self) -> bool:
        """Keras's files: asked for, or (``auto``) when neither Stanford source exists."""
        if self._source != "auto":
            return self._source == "keras"
        return not self._folder().is_dir() and not self._archive().is_file()

    def _not_found(self, reason: str) -> FileNotFoundError:
        """What is missing, the paths that ``source`` reads, and how to point at them."""
        folders = "\n".join(f"  {d}/*.txt" for d in self._label_dirs())
        stanford = f"{folders}\nor the archive\n  {self._archive()}"
        keras = "Keras's files\n" + "\n".join(f"  {p}" for p in self._keras_files())
        looked, holding = {
            "stanford": (stanford, f"aclImdb/ or {ARCHIVE_NAME}"),
            "keras": (keras, f"{NPZ_NAME} and {WORD_INDEX_NAME}"),
        }.get(
            self._source, (f"{stanford}\nor {keras}", f"aclImdb/, {ARCHIVE_NAME} or Keras's files")
        )
        keras_urls = " and ".join(KERAS_FOLDER_URL + n for n in (NPZ_NAME, WORD_INDEX_NAME))
        downloads = {
            "stanford": f"{ARCHIVE_URL} (into the data root, as it is or extracted)",
            "keras": keras_urls,
        }
        return data_not_found(
            f"IMDB data not found ({reason})",
            self.data_root,
            self._root_origin,
            f"with source={self._source!r} looked for\n{looked}",
            holding,
            also=f", or choose another --data.source ({', '.join(SOURCES)})",
            download=downloads.get(self._source, f"{downloads['stanford']}, or {keras_urls}"),
        )

    def _source_kind(self) -> str:
        """The source read: ``keras``, ``folder`` or ``archive``; ``FileNotFoundError`` naming
        what is missing when its files are not all there."""
        if self._use_keras():
            missing = [str(p) for p in self._keras_files() if not p.is_file()]
            if missing and self._source == "auto":
                raise self._not_found(
                    f"none of aclImdb/, {ARCHIVE_NAME} and Keras's files is in the data root"
                )
            if missing:
                raise self._not_found("missing Keras files: " + ", ".join(missing))
            return "keras"
        if self._use_folder():
            missing = [d for d in self._label_dirs() if not d.is_dir()]
            if missing:
                raise self._not_found("missing folders: " + ", ".join(map(str, missing)))
            return "folder"
        if self._archive().is_file():
            return "archive"
        raise self._not_found("neither the folder nor the archive exists")

    def _sources(self) -> dict[str, Any]:
        kind = self._source_kind()
        if kind == "keras":
            return {kind: [file_fingerprint(p) for p in self._keras_files()]}
        if kind == "folder":
            return {kind: folder_fingerprint(self._label_dirs())}
        return {kind: file_fingerprint(self._archive())}

    def _options(self) -> dict[str, Any]:
        sides = {"padding": self._padding, "truncating": self._truncating}
        return {"seq_len": self._seq_len, "limits": self._limits, **sides}

    # -- reading ---------------------------------------------------------------------------
    def _read_folder(self) -> dict[str, list[Review]]:
        reviews: dict[str, list[Review]] = {s: [] for s in SPLITS}
        for split in SPLITS:
            for label_dir, label in LABELS.items():
                folder = self._folder() / split / label_dir
                for path in sorted(folder.glob("*.txt")):
                    try:
                        text = path.read_bytes().decode("utf-8", errors="replace")
                    except OSError as err:
                        raise DataError(f"Cannot read the IMDB review {path}: {err}") from err
                    name = f"aclImdb/{split}/{label_dir}/{path.name}"
                    reviews[split].append((name, label, text))
        return reviews

    def _read_archive(self) -> dict[str, list[Review]]:
        archive = self._archive()
        reviews: dict[str, list[Review]] = {s: [] for s in SPLITS}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    match = _MEMBER.match(member.name)
                    if match is None or not member.isfile():
                        continue
                    split, name, filename = match.groups()
                    handle = tar.extractfile(member)
                    if handle is None:
                        continue
                    text = handle.read().decode("utf-8", errors="replace")
                    name_in_root = f"aclImdb/{split}/{name}/{filename}"
                    reviews[split].append((name_in_root, LABELS[name], text))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise DataError(
                f"Could not read the IMDB archive {archive}: {type(err).__name__}: {err}. The "
                f"file is truncated or corrupt; replace it (or extract it to "
                f"{self._folder()})."
            ) from err
        for split in SPLITS:
            reviews[split].sort(key=lambda r: r[0])
        return reviews

    def _build(self, vocab: VocabularyBuilder) -> dict[str, Split]:
        """Each split's ids, labels and names (:data:`Review`)."""
        kind = self._source_kind()
        if kind == "keras":
            source, reviews = self.data_root / NPZ_NAME, read_keras_imdb(self.data_root)
        elif kind == "folder":
            source, reviews = self._folder(), self._read_folder()
        else:
            source, reviews = self._archive(), self._read_archive()
        out = {}
        for split in SPLITS:
            items = reviews[split]
            counts = {n: sum(1 for r in items if r[1] == lab) for n, lab in LABELS.items()}
            if not all(counts.values()):
                expected = (
                    f"labels 0 (neg) and 1 (pos) in its y_{split}"
                    if source.name == NPZ_NAME
                    else f"reviews in both aclImdb/{split}/pos/*.txt and aclImdb/{split}/neg/*.txt"
                )
                raise DataError(
                    f"IMDB {split} split in {source} is incomplete: review counts {counts}; "
                    f"expected {expected}."
                )
            if kind == "folder" and set(counts.values()) != {REVIEWS_PER_CLASS}:
                redo = (
                    f"Delete it to read {ARCHIVE_NAME}, or extract the archive again"
                    if self._archive().is_file()
                    else f"Extract {ARCHIVE_NAME} again ({ARCHIVE_URL})"
                )
                warnings.warn(
                    f"IMDB {split} split in {source} has {counts} reviews, the complete data "
                    f"{REVIEWS_PER_CLASS:,} per class: is the folder partly extracted? {redo}.",
                    stacklevel=1,
                )
            limit = self._limits[split]
            if limit is not None:
                keep = balanced_subset([r[1] for r in items], limit, self._seed)
                items = [items[i] for i in keep]
            texts = [r[2] for r in items]
            ids = encode_texts(
                texts,
                clean_imdb,
                vocab,
                self._seq_len,
                f"IMDB {split}",
                self._padding,
                self._truncating,
            )
            labels = torch.tensor([r[1] for r in items], dtype=torch.int64)
            out[split] = (ids, labels, [r[0] for r in items])
        return out

    def _check_val_size(self, n_train: int) -> None:
        if self._val_size >= n_train:
            raise ConfigError(
                f"val_size must be smaller than the {n_train} training reviews, "
                f"got {self._val_size}"
            )

    def _check_data(self, data: dict[str, Any]) -> None:
        if self._val_size:
            self._check_val_size(len(data["splits"]["train"]["labels"]))

    def _make_datasets(self, splits: dict[str, TokenIdsDataset]) -> None:
        train, test = splits["train"], splits["test"]
        self.test_set = test.reordered(alternate_classes(test.labels.tolist()))
        if self._val_size == 0:
            self.train_set, self.val_set = train, None
            return
        self._check_val_size(len(train))
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self._seed))
        held_out = sorted(perm[: self._val_size].tolist())
        held_out = [held_out[i] for i in alternate_classes(train.labels[held_out].tolist())]
        self.val_set = Subset(train, held_out)
        self.train_set = Subset(train, sorted(perm[self._val_size :].tolist()))
