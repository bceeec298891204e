"""Tests of the word2vec text pipeline and the IMDB / SNLI data modules on tiny hand-made data
(plus one check on the real files in ``../shared/data`` or ``$EQPROP_DATA_DIR`` when present)."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import tarfile
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from nltk.tokenize import ToktokTokenizer

from eqprop_lightning.callbacks import PredictionWriter
from eqprop_lightning.cli import main
from eqprop_lightning.datamodules import imdb as imdb_module
from eqprop_lightning.datamodules import text as text_module
from eqprop_lightning.datamodules.data_root import ENV_VAR
from eqprop_lightning.datamodules.imdb import IMDBDataModule
from eqprop_lightning.datamodules.snli import SNLIDataModule, read_snli_file
from eqprop_lightning.datamodules.text import TokenIdsDataset
from eqprop_lightning.errors import ConfigError, DataError
from eqprop_lightning.io import temp_file_beside
from tests.test_resume import assert_resumed_like_straight, assert_same_optimizer_state

REPO_ROOT = Path(__file__).resolve().parents[1]

# fmt: off
WORDS = [
    "this", "movie", "was", "great", "!", "i", "loved", "it", ".", "wonderful", "story", ",",
    "really", "good", "plot", "is", "boring", "bad", "?", "terrible", "film_noir", "^_^", "film",
    "man", "sleeping", "outside", "running", "people", "are", "dog",
]
# fmt: on
PAD = ""  # padding position in the expected token lists

# Hand-written reviews: (relative path, text). Expected tokens below are written by hand.
REVIEWS = {
    # <b> dropped; <br /> becomes "br" (OOV here): "GREAT! I" -> "great ! br br i"; truncated.
    "train/pos/0_9.txt": "This movie was <b>GREAT</b>!<br /><br />I loved it.",
    # [bracketed] span removed; "a" is OOV (no stop words in word2vec) and dropped.
    "train/pos/1_8.txt": "A wonderful [spoiler removed] story, really good.",
    # apostrophes, ':' and the decoded '&' removed; "dont", "watch", "the", "actings" are OOV.
    "train/neg/0_2.txt": "Don't watch it: the plot is boring &amp; the acting's bad?",
    # the A-z typo keeps '_', '^' and '\\'; '/' is removed.
    "train/neg/1_1.txt": "Terrible film_noir ^_^ \\o/ , terrible.",
    "test/pos/0_10.txt": "Good good GOOD film.",
    "test/neg/0_1.txt": "<p>Bad.</p>",
    "test/neg/1_3.txt": "### ***",  # nothing survives: all padding
}
SEQ_LEN = 8
EXPECTED_TRAIN = [  # sorted file order: neg/0_2, neg/1_1, pos/0_9, pos/1_8
    ["it", "plot", "is", "boring", "bad", "?", PAD, PAD],
    ["terrible", "film_noir", "^_^", ",", "terrible", ".", PAD, PAD],
    ["this", "movie", "was", "great", "!", "i", "loved", "it"],
    ["wonderful", "story", ",", "really", "good", ".", PAD, PAD],
]
EXPECTED_TEST = [  # neg/0_1, pos/0_10, neg/1_3: the classes alternate
    ["bad", ".", PAD, PAD, PAD, PAD, PAD, PAD],
    ["good", "good", "good", "film", ".", PAD, PAD, PAD],
    [PAD] * 8,
]
EXPECTED_TRAIN_KEEP_OOV = [  # OOV tokens kept as zero vectors (id 0)
    ["dont", "watch", "it", "the", "plot", "is", "boring", "the"],
    ["terrible", "film_noir", "^_^", "\\o", ",", "terrible", ".", PAD],
    ["this", "movie", "was", "great", "!", "br", "br", "i"],
    ["a", "wonderful", "story", ",", "really", "good", ".", PAD],
]

SNLI_ROWS = [
    {
        "gold_label": "neutral",
        "sentence1": "A man is sleeping.",
        "sentence2": "The man is outside!",
    },
    {"gold_label": "-", "sentence1": "A dog.", "sentence2": "A dog."},
    {
        "gold_label": "contradiction",
        "sentence1": "Two dogs, running.",
        "sentence2": "Nobody is running?",
    },  # noqa: E501
    {
        "gold_label": "entailment",
        "sentence1": "People are outside.",
        "sentence2": "People are out.",
    },
]
SNLI_SEQ_LEN = 4
LABEL_OF = {"neutral": 0, "contradiction": 1, "entailment": 2}
EXPECTED_SNLI = [  # premise (4) + hypothesis (4); "a", "the", "two", "dogs", "nobody", "out" OOV
    ["man", "is", "sleeping", "."] + ["man", "is", "outside", "!"],
    ["running", ".", PAD, PAD] + ["is", "running", "?", PAD],
    ["people", "are", "outside", "."] + ["people", "are", ".", PAD],
]


def _vector(word: str) -> np.ndarray:
    """Deterministic 300-d vector per word (distinct rows, none zero)."""
    rng = np.random.default_rng(sum(map(ord, word)) * 1000 + len(word))
    return (rng.standard_normal(300) + 0.1).astype(np.float32)


@pytest.fixture
def w2v_file(tmp_path: Path) -> Path:
    """A word2vec text-format file with the 30 test words."""
    kv = KeyedVectors(vector_size=300)
    kv.add_vectors(WORDS, np.stack([_vector(w) for w in WORDS]))
    path = tmp_path / "w2v" / "tiny-vectors.txt"
    path.parent.mkdir()
    kv.save_word2vec_format(str(path), binary=False)
    return path


def _write_imdb(root: Path) -> Path:
    for rel, content in REVIEWS.items():
        path = root / "aclImdb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def imdb_root(tmp_path: Path) -> Path:
    """A tiny ``aclImdb`` folder."""
    return _write_imdb(tmp_path / "imdb_root")


@pytest.fixture
def imdb_tar_root(tmp_path: Path) -> Path:
    """A data root holding only a tiny ``aclImdb_v1.tar.gz``, its members in reverse order (the
    Stanford tarball is not sorted; ``tar.add`` would write them sorted)."""
    src = _write_imdb(tmp_path / "src")
    root = tmp_path / "tar_root"
    root.mkdir()
    with tarfile.open(root / "aclImdb_v1.tar.gz", "w:gz") as tar:
        for path in sorted((src / "aclImdb").rglob("*.txt"), reverse=True):
            tar.add(path, arcname=str(path.relative_to(src)))
    return root


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def snli_root(tmp_path: Path) -> Path:
    """A tiny ``snli_1.0`` folder with dev and test splits (no train, as offline)."""
    root = tmp_path / "snli_root"
    for split in ("dev", "test"):
        _write_jsonl(root / "snli_1.0" / f"snli_1.0_{split}.jsonl", SNLI_ROWS)
    return root


def _tokens(dm, ids: torch.Tensor) -> list[list[str]]:
    vocab = dm.vocabulary
    return [[vocab[i - 1] if i else PAD for i in row] for row in ids.tolist()]


def _imdb(root: Path, w2v: Path, **kwargs) -> IMDBDataModule:
    kwargs.setdefault("seq_len", SEQ_LEN)
    dm = IMDBDataModule(data_dir=str(root), embeddings=str(w2v), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_cleaning_and_tokenizing_by_hand() -> None:
    assert text_module.clean_imdb("a<br />b [x] it's 5/10, ok?!") == "a br b  its 5 10, ok ?  ! "
    assert text_module.clean_imdb("x_y^z`w\\v") == "x_y^z`w\\v"  # the A-z typo keeps these
    assert text_module.clean_snli("Hi, there.Yes!") == "Hi there . Yes ! "
    assert text_module.clean_snli(float("nan")) == " "
    assert text_module.tokenize("Great MOVIE, really!") == ["great", "movie", ",", "really", "!"]


def test_imdb_line_breaks_separate_words() -> None:
    """The Stanford reviews break lines with ``<br />``; BeautifulSoup's text glues the words on
    either side ("movie.the", out of vocabulary: both words were lost), and Toktok leaves a
    period on a word inside the text ("movie.", out of vocabulary), where Keras's text, the
    original's source, has the words alone, and a word ``br`` for each line break (it became
    a space, which dropped that word)."""
    tokens = text_module.tokenize(text_module.clean_imdb("A fine movie.<br /><br />The end"))
    assert tokens == ["a", "fine", "movie", ".", "br", "br", "the", "end"]
    tokens = text_module.tokenize(text_module.clean_imdb("Good. Really good... 7.5 of 10."))
    assert tokens == ["good", ".", "really", "good", ".", ".", ".", "7", ".", "5", "of", "10", "."]
    assert text_module.tokenize(text_module.clean_imdb("good<BR/>plot<br>x")) == [
        "good",
        "br",
        "plot",
        "br",
        "x",
    ]


def test_imdb_removed_characters_and_question_marks_separate_words() -> None:
    """Where Keras's text, the original's source, has two words (Stanford's ``imdb.vocab`` has
    no word with ``/ ; : "`` and ``?`` only alone), the Stanford text gave one, out of
    vocabulary: the filter removed the character between them (``5/10`` -> ``510``) and Toktok
    splits a ``?`` off only at the end of the text (``good?i``). ``'`` and ``-`` are removed
    inside words, as the original removes them from Keras's words."""
    tokens = text_module.tokenize(text_module.clean_imdb('Is it good?I think; 5/10 "sci-fi"'))
    assert tokens == ["is", "it", "good", "?", "i", "think", "5", "10", "scifi"]
    assert text_module.tokenize(text_module.clean_imdb("Did you like it?? No:")) == [
        "did",
        "you",
        "like",
        "it",
        "?",
        "?",
        "no",
    ]
    assert text_module.tokenize(text_module.clean_imdb("don't # stop")) == ["dont", "stop"]


def test_imdb_dashes_separate_words_where_hyphens_join_them() -> None:
    """``good--bad`` was ``goodbad``, out of vocabulary (``imdb.vocab`` has no word holding
    ``--``): two words lost in about one review in 26."""
    tokens = text_module.tokenize(text_module.clean_imdb("good--bad, well-made---end"))
    assert tokens == ["good", "bad", ",", "wellmade", "end"]


def test_a_text_word2vec_file_with_a_non_utf8_word_is_still_text(tmp_path: Path) -> None:
    """Its numbers tell the format; the old check decoded the line strictly and called the
    file binary, whose reader's error then named the wrong format."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"2 3\n\xe9t\xe9 0.1 0.2 0.3\nfilm 0.4 0.5 0.6\n")
    assert text_module.word2vec_is_binary(str(path)) is False


def test_imdb_pipeline_exact_ids(imdb_root: Path, w2v_file: Path) -> None:
    dm = _imdb(imdb_root, w2v_file)
    assert dm.num_classes == 2 and dm.seq_len == SEQ_LEN and dm.embed_dim == 300
    train, test = dm.train_set, dm.test_set
    assert train.ids.dtype == torch.int32 and train.ids.shape == (4, SEQ_LEN)
    assert _tokens(dm, train.ids) == EXPECTED_TRAIN
    assert _tokens(dm, test.ids) == EXPECTED_TEST
    assert train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0, 1, 0]
    # each example's name is its file under the data root
    assert train.names == [
        f"aclImdb/train/{n}.txt" for n in ("neg/0_2", "neg/1_1", "pos/0_9", "pos/1_8")
    ]
    assert test.names == [
        "aclImdb/test/neg/0_1.txt",
        "aclImdb/test/pos/0_10.txt",
        "aclImdb/test/neg/1_3.txt",
    ]
    # ids are assigned in order of first use: the first review's words get 1..6
    assert train.ids[0].tolist() == [1, 2, 3, 4, 5, 6, 0, 0]
    used = {w for row in EXPECTED_TRAIN + EXPECTED_TEST for w in row if w}
    assert sorted(dm.vocabulary) == sorted(used) and dm.vocab_size == len(used) + 1
    weight = dm.embedding_matrix
    assert weight.dtype == torch.float32 and weight.shape == (len(used) + 1, 300)
    assert torch.all(weight[0] == 0)
    for i, word in enumerate(dm.vocabulary, start=1):
        assert torch.equal(weight[i], torch.from_numpy(_vector(word)))
    assert dm.val_dataloader().dataset is test  # val_size=0: evaluate the test set, as the original
    assert dm.evaluation_sets == {"test": "the IMDB test reviews"}


def test_imdb_keep_oov(imdb_root: Path, w2v_file: Path, tmp_path: Path) -> None:
    dm = _imdb(imdb_root, w2v_file, keep_oov=True, cache_dir=str(tmp_path / "c"))
    kept = [[w if w in WORDS else PAD for w in row] for row in EXPECTED_TRAIN_KEEP_OOV]
    assert _tokens(dm, dm.train_set.ids) == kept  # OOV positions hold id 0 (a zero vector)


def test_imdb_tar_archive_matches_folder(
    imdb_root: Path, imdb_tar_root: Path, w2v_file: Path
) -> None:
    from_folder = _imdb(imdb_root, w2v_file)
    from_tar = _imdb(imdb_tar_root, w2v_file)
    assert torch.equal(from_tar.train_set.ids, from_folder.train_set.ids)
    assert torch.equal(from_tar.test_set.ids, from_folder.test_set.ids)
    assert from_tar.train_set.names == from_folder.train_set.names
    assert from_tar.test_set.names == from_folder.test_set.names
    assert not (imdb_tar_root / "aclImdb").exists()  # read from the archive, never extracted
    assert (imdb_tar_root / "cache").is_dir()  # default cache dir: <data root>/cache


def test_cache_is_reused(imdb_root: Path, w2v_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _imdb(imdb_root, w2v_file)
    cache_files = list((imdb_root / "cache").glob("imdb-*.pt"))
    assert len(cache_files) == 1 and cache_files[0] == first.cache_path()
    assert not list((imdb_root / "cache").glob(".*tmp"))  # atomic write left no temp file

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ToktokTokenizer, "tokenize", fail)
    monkeypatch.setattr(text_module, "load_embeddings", fail)
    second = _imdb(imdb_root, w2v_file)
    assert torch.equal(second.train_set.ids, first.train_set.ids)
    assert torch.equal(second.embedding_matrix, first.embedding_matrix)
    # other options give another cache entry (and would rebuild)
    other = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file), seq_len=5)
    assert other.cache_path() != first.cache_path()
    with pytest.raises(AssertionError, match="cache should have been used"):
        other.setup("fit")


def test_cache_sees_a_review_rewritten_in_place(imdb_root: Path, w2v_file: Path) -> None:
    """Rewriting a review changes neither its folder's size nor its mtime: the cache was reused."""
    cached = _imdb(imdb_root, w2v_file).cache_path()
    review = imdb_root / "aclImdb" / "train" / "pos" / "0_9.txt"
    before = review.stat()
    review.write_text("Terrible terrible film.")
    os.utime(review, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    second = _imdb(imdb_root, w2v_file)
    assert second.cache_path() != cached
    assert (
        _tokens(second, second.train_set.ids)[2]
        == ["terrible", "terrible", "film", "."] + [PAD] * 4
    )


def test_imdb_limits_and_val_split(imdb_root: Path, w2v_file: Path) -> None:
    whole = _imdb(imdb_root, w2v_file)
    dm = _imdb(imdb_root, w2v_file, limit_train_examples=2, limit_test_examples=2, val_size=1)
    assert sorted(dm.test_set.labels.tolist()) == [0, 1]  # class-balanced subsets
    # the names follow the subsets: each names the review its tokens and label come from
    for subset, full in ((dm.test_set, whole.test_set), (dm.train_set.dataset, whole.train_set)):
        tokens, all_tokens = _tokens(dm, subset.ids), _tokens(whole, full.ids)
        for i, name in enumerate(subset.names):
            assert subset.labels[i] == ("/pos/" in name)
            assert tokens[i] == all_tokens[full.names.index(name)]
    assert dm.evaluation_sets["test"] == "the IMDB test reviews (2, a class-balanced subset)"
    # a limit above the split's size: the whole split, not a subset (3 test reviews)
    more = _imdb(imdb_root, w2v_file, limit_test_examples=2000)
    assert more.evaluation_sets["test"] == (
        "the IMDB test reviews (all 3: the limit 2000 is above the split's size)"
    )
    base = dm.train_set.dataset
    assert sorted(base.labels.tolist()) == [0, 1]
    assert len(dm.train_set) == 1 and len(dm.val_set) == 1
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    # with a validation split each epoch evaluates it, then the test set
    assert list(dm.evaluation_sets) == ["val", "test"]
    assert [loader.dataset for loader in dm.val_dataloader()] == [dm.val_set, dm.test_set]
    with pytest.raises(ConfigError, match="val_size"):
        _imdb(imdb_root, w2v_file, val_size=4)
    with pytest.raises(ConfigError, match="seq_len"):
        IMDBDataModule(seq_len=0)


@pytest.mark.parametrize(
    "labels, order",
    [
        ([0, 0, 0, 1, 1, 1], [0, 3, 1, 4, 2, 5]),
        ([0, 0, 0, 0, 1, 1], [0, 4, 1, 5, 2, 3]),  # then the larger class
        ([2, 0, 1, 0, 2, 1], [1, 2, 0, 3, 5, 4]),
        ([], []),
    ],
)
def test_alternate_classes(labels: list[int], order: list[int]) -> None:
    assert text_module.alternate_classes(labels) == order


def test_a_cut_short_imdb_evaluation_measures_both_classes(imdb_root: Path, w2v_file: Path) -> None:
    """The reviews are read neg/ then pos/: evaluated in that order, half the test set (or the
    validation set) was one class alone."""
    for split in ("train", "test"):
        for name in ("neg", "pos"):
            for i in range(2, 6):
                (imdb_root / "aclImdb" / split / name / f"{i}_{i}.txt").write_text("Good film.")
    dm = _imdb(imdb_root, w2v_file, val_size=4, batch_size=2)
    # 6 neg and 5 pos reviews: alternating, then the last neg
    assert [y.argmax(1).tolist() for _, y in dm.test_dataloader()] == [[0, 1]] * 5 + [[0]]
    held_out = dm.val_set.indices
    assert sorted(dm.val_set.dataset.labels[held_out].tolist()) == [0, 0, 1, 1]  # seed 0
    assert [y.argmax(1).tolist() for _, y in dm.val_dataloader()[0]] == [[0, 1], [0, 1]]


def test_batches_are_embedded(imdb_root: Path, w2v_file: Path) -> None:
    dm = _imdb(imdb_root, w2v_file, batch_size=4)
    ids, y = next(iter(dm.test_dataloader()))
    assert ids.dtype == torch.int64 and ids.shape == (3, SEQ_LEN)
    assert y.dtype == torch.float32 and y.tolist() == [[1, 0], [0, 1], [1, 0]]
    x, y2 = dm.on_after_batch_transfer((ids, y), 0)
    assert x.shape == (3, SEQ_LEN, 300) and x.dtype == torch.float32 and y2 is y
    for b, row in enumerate(EXPECTED_TEST):
        for t, word in enumerate(row):
            expected = torch.zeros(300) if word == PAD else torch.from_numpy(_vector(word))
            assert torch.equal(x[b, t], expected)
    assert torch.equal(dm.embed(ids[0]), x[0])


class _Probe(L.LightningModule):
    """Records the batches Lightning hands to ``training_step``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[torch.Size, torch.dtype]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((x.shape, x.dtype))
        return (self.w * x.sum()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_trainer_receives_embedded_batches(snli_root: Path, w2v_file: Path) -> None:
    dm = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN,
        train_split="dev", batch_size=2,
    )  # fmt: skip
    model = _Probe()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert model.seen == [(torch.Size([2, 2 * SNLI_SEQ_LEN, 300]), torch.float32)]


class _Predictor(L.LightningModule):
    """Predicts class 0 for every example (what ``eqprop predict`` writes, without a net)."""

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        return {"prediction": torch.zeros(len(x), dtype=torch.long), "output": x.sum((1, 2))}


def test_predictions_name_each_review(imdb_root: Path, w2v_file: Path, tmp_path: Path) -> None:
    """predictions.pt names the review of each row, in the test set's (alternating) order."""
    dm = IMDBDataModule(
        data_dir=str(imdb_root), embeddings=str(w2v_file), seq_len=SEQ_LEN, test_batch_size=2
    )
    path = tmp_path / "predictions.pt"
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[PredictionWriter(str(path))],
    )  # fmt: skip
    trainer.predict(_Predictor(), datamodule=dm, return_predictions=False)
    written = torch.load(path, weights_only=True)
    assert written["index"].tolist() == [0, 1, 2]
    assert written["name"] == [
        "aclImdb/test/neg/0_1.txt", "aclImdb/test/pos/0_10.txt", "aclImdb/test/neg/1_3.txt"
    ]  # fmt: skip


def test_snli_val_split_is_evaluated_before_the_test_split(snli_root: Path, w2v_file: Path) -> None:
    _write_jsonl(snli_root / "snli_1.0" / "snli_1.0_train.jsonl", SNLI_ROWS)
    dm = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN,
        train_split="train", val_split="dev",
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.evaluation_sets == {"val": "the SNLI dev split", "test": "the SNLI test split"}
    assert [loader.dataset for loader in dm.val_dataloader()] == [dm.val_set, dm.test_set]


@pytest.mark.parametrize(
    "splits, roles",
    [
        ({"train_split": "dev", "val_split": "dev"}, "train_split and val_split are both 'dev'"),
        ({"train_split": "test"}, "train_split and test_split are both 'test'"),
        ({"train_split": "dev", "val_split": "test"}, "val_split and test_split are both 'test'"),
    ],
)
def test_snli_splits_must_differ(snli_root: Path, splits: dict, roles: str) -> None:
    """A validation or test split that is trained on, or a validation split that is the test
    split, would choose or report on seen data: refused before any file is read."""
    with pytest.raises(ConfigError, match=roles):
        SNLIDataModule(data_dir=str(snli_root), **splits)


def test_snli_labels_and_ids(snli_root: Path, w2v_file: Path) -> None:
    dm = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN, train_split="dev"
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.seq_len == 2 * SNLI_SEQ_LEN and dm.embed_dim == 300
    for dataset, split in ((dm.train_set, "dev"), (dm.test_set, "test")):
        assert dataset.labels.tolist() == [0, 1, 2]  # '-' dropped
        assert _tokens(dm, dataset.ids) == EXPECTED_SNLI
        assert dataset.names == [f"snli_1.0/snli_1.0_{split}.jsonl:{n}" for n in (1, 3, 4)]
    ids, y = next(iter(dm.val_dataloader()))  # no val_split: evaluate the test split
    assert dm.evaluation_sets == {"test": "the SNLI test split"}
    assert ids.shape == (3, 2 * SNLI_SEQ_LEN) and y.argmax(1).tolist() == [0, 1, 2]
    cut = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN,
        train_split="dev", limit_test_examples=2,
    )  # fmt: skip
    cut.setup("fit")
    assert cut.evaluation_sets == {"test": "the SNLI test split (2, a class-balanced subset)"}


def test_snli_csv_form(snli_root: Path, w2v_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "csv_root"
    (root / "snli_data").mkdir(parents=True)
    header = "gold_label,sentence1,sentence2\n"
    lines = [f'{r["gold_label"]},"{r["sentence1"]}","{r["sentence2"]}"\n' for r in SNLI_ROWS]
    for split in ("train", "test"):
        (root / "snli_data" / f"snli_1.0_{split}.csv").write_text(header + "".join(lines))
    dm = SNLIDataModule(data_dir=str(root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN)
    dm.setup("fit")
    assert _tokens(dm, dm.train_set.ids) == EXPECTED_SNLI
    assert dm.train_set.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_snli_file_with_a_utf8_bom_is_read(tmp_path: Path, suffix: str) -> None:
    """Files saved by spreadsheet programs start with a UTF-8 byte order mark, which pandas (the
    original's reader) skips; the CSV's first column was read as '\\ufeffgold_label' and the
    file refused as lacking 'gold_label', the JSON lines file as not JSON."""
    path = tmp_path / f"snli_1.0_dev{suffix}"
    row = {"gold_label": "neutral", "sentence1": "A man.", "sentence2": "A dog."}
    body = (
        "gold_label,sentence1,sentence2\nneutral,A man.,A dog.\n"
        if suffix == ".csv"
        else json.dumps(row) + "\n" + json.dumps({**row, "gold_label": "entailment"}) + "\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    name = path.name
    expected = [("A man.", "A dog.", 0, f"{name}:2" if suffix == ".csv" else f"{name}:1")]
    expected += [("A man.", "A dog.", 2, f"{name}:2")] if suffix == ".jsonl" else []
    assert read_snli_file(path) == (expected, len(expected))


def test_snli_csv_rows_are_named_by_the_line_where_they_start(tmp_path: Path) -> None:
    """Blank lines (skipped by csv) and a quoted line break inside a row do not shift the names:
    each row is named by the line where it starts."""
    path = tmp_path / "snli_1.0_test.csv"
    path.write_text(
        "gold_label,sentence1,sentence2\nneutral,A man.,A dog.\n\n\n"
        'entailment,"Two\nlines.",Yes.\ncontradiction,A cat.,No cat.\n'
    )
    pairs, rows = read_snli_file(path, name="snli_data/snli_1.0_test.csv")
    assert rows == 3
    assert [p[3] for p in pairs] == [f"snli_data/snli_1.0_test.csv:{n}" for n in (2, 5, 7)]


def test_snli_missing_train_suggests_dev(snli_root: Path, w2v_file: Path) -> None:
    dm = SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "snli_1.0_train.jsonl" in message and "--data.train_split dev" in message
    assert message.endswith(
        "Download: https://nlp.stanford.edu/projects/snli/snli_1.0.zip (unzip it into the data "
        "root)"
    )
    with pytest.raises(ConfigError, match="train_split"):
        SNLIDataModule(train_split="validation")


def test_snli_malformed_json_names_file_and_line(snli_root: Path, w2v_file: Path) -> None:
    path = snli_root / "snli_1.0" / "snli_1.0_test.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # cut the closing of the third record
    path.write_text("\n".join(lines) + "\n")
    dm = SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev")
    with pytest.raises(DataError) as info:
        dm.prepare_data()  # before Lightning creates the run directory
    assert str(info.value) == (
        f"{path}, line 3: malformed JSON (the line ends early (truncated?)); expected one JSON "
        "object per line"
    )
    lines[2] = '{"gold_label": "neutral" "sentence1": "A.", "sentence2": "B."}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        SNLIDataModule(
            data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev"
        ).prepare_data()
    assert str(info.value) == (
        f"{path}, line 3: malformed JSON (Expecting ',' delimiter at character 26 of 62); "
        "expected one JSON object per line"
    )


def _snli_lines(rows: list) -> list[bytes]:
    return [(r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows]


BAD_SNLI_JSONL = [
    # (id, lines of the test file, expected message after "<file>, line <n>: ", n)
    ("missing-field", _snli_lines([SNLI_ROWS[0], {"gold_label": "neutral", "sentence1": "A."}]),
     "expected a JSON object with the fields ('gold_label', 'sentence1', 'sentence2')", 2),
    ("not-an-object", _snli_lines([SNLI_ROWS[0], "", "[1, 2]"]), "got list", 3),
    ("bad-label", _snli_lines([SNLI_ROWS[0], {**SNLI_ROWS[2], "gold_label": "entailed"}]),
     "gold_label 'entailed', expected one of 'neutral', 'contradiction', 'entailment' or '-'", 2),
    ("null-label", _snli_lines([{**SNLI_ROWS[0], "gold_label": None}]), "gold_label None", 1),
    ("not-utf8", _snli_lines(SNLI_ROWS[:2]) + [b'{"gold_label": "neutral\xff"}\n'],
     "not UTF-8 text", 3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected", "lineno"),
    [c[1:] for c in BAD_SNLI_JSONL],
    ids=[c[0] for c in BAD_SNLI_JSONL],
)
def test_snli_bad_jsonl_names_file_and_line(
    snli_root: Path, w2v_file: Path, lines: list[bytes], expected: str, lineno: int
) -> None:
    path = snli_root / "snli_1.0" / "snli_1.0_test.jsonl"
    path.write_bytes(b"".join(lines))
    dm = SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev")
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert message.startswith(f"{path}, line {lineno}: ") and expected in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "gold_label,sentence1\nneutral,A man.\n",
            "line 1: the CSV header lacks the column(s) ['sentence2']",
        ),
        (
            "gold_label,sentence1,sentence2\nneutral,A man.,A dog.\nneutral,A man.\n",
            "line 3: the row has fewer fields than the header",
        ),
        (
            "gold_label,sentence1,sentence2\nneutral,A man.,A dog.\nfoo,A man.,A dog.\n",
            "line 3: gold_label 'foo', expected one of",
        ),
        (  # an unterminated quote swallows the rest of the file into one field
            'gold_label,sentence1,sentence2\nneutral,"A man.,A dog.\n' + "x" * 200_000,
            "line 2: malformed CSV (field larger than field limit",
        ),
    ],
    ids=["header", "short-row", "bad-label", "malformed"],
)
def test_snli_bad_csv_names_file_and_line(
    snli_root: Path, w2v_file: Path, content: str, expected: str
) -> None:
    path = snli_root / "snli_1.0" / "snli_1.0_dev.csv"
    path.write_text(content)
    (snli_root / "snli_1.0" / "snli_1.0_dev.jsonl").unlink()  # the .csv is now the dev split
    dm = SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev")
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    assert str(info.value).startswith(f"{path}, ") and expected in str(info.value)


def test_snli_empty_split_names_file(snli_root: Path, w2v_file: Path) -> None:
    path = snli_root / "snli_1.0" / "snli_1.0_dev.jsonl"
    _write_jsonl(path, [SNLI_ROWS[1]] * 3)  # only '-' labels: nothing left after dropping
    dm = SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev")
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    assert str(info.value) == (
        f"{path}: the SNLI dev split has no gold-labelled pairs among its 3 rows; expected rows "
        "with gold_label 'neutral', 'contradiction', 'entailment'"
    )
    capped = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev", train_max_rows=2
    )
    with pytest.raises(DataError, match="no gold-labelled pairs among its first 2 rows"):
        capped.prepare_data()
    for empty in ("\n\n", ""):  # blank lines only, no bytes at all
        path.write_text(empty)
        with pytest.raises(DataError) as info:
            SNLIDataModule(
                data_dir=str(snli_root), embeddings=str(w2v_file), train_split="dev"
            ).prepare_data()
        assert str(info.value) == f"{path}: the SNLI dev split is empty (no rows)"


def test_imdb_missing_data_lists_paths(tmp_path: Path, w2v_file: Path) -> None:
    dm = IMDBDataModule(data_dir=str(tmp_path / "nowhere"), embeddings=str(w2v_file))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert message.startswith(
        "IMDB data not found (none of aclImdb/, aclImdb_v1.tar.gz and Keras's files is in the "
        "data root)"
    )
    for part in ("aclImdb/train/pos", "aclImdb/test/neg", "aclImdb_v1.tar.gz", "--data.data_dir"):
        assert part in message
    keras = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    assert message.endswith(
        "Download: https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz (into the "
        f"data root, as it is or extracted), or {keras}imdb.npz and {keras}imdb_word_index.json"
    )
    keras = IMDBDataModule(data_dir=str(tmp_path), embeddings=str(w2v_file), source="keras")
    with pytest.raises(FileNotFoundError, match=r"IMDB data not found \(missing Keras files: "):
        keras.prepare_data()


@pytest.mark.parametrize(
    ("source", "listed", "not_listed"),
    [
        ("keras", ["imdb.npz", "imdb_word_index.json"], ["aclImdb/train/pos", "aclImdb_v1"]),
        ("stanford", ["aclImdb/train/pos", "aclImdb_v1.tar.gz"], ["imdb.npz"]),
    ],
)
def test_imdb_missing_data_lists_only_what_the_source_reads(
    source: str, listed: list[str], not_listed: list[str], tmp_path: Path, w2v_file: Path
) -> None:
    """The old message listed every source's paths and advice for the Stanford ones whatever
    ``source`` was asked for, and never named ``--data.source``."""
    dm = IMDBDataModule(data_dir=str(tmp_path), embeddings=str(w2v_file), source=source)
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert f"with source='{source}' looked for" in message
    assert "--data.source (auto, stanford, keras)" in message
    assert all(p in message for p in listed)
    assert not any(p in message for p in not_listed)
    keras = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    assert message.endswith(
        f"Download: {keras}imdb.npz and {keras}imdb_word_index.json"
        if source == "keras"
        else "Download: https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz (into the "
        "data root, as it is or extracted)"
    )


def test_imdb_truncated_archive_names_file(imdb_tar_root: Path, w2v_file: Path) -> None:
    archive = imdb_tar_root / "aclImdb_v1.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    dm = IMDBDataModule(data_dir=str(imdb_tar_root), embeddings=str(w2v_file))
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        dm.prepare_data()
    assert str(archive) in str(info.value)
    archive.write_bytes(b"this is not a gzip file")
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        IMDBDataModule(data_dir=str(imdb_tar_root), embeddings=str(w2v_file)).prepare_data()
    assert str(archive) in str(info.value)


def test_a_partly_extracted_imdb_folder_is_warned_of(imdb_root: Path, w2v_file: Path) -> None:
    """A folder with fewer than the 12,500 reviews per class and split (an interrupted
    extraction) was read as the data set, without a word."""
    dm = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file))
    with pytest.warns(UserWarning) as caught:
        dm.prepare_data()
    partial = [str(w.message) for w in caught if "partly extracted" in str(w.message)]
    url = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    assert partial == [
        f"IMDB {split} split in {imdb_root / 'aclImdb'} has {counts} reviews, the complete data "
        f"12,500 per class: is the folder partly extracted? Extract aclImdb_v1.tar.gz again "
        f"({url})."
        for split, counts in (("train", {"neg": 2, "pos": 2}), ("test", {"neg": 2, "pos": 1}))
    ]
    (imdb_root / "aclImdb_v1.tar.gz").write_bytes(b"")  # an archive beside it: read that instead
    with pytest.warns(UserWarning, match="Delete it to read aclImdb_v1.tar.gz, or extract"):
        IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file), seq_len=7).prepare_data()


def test_imdb_incomplete_split_names_folder(imdb_root: Path, w2v_file: Path) -> None:
    for review in (imdb_root / "aclImdb" / "test" / "pos").iterdir():
        review.unlink()
    dm = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file))
    with pytest.raises(DataError, match=r"IMDB test split .* is incomplete") as info:
        dm.prepare_data()
    assert str(imdb_root / "aclImdb") in str(info.value)
    assert "aclImdb/test/pos/*.txt" in str(info.value)


def test_embeddings_errors(
    imdb_root: Path, w2v_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gensim.downloader

    def offline(name: str):
        raise ConnectionError("simulated: no network")

    monkeypatch.setattr(gensim.downloader, "load", offline)
    dm = IMDBDataModule(data_dir=str(imdb_root))  # no word2vec/ under the root, no network
    with pytest.raises(FileNotFoundError, match="--data.embeddings") as info:
        dm.prepare_data()
    assert "word2vec-google-news-300" in str(info.value)
    with pytest.raises(FileNotFoundError, match="--data.embeddings"):
        IMDBDataModule(data_dir=str(imdb_root), embeddings="/no/such/vectors.bin").prepare_data()
    binary = w2v_file.with_name("tiny.bin")
    KeyedVectors.load_word2vec_format(str(w2v_file)).save_word2vec_format(str(binary), binary=True)
    corrupt = {
        "bad.txt": b"not a word2vec file\n",
        "short.txt": w2v_file.read_bytes()[: w2v_file.stat().st_size // 2],
        "short.bin": binary.read_bytes()[: binary.stat().st_size // 2],
        "garbage.bin.gz": b"this is not a gzip file",
        "short.txt.gz": gzip.compress(w2v_file.read_bytes())[:5000],
    }
    for name, content in corrupt.items():
        bad = w2v_file.with_name(name)
        bad.write_bytes(content)
        with pytest.raises(DataError, match="Could not read word2vec embeddings") as info:
            IMDBDataModule(data_dir=str(imdb_root), embeddings=str(bad)).prepare_data()
        assert str(bad) in str(info.value)
    # the format is told by the content, not the name: a text file named .bin reads as text
    as_bin = w2v_file.with_name("text-format.bin")
    as_bin.write_bytes(w2v_file.read_bytes())
    dm = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(as_bin), seq_len=SEQ_LEN)
    dm.prepare_data()
    dm.setup("fit")
    assert _tokens(dm, dm.train_set.ids) == EXPECTED_TRAIN
    # vectors of none of the data's words: every input would be zeros
    other = KeyedVectors(vector_size=300)
    other.add_vectors(["zzz", "qqq"], np.stack([_vector("zzz"), _vector("qqq")]))
    unrelated = w2v_file.with_name("unrelated.txt")
    other.save_word2vec_format(str(unrelated), binary=False)
    with pytest.raises(DataError, match="None of the IMDB tokens is in the embeddings") as info:
        IMDBDataModule(data_dir=str(imdb_root), embeddings=str(unrelated)).prepare_data()
    assert str(unrelated) in str(info.value)
    # a few words: 3 of the 4 training reviews keep none of them
    other.add_vectors(["good"], _vector("good")[None])
    few = w2v_file.with_name("few.txt")
    other.save_word2vec_format(str(few), binary=False)
    with pytest.warns(UserWarning, match=r"3 of the 4 training examples keep no token .*1 words"):
        IMDBDataModule(data_dir=str(imdb_root), embeddings=str(few)).prepare_data()
    # the default file under the data root is used when present
    default = imdb_root / "word2vec" / "GoogleNews-vectors-negative300-subset.bin"
    default.parent.mkdir()
    KeyedVectors.load_word2vec_format(str(w2v_file)).save_word2vec_format(str(default), binary=True)
    dm = IMDBDataModule(data_dir=str(imdb_root), seq_len=SEQ_LEN)
    dm.setup("fit")
    assert _tokens(dm, dm.train_set.ids) == EXPECTED_TRAIN


def _first_batch(dm) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training batch as the model receives it (embedded)."""
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def test_imdb_example_shape_and_num_classes_match_a_batch(imdb_root: Path, w2v_file: Path) -> None:
    dm = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file), seq_len=SEQ_LEN)
    shape, classes = dm.example_shape, dm.num_classes  # known before any data is read
    assert shape == (SEQ_LEN, 300) and classes == 2
    dm.prepare_data()
    dm.setup("fit")
    x, y = _first_batch(dm)
    assert shape == tuple(x[0].shape) and classes == y.shape[1]


def test_snli_example_shape_and_num_classes_match_a_batch(snli_root: Path, w2v_file: Path) -> None:
    dm = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN, train_split="dev"
    )
    shape, classes = dm.example_shape, dm.num_classes
    assert shape == (2 * SNLI_SEQ_LEN, 300) and classes == 3  # premise + hypothesis tokens
    dm.prepare_data()
    dm.setup("fit")
    x, y = _first_batch(dm)
    assert shape == tuple(x[0].shape) and classes == y.shape[1]


@pytest.mark.parametrize("fmt", ["text", "binary", "text.gz"])
def test_example_shape_reads_the_embeddings_dimension(
    imdb_root: Path, tmp_path: Path, fmt: str
) -> None:
    kv = KeyedVectors(vector_size=50)
    kv.add_vectors(WORDS, np.stack([_vector(w)[:50] for w in WORDS]))
    suffix = {"text": ".txt", "binary": ".bin", "text.gz": ".txt.gz"}[fmt]
    path = tmp_path / f"vectors-50{suffix}"
    kv.save_word2vec_format(str(path), binary=fmt == "binary")
    dm = IMDBDataModule(data_dir=str(imdb_root), embeddings=str(path), seq_len=SEQ_LEN)
    assert dm.example_shape == (SEQ_LEN, 50)  # from the file's first line
    dm.prepare_data()
    dm.setup("fit")
    assert dm.example_shape == tuple(_first_batch(dm)[0][0].shape) == (SEQ_LEN, 50)


def test_example_shape_without_an_embeddings_file(imdb_root: Path, tmp_path: Path) -> None:
    def shape(embeddings):
        return IMDBDataModule(data_dir=str(imdb_root), embeddings=embeddings).example_shape

    assert shape(None) == (600, 300)  # the gensim-data default, word2vec-google-news-300
    assert shape("glove-twitter-25") == (600, 25)  # a gensim-data name's dimension suffix
    assert shape("/no/such/vectors.bin") == (600, 300)  # prepare_data reports the missing file
    headerless = tmp_path / "headerless.txt"
    headerless.write_text("movie 0.1 0.2\n")
    assert shape(str(headerless)) == (600, 300)


#: the 300-d word2vec subset of ``../shared/data``
WORD2VEC = "GoogleNews-vectors-negative300-subset.bin"


def real_text_root() -> Path:
    """``../shared/data`` (or ``$EQPROP_DATA_DIR``); skips when its text files are absent."""
    root = Path(os.environ.get(ENV_VAR) or REPO_ROOT.parent / "shared" / "data")
    needed = [
        root / "aclImdb_v1.tar.gz",
        root / "word2vec" / WORD2VEC,
        root / "snli_1.0" / "snli_1.0_dev.jsonl",
        root / "snli_1.0" / "snli_1.0_test.jsonl",
    ]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"real IMDB/SNLI/word2vec files not found under {root}")
    return root


def test_real_data_if_present(tmp_path: Path) -> None:
    root = real_text_root()
    cache = str(tmp_path / "cache")
    imdb = IMDBDataModule(
        data_dir=str(root), limit_train_examples=200, limit_test_examples=200, cache_dir=cache
    )
    imdb.setup("fit")
    assert imdb.train_set.ids.shape == (200, 600) and imdb.test_set.ids.shape == (200, 600)
    assert imdb.train_set.labels.sum() == 100 and imdb.test_set.labels.sum() == 100
    lengths = (imdb.train_set.ids != 0).sum(1)
    assert (lengths > 20).float().mean() > 0.95
    x, y = imdb.on_after_batch_transfer(next(iter(imdb.train_dataloader())), 0)
    assert x.shape == (20, 600, 300) and y.shape == (20, 2)
    # The review begins '"Don't bother to watch this film" would be better advice, if you like
    # Marilyn Monroe in her other roles.': the ids are its words, lower-cased, apostrophes and
    # punctuation removed, those outside the word2vec subset (to, marilyn, monroe) dropped.
    words = ["<pad>", *imdb.vocabulary]
    assert imdb.train_set.names[0] == "aclImdb/train/neg/10226_3.txt"  # the seeded subset
    assert [words[i] for i in imdb.train_set.ids[0, :15].tolist()] == (
        "dont bother watch this film would be better advice if you like in her other".split()
    )

    snli = SNLIDataModule(data_dir=str(root), train_split="dev", cache_dir=cache)
    snli.setup("fit")
    assert len(snli.train_set) == 9842 and len(snli.test_set) == 9824
    assert snli.train_set.ids.shape == (9842, 50)
    assert ((snli.train_set.ids != 0).sum(1) > 0).float().mean() > 0.99
    # dev line 1: "Two women are embracing while holding to go packages ." / "The sisters are
    # hugging goodbye while holding to go packages after just eating lunch ."; 'to' and '.' are
    # not in the word2vec subset; each sentence is padded after its words to 25 ids.
    words = ["<pad>", *snli.vocabulary]
    premise, hypothesis = snli.train_set.ids[0].view(2, 25).tolist()
    assert snli.train_set.names[0] == "snli_1.0/snli_1.0_dev.jsonl:1"
    assert [words[i] for i in premise] == (
        "two women are embracing while holding go packages".split() + ["<pad>"] * 17
    )
    assert [words[i] for i in hypothesis] == (
        "the sisters are hugging goodbye while holding go packages after just eating lunch".split()
        + ["<pad>"] * 12
    )


def test_cli_fit_and_gdu_on_text_data(
    snli_root: Path, w2v_file: Path, tmp_path, monkeypatch, capsys
):
    """`eqprop fit`, `eqprop test` and `eqprop gdu` run the SNLI config end to end on tiny data."""
    import json
    import re

    from eqprop_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    config = Path(__file__).resolve().parents[1] / "configs" / "snli" / "small.yaml"
    args = [
        "--config",
        str(config),
        "--data.data_dir",
        str(snli_root),
        "--data.embeddings",
        str(w2v_file),
        "--data.cache_dir",
        str(tmp_path / "cache"),
        "--data.train_split",
        "dev",
        "--data.seq_len",
        "4",
        "--data.batch_size",
        "2",
        "--model.net.init_args.segments",
        "[4, 4]",
        "--model.net.init_args.fc_layers",
        "[8, 3]",
        "--model.T",
        "6",
        "--model.K",
        "3",
    ]
    main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    (results,) = (tmp_path / "runs").rglob("results.json")
    (epoch,) = json.loads(results.read_text())["epochs"]
    assert epoch["epoch"] == 1
    # the recorded test error is that of the saved model, as `eqprop test` measures it again
    capsys.readouterr()
    main(["test", *args, "--ckpt_path", str(results.parent / "checkpoints" / "last.ckpt")])
    tested = re.search(r"test/error\s+([0-9.]+)", capsys.readouterr().out)
    assert tested is not None
    assert float(tested.group(1)) == pytest.approx(epoch["test_error"], abs=1e-4)
    # `eqprop predict` classifies the test split, in order: its errors are the test error
    predictions = tmp_path / "predictions.pt"
    main(["predict", *args, "--ckpt_path", str(results.parent / "checkpoints" / "last.ckpt"),
          "--predictions.path", str(predictions)])  # fmt: skip
    labels = torch.tensor(
        [LABEL_OF[row["gold_label"]] for row in SNLI_ROWS if row["gold_label"] != "-"]
    )
    predicted = torch.load(predictions)["prediction"]
    assert predicted.shape == labels.shape
    error = (predicted != labels).float().mean().item() * 100
    assert error == pytest.approx(epoch["test_error"], abs=1e-4)
    # GDU at small beta, converged, in float64: seed 3 leaves the outputs alive at these sizes,
    # and every weight's EP estimate is BPTT's gradient up to O(beta^2) (3e-5 measured; in
    # float32 the projections' is 1-3 % off, rounding in (s(beta) - s(-beta)) / 2 beta of states
    # of size 30); seed 1 starts with the outputs dead, where BPTT's gradient of W1 is 0
    gdu_args = [*args, "--model.beta", "0.01", "--model.T", "30", "--model.K", "10", "--double"]
    weights = {"P0", "P1", "P2", "P3", "W1", "W2"}
    for seed in (3, 1):
        out = tmp_path / f"gdu_{seed}"
        capsys.readouterr()
        main(["gdu", *gdu_args, "--seed_everything", str(seed), "--output_dir", str(out)])
        printed = capsys.readouterr().out
        summary = json.loads((out / "gdu.json").read_text(), parse_constant=_no_constant)
        assert summary["setting"] == {
            "T": 30,
            "K": 10,
            "beta": 0.01,
            "symmetric": True,
            "batch_size": 2,
            "dtype": "float64",
        }
        assert set(summary["rmse"]["weights"]) == weights
        bptt = summary["estimates"]["bptt"]
        assert set(bptt) == weights
        if seed == 3:
            assert all(error < 1e-4 for error in bptt.values()), bptt
            assert summary["sign_agreement"]["W2"]["total"] == pytest.approx(100.0)
        else:
            assert bptt["W1"] is None
            assert "| W1 | undefined (reference 0) |" in printed


def _no_constant(name: str):
    raise AssertionError(f"gdu.json holds {name}, which is not JSON")


@pytest.mark.parametrize("module", [IMDBDataModule, SNLIDataModule])
def test_text_data_root_defaults_to_the_working_directory(module, tmp_path, monkeypatch) -> None:
    """Without ``data_dir`` or the environment variable the text data is looked for in
    ``./data``: the MNIST copy shipped with the package, which ``MNISTDataModule`` falls back
    to, holds no text, and naming it in the not-found error misled."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    dm = module()
    assert (dm.data_root, dm._root_origin) == (Path("data"), "default")
    with pytest.raises(FileNotFoundError, match=r"Data root 'data' \(from the default, resolved"):
        dm.prepare_data()


def test_balanced_subset_is_seeded_and_balanced() -> None:
    labels = [0] * 10 + [1] * 10 + [2] * 10
    subsets = {seed: text_module.balanced_subset(labels, 6, seed) for seed in range(6)}
    for seed, subset in subsets.items():
        assert subset == sorted(subset) and len(set(subset)) == 6
        assert sorted(labels[i] for i in subset) == [0, 0, 1, 1, 2, 2]
        assert text_module.balanced_subset(labels, 6, seed) == subset  # reproducible
    assert len({tuple(s) for s in subsets.values()}) > 1  # the seed matters


def test_tokens_after_the_limit_add_no_word() -> None:
    """Only kept tokens enter the vocabulary: the words after the first ``limit`` kept tokens
    are not read (they would take ids, and rows of the embedding matrix, for nothing)."""
    kv = SimpleNamespace(key_to_index={"a": 0, "b": 1, "c": 2, "d": 3})
    vocab = text_module.VocabularyBuilder(kv)
    assert vocab.encode(["a", "oov", "b", "c", "d"], limit=2) == [1, 2]
    assert vocab.words == ["a", "b"]
    assert vocab.encode(["d", "a"]) == [3, 1]  # d gets the next id once it is kept


def test_snli_max_rows_per_role(snli_root: Path, w2v_file: Path) -> None:
    """The train file is read up to train_max_rows rows, the validation and test files up to
    test_max_rows, counted before the '-' pairs are dropped (rows: neutral, '-',
    contradiction, entailment)."""
    _write_jsonl(snli_root / "snli_1.0" / "snli_1.0_train.jsonl", SNLI_ROWS)
    dm = SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seq_len=SNLI_SEQ_LEN,
        val_split="dev", train_max_rows=3, test_max_rows=2,
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.labels.tolist() == [0, 1]
    assert dm.val_set.labels.tolist() == [0]
    assert dm.test_set.labels.tolist() == [0]


def test_imdb_val_split_follows_the_seed(imdb_root: Path, w2v_file: Path) -> None:
    """The reviews held out for validation are drawn with ``seed``: each seed partitions the 8
    training reviews, the same seed as before, and seeds 0, 1, 2 do not all hold out the same
    3 (56 possible sets)."""
    for name in ("neg", "pos"):
        for i in range(2, 4):
            (imdb_root / "aclImdb" / "train" / name / f"{i}_{i}.txt").write_text("Good film.")
    held_out = {}
    for seed in (0, 1, 2):
        dm = _imdb(imdb_root, w2v_file, val_size=3, seed=seed)
        held_out[seed] = sorted(dm.val_set.indices)
        assert sorted(held_out[seed] + list(dm.train_set.indices)) == list(range(8))
    again = _imdb(imdb_root, w2v_file, val_size=3, seed=1)
    assert sorted(again.val_set.indices) == held_out[1]
    assert len({tuple(v) for v in held_out.values()}) > 1


def test_folder_fingerprint_sees_a_same_size_rewrite(tmp_path: Path) -> None:
    """A review rewritten with as many bytes changes only its mtime: the fingerprint changes."""
    review = tmp_path / "a.txt"
    review.write_text("good film")
    before = text_module.folder_fingerprint([tmp_path])
    stat = review.stat()
    review.write_text("bad  film")  # the same 9 bytes
    os.utime(review, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert text_module.folder_fingerprint([tmp_path]) != before


def test_cache_key_holds_the_seed_of_limits_and_the_pipeline_version(
    imdb_root: Path, w2v_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed picks the reviews kept by ``limits``; a new pipeline version rebuilds."""
    dm, other_seed = (
        IMDBDataModule(
            data_dir=str(imdb_root), embeddings=str(w2v_file), seed=seed, limit_test_examples=2
        )
        for seed in (0, 1)
    )
    paths = {dm.cache_path(), other_seed.cache_path()}
    monkeypatch.setattr(text_module, "PIPELINE_VERSION", text_module.PIPELINE_VERSION + 1)
    paths.add(dm.cache_path())
    assert len(paths) == 3


def test_without_limits_every_seed_reuses_one_cache(
    imdb_root: Path, w2v_file: Path, tmp_path: Path
) -> None:
    """Without ``limit_*`` the seed changes nothing cached (the validation split is drawn in
    ``setup``): the old key held it, and each seed rebuilt and stored the same data."""
    paths = {_imdb(imdb_root, w2v_file, val_size=3, seed=s).cache_path() for s in (0, 1)}
    assert len(paths) == 1


def test_a_seed_with_nothing_to_draw_is_refused(
    imdb_root: Path, snli_root: Path, w2v_file: Path
) -> None:
    """``data.seed`` draws the validation split and the ``limit_*`` subsets; another seed than
    the default 0 with none of them would change nothing (MNIST's ``split_seed`` without a split
    is refused too); with one, it is taken."""
    with pytest.raises(ConfigError) as err:
        _imdb(imdb_root, w2v_file, seed=5)
    assert str(err.value) == (
        "seed=5 draws what val_size, limit_train_examples, limit_test_examples take, and none "
        "is set: it would change nothing; set one of them, or drop seed"
    )
    with pytest.raises(ConfigError, match="^seed=5 draws what limit_train_examples, limit_"):
        SNLIDataModule(data_dir=str(snli_root), embeddings=str(w2v_file), seed=5)
    for taken in ({"val_size": 3}, {"limit_test_examples": 2}, {"seed": 0}):
        _imdb(imdb_root, w2v_file, **{"seed": 5, **taken})
    SNLIDataModule(
        data_dir=str(snli_root), embeddings=str(w2v_file), seed=5, limit_train_examples=4
    )


def test_caches_and_extracted_files_are_readable_as_a_plain_open_makes_them(
    tmp_path: Path,
) -> None:
    """``mkstemp`` creates ``0o600``: a cache in a shared data folder was its writer's alone."""
    target = tmp_path / "x.pt"
    umask = os.umask(0o022)
    try:
        text_module.save_atomic({"a": 1}, target)
        fd, name = temp_file_beside(tmp_path / "y")
        os.close(fd)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(Path(name).stat().st_mode) == 0o644


@pytest.mark.parametrize("value", ["false", 0, None])
def test_keep_oov_must_be_a_bool(value: object, imdb_root: Path, w2v_file: Path) -> None:
    """``bool("false")`` is true: the Python API kept the OOV tokens it was told to drop."""
    with pytest.raises(ConfigError, match=re.escape(f"keep_oov={value!r} must be true or false")):
        IMDBDataModule(data_dir=str(imdb_root), embeddings=str(w2v_file), keep_oov=value)


def test_archive_members_may_start_with_dot_slash() -> None:
    """``tar -czf x.tar.gz ./aclImdb`` names its members ``./aclImdb/...``."""
    for name in ("aclImdb/test/neg/3_2.txt", "./aclImdb/test/neg/3_2.txt"):
        match = imdb_module._MEMBER.match(name)
        assert match is not None and match.groups() == ("test", "neg", "3_2.txt")
    assert imdb_module._MEMBER.match("x/aclImdb/test/neg/3_2.txt") is None


def test_token_ids_dataset_refuses_names_that_do_not_match_the_examples() -> None:
    ids, labels = torch.zeros(3, 4, dtype=torch.int32), torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match="3 ids, 3 labels and 2 names"):
        TokenIdsDataset(ids, labels, ["a", "b"], num_classes=2)
    reordered = TokenIdsDataset(ids, labels, ["a", "b", "c"], num_classes=2).reordered([2, 0, 1])
    assert reordered.names == ["c", "a", "b"] and reordered.labels.tolist() == [0, 0, 1]


TEXT_FIT = {  # the small configs, shrunk to the tiny fixtures (3 SNLI pairs, 4 IMDB reviews)
    "imdb": [
        "--config", str(REPO_ROOT / "configs" / "imdb" / "small.yaml"),
        "--data.init_args.limit_train_examples", "null",
        "--data.init_args.limit_test_examples", "null",
        "--data.init_args.seq_len", "8", "--model.net.init_args.segments", "[8]",
        "--model.net.init_args.fc_layers", "[6, 5, 2]",
        "--model.lrs", "[0.01, 0.005, 0.005, 0.005]",
    ],
    "snli": [
        "--config", str(REPO_ROOT / "configs" / "snli" / "small.yaml"),
        "--data.init_args.seq_len", "4", "--model.net.init_args.segments", "[4, 4]",
        "--model.net.init_args.fc_layers", "[6, 3]",
    ],
}  # fmt: skip


@pytest.mark.parametrize("dataset", ["imdb", "snli"])
def test_a_sequence_run_resumed_inside_an_epoch_equals_the_uninterrupted_one(
    imdb_root, snli_root, w2v_file, tmp_path, monkeypatch, dataset
):
    """Three-phase EP on the Hopfield nets with Adam and the cosine schedule, the text data
    modules' order and embeddings: stopped at step 3 (inside epoch 2 of 2 batches), resumed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    root = {"imdb": imdb_root, "snli": snli_root}[dataset]
    args = [
        *TEXT_FIT[dataset],
        "--data.init_args.data_dir", str(root), "--data.init_args.embeddings", str(w2v_file),
        "--data.init_args.batch_size", "2", "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--model.T", "6", "--model.K", "3", "--model.cosine_t_max", "2",
        "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", "runs",
    ]  # fmt: skip
    main(["fit", *args, "--trainer.logger.init_args.version", "straight"])
    main(["fit", *args, "--trainer.max_steps", "3", "--trainer.logger.init_args.version", "cut"])
    runs = next((tmp_path / "runs").iterdir())
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 3)
    main(["fit", *args, "--ckpt_path", "last"])  # picks the newest run: cut

    assert_resumed_like_straight(runs, ("train_error", "train_loss", "test_error"))
    saved = [torch.load(runs / v / "checkpoints" / "last.ckpt") for v in ("straight", "cut")]
    assert_same_optimizer_state(*(s["optimizer_states"][0] for s in saved))
