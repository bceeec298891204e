"""SNLI 1.0 (Bowman et al. 2015) as word2vec token ids of premise + hypothesis (spec B.7 / C.2).

Each split is read from ``snli_1.0_<split>.jsonl`` (canonical; fields ``gold_label``,
``sentence1``, ``sentence2``) or ``snli_1.0_<split>.csv`` (the original's form, same columns),
looked up in ``<root>/snli_1.0/``, ``<root>/snli_data/`` and ``<root>/``. Premise and
hypothesis are each cleaned, tokenised, padded/truncated to ``seq_len`` and concatenated, so
``x`` has ``2 * seq_len`` tokens. Labels: neutral 0, contradiction 1, entailment 2; pairs whose
gold label is '-' (no annotator consensus) are dropped. As the original, only the first 540,000
train rows and 10,000 test rows are read (counted before dropping).

Malformed rows, missing fields, other gold labels, text that is not UTF-8 and splits without any
gold-labelled pair raise ``DataError`` naming the file (and the line) in ``prepare_data``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from eqprop_lightning.errors import ConfigError, DataError

from .checks import check_positive_int
from .data_root import data_not_found
from .text import (
    Split,
    TextDataModule,
    TokenIdsDataset,
    VocabularyBuilder,
    balanced_subset,
    clean_snli,
    encode_texts,
    file_fingerprint,
)

SPLIT_NAMES = ("train", "dev", "test")
LABELS = {"neutral": 0, "contradiction": 1, "entailment": 2}
#: The gold label of pairs without annotator consensus; such pairs are dropped.
NO_GOLD_LABEL = "-"
FIELDS = ("gold_label", "sentence1", "sentence2")
SUBDIRS = ("snli_1.0", "snli_data", ".")
#: Where SNLI 1.0 is published (Bowman et al. 2015).
SNLI_URL = "https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
#: Strings that pandas.read_csv (used by the original) parses as NaN; such sentences become ' '.
PANDAS_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip

#: One pair: (premise, hypothesis, label, name); the name is the file (under the data root) and
#: the line where its row starts, ``snli_1.0/snli_1.0_test.jsonl:12``.
Pair = tuple[Any, Any, int, str]


def _label(path: Path, where: str, gold: object) -> int | None:
    """The class of a ``gold_label`` value, ``None`` for '-' (no gold label); else ``DataError``."""
    if isinstance(gold, str) and gold in LABELS:
        return LABELS[gold]
    if gold == NO_GOLD_LABEL:
        return None
    raise DataError(
        f"{path}{where}: gold_label {gold!r}, expected one of "
        f"{', '.join(map(repr, LABELS))} or {NO_GOLD_LABEL!r} (no gold label: dropped)"
    )


def _read_jsonl(path: Path, max_rows: int | None, name: str) -> tuple[list[Pair], int]:
    pairs: list[Pair] = []
    rows = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if max_rows is not None and rows >= max_rows:
                break
            rows += 1
            where = f", line {lineno}"
            try:
                record = json.loads(raw.decode("utf-8-sig"))  # skips a BOM, as pandas does
            except UnicodeDecodeError as err:
                raise DataError(f"{path}{where}: not UTF-8 text ({err})") from err
            except json.JSONDecodeError as err:
                line = raw.decode("utf-8-sig").rstrip("\r\n")
                problem = (
                    "the line ends early (truncated?)"
                    if err.pos >= len(line)
                    else f"{err.msg} at character {err.pos + 1} of {len(line)}"
                )
                raise DataError(
                    f"{path}{where}: malformed JSON ({problem}); expected one JSON object per line"
                ) from err
            if not isinstance(record, dict) or any(f not in record for f in FIELDS):
                found = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(
                    f"{path}{where}: expected a JSON object with the fields {FIELDS}, got {found}"
                )
            label = _label(path, where, record["gold_label"])
            if label is not None:
                pair = (record["sentence1"], record["sentence2"], label, f"{name}:{lineno}")
                pairs.append(pair)
    return pairs, rows


class _RecordStart:
    """A text file's lines for ``csv``, noting the line where the record being read starts: the
    first line since :meth:`next_record` that is not empty (``csv.DictReader`` skips those)."""

    def __init__(self, fh: Iterable[str]) -> None:
        self._lines = enumerate(fh, 1)
        self.line: int | None = None

    def __iter__(self) -> _RecordStart:
        return self

    def __next__(self) -> str:
        number, text = next(self._lines)
        if self.line is None and text.rstrip("\r\n"):
            self.line = number
        return text

    def next_record(self) -> None:
        self.line = None


def _read_csv(path: Path, max_rows: int | None, name: str) -> tuple[list[Pair], int]:
    pairs: list[Pair] = []
    rows = 0
    with open(path, encoding="utf-8-sig", newline="") as fh:  # skips a BOM, as pandas does
        lines = _RecordStart(fh)
        reader = csv.DictReader(lines)
        start = 1  # line where the row being read starts
        try:
            missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path}, line 1: the CSV header lacks the column(s) {missing}; expected a "
                    f"header with {FIELDS}"
                )
            while max_rows is None or rows < max_rows:
                lines.next_record()
                start = reader.line_num + 1  # until the record's first line is read
                record = next(reader, None)
                if record is None:
                    break
                start = lines.line or start
                rows += 1
                where = f", line {reader.line_num}"
                if any(record[f] is None for f in FIELDS):
                    raise DataError(
                        f"{path}{where}: the row has fewer fields than the header; expected "
                        f"values for {FIELDS}"
                    )
                label = _label(path, where, record["gold_label"])
                if label is not None:
                    s1, s2 = (
                        None if s in PANDAS_NA else s
                        for s in (record["sentence1"], record["sentence2"])
                    )
                    pairs.append((s1, s2, label, f"{name}:{start}"))
        except csv.Error as err:
            start = lines.line or start
            raise DataError(
                f"{path}, line {start}: malformed CSV ({err}) in the row starting there"
            ) from err
        except UnicodeDecodeError as err:
            raise DataError(f"{path}, near line {start}: not UTF-8 text ({err})") from err
    return pairs, rows


def read_snli_file(
    path: Path, max_rows: int | None = None, name: str | None = None
) -> tuple[list[Pair], int]:
    """Gold-labelled pairs among the first ``max_rows`` rows of a ``.jsonl`` or ``.csv`` file,
    and the number of rows read; each pair is named ``<name>:<line where its row starts>``
    (``name``: the file's name unless given).

    Raises ``DataError`` naming the file and line for malformed rows, missing fields, gold labels
    other than the three classes and '-', and text that is not UTF-8.
    """
    try:
        read = _read_jsonl if path.suffix == ".jsonl" else _read_csv
        return read(path, max_rows, name or path.name)
    except OSError as err:
        raise DataError(f"Cannot read the SNLI file {path}: {err}") from err


def check_distinct_splits(**splits: str | None) -> None:
    """``ConfigError`` when two roles (train, validation, test) are given the same SNLI split:
    a validation or test set that is trained on, or a best epoch chosen on the test set."""
    seen: dict[str, str] = {}
    for role, split in splits.items():
        if split is None:
            continue
        if split in seen:
            raise ConfigError(
                f"{seen[split]} and {role} are both {split!r}: the training, validation and test "
                f"splits must differ (offline, train on dev and test on test, without a "
                f"validation split: --data.train_split dev --data.val_split null)"
            )
        seen[split] = role


class SNLIDataModule(TextDataModule):
    """SNLI pairs as word2vec ids, embedded per batch to ``x`` of shape ``(B, 2*seq_len, 300)``.

    Args:
        data_dir: Root holding ``snli_1.0/`` (and ``word2vec/``); see the module docstring.
        embeddings: word2vec file or gensim-data name (as ``IMDBDataModule``).
        seq_len: Tokens per sentence; ``x`` has ``2 * seq_len`` tokens (the ``seq_len`` property).
        batch_size: Training batch size.
        test_batch_size: Validation/test batch size (default: ``batch_size``).
        train_split: Training split (``train``; offline only ``dev`` and ``test`` exist).
        val_split: Validation split, or ``None`` for none (the original; the test split is
            evaluated every epoch either way).
        test_split: Test split.
        train_max_rows: Rows read from the train file before dropping '-' (original 540,000).
        test_max_rows: Rows read from the val/test files before dropping '-' (original 10,000).
        limit_train_examples: Seeded class-balanced subset of the training pairs.
        limit_test_examples: Seeded class-balanced subset of the validation and test pairs.
        keep_oov: Keep out-of-vocabulary tokens as zero vectors instead of dropping them.
        num_workers: DataLoader worker processes.
        seed: Seed of the ``limit_*`` subsets (another than 0 without them is refused).
        cache_dir: Cache folder (default ``<root>/cache`` if writable, else the user cache).
    """

    kind = "snli"

    def __init__(
        self,
        data_dir: str | None = None,
        embeddings: str | None = None,
        seq_len: int = 25,
        batch_size: int = 20,
        test_batch_size: int | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str = "test",
        train_max_rows: int | None = 540_000,
        test_max_rows: int | None = 10_000,
        limit_train_examples: int | None = None,
        limit_test_examples: int | None = None,
        keep_oov: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
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
        for name, value in (("train_split", train_split), ("test_split", test_split)):
            if value not in SPLIT_NAMES:
                raise ConfigError(f"{name} must be one of {SPLIT_NAMES}, got {value!r}")
        if val_split is not None and val_split not in SPLIT_NAMES:
            raise ConfigError(f"val_split must be one of {SPLIT_NAMES} or null, got {val_split!r}")
        check_distinct_splits(train_split=train_split, val_split=val_split, test_split=test_split)
        for name, value in (
            ("train_max_rows", train_max_rows),
            ("test_max_rows", test_max_rows),
            ("limit_train_examples", limit_train_examples),
            ("limit_test_examples", limit_test_examples),
        ):
            check_positive_int(name, value, allow_none=True)
        self.save_hyperparameters()
        self._sentence_len = seq_len
        self._roles = {"train": train_split, "test": test_split}
        if val_split is not None:
            self._roles["val"] = val_split
        self._max_rows = {"train": train_max_rows, "val": test_max_rows, "test": test_max_rows}
        self._limits = {
            "train": limit_train_examples,
            "val": limit_test_examples,
            "test": limit_test_examples,
        }
        self._check_seed_draws(
            {
                "limit_train_examples": limit_train_examples,
                "limit_test_examples": limit_test_examples,
            }
        )

    @property
    def num_classes(self) -> int:
        """3 (neutral 0, contradiction 1, entailment 2)."""
        return 3

    @property
    def seq_len(self) -> int:
        """Total tokens of ``x``: premise ``seq_len`` + hypothesis ``seq_len``."""
        return 2 * self._sentence_len

    def _validation_set(self) -> str | None:
        split = self._roles.get("val")
        if split is None:
            return None
        return f"the SNLI {split} split" + self._subset_note("val", self._limits["val"])

    def _test_set_name(self) -> str:
        split = self._roles["test"]
        return f"the SNLI {split} split" + self._subset_note("test", self._limits["test"])

    def _candidates(self, split: str) -> list[Path]:
        return [
            (self.data_root / sub / f"snli_1.0_{split}.{ext}")
            for sub in SUBDIRS
            for ext in ("jsonl", "csv")
        ]

    def _split_file(self, split: str) -> Path:
        candidates = self._candidates(split)
        for path in candidates:
            if path.is_file():
                return path
        looked = "\n".join(f"  {p}" for p in candidates)
        hint = ""
        if split == "train" and any(p.is_file() for p in self._candidates("dev")):
            hint = (
                " The SNLI train split is missing but dev exists: train on it with "
                "--data.train_split dev (and test on test)."
            )
        raise data_not_found(
            f"SNLI {split} split not found",
            self.data_root,
            self._root_origin,
            f"looked for\n{looked}",
            "snli_1.0/",
            hint=hint,
            download=f"{SNLI_URL} (unzip it into the data root)",
        )

    def _sources(self) -> dict[str, Any]:
        return {role: file_fingerprint(self._split_file(s)) for role, s in self._roles.items()}

    def _options(self) -> dict[str, Any]:
        return {
            "seq_len": self._sentence_len,
            "roles": self._roles,
            "max_rows": self._max_rows,
            "limits": self._limits,
        }

    def _build(self, vocab: VocabularyBuilder) -> dict[str, Split]:
        out = {}
        for role in ("train", "val", "test"):
            if role not in self._roles:
                continue
            split = self._roles[role]
            path = self._split_file(split)
            name = str(path.relative_to(self.data_root))  # snli_1.0/snli_1.0_test.jsonl
            pairs, rows = read_snli_file(path, self._max_rows[role], name)
            if not rows:
                raise DataError(f"{path}: the SNLI {split} split is empty (no rows)")
            if not pairs:
                among = "first " if rows == self._max_rows[role] else ""
                raise DataError(
                    f"{path}: the SNLI {split} split has no gold-labelled pairs among its "
                    f"{among}{rows} rows; expected rows with gold_label "
                    f"{', '.join(map(repr, LABELS))}"
                )
            limit = self._limits[role]
            if limit is not None:
                pairs = [
                    pairs[i] for i in balanced_subset([p[2] for p in pairs], limit, self._seed)
                ]
            n = self._sentence_len
            premise = encode_texts([p[0] for p in pairs], clean_snli, vocab, n, f"SNLI {split} s1")
            hypothesis = encode_texts(
                [p[1] for p in pairs], clean_snli, vocab, n, f"SNLI {split} s2"
            )
            labels = torch.tensor([p[2] for p in pairs], dtype=torch.int64)
            names = [p[3] for p in pairs]
            out[role] = (torch.cat([premise, hypothesis], dim=1), labels, names)
        return out

    def _make_datasets(self, splits: dict[str, TokenIdsDataset]) -> None:
        self.train_set, self.test_set = splits["train"], splits["test"]
        self.val_set = splits.get("val")
