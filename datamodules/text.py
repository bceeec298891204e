"""Shared text pipeline of the IMDB and SNLI data modules (spec B.7 / C.2).

Per text: BeautifulSoup ``html.parser`` ``get_text()``, removal of ``[...]`` spans, the
original character filter, nltk ``ToktokTokenizer``, ``strip`` + lower-casing, then a word2vec
lookup in which out-of-vocabulary tokens are dropped (or, with ``keep_oov``, kept as a zero
vector), then padding with zeros or truncation to ``seq_len`` kept tokens (Keras
``pad_sequences``; the original: zeros after, the first ``seq_len`` tokens kept).

Instead of materialising ``(N, L, 300)`` float tensors as the original does, each example is stored
as int32 token ids (id 0 = padding = zero vector; the loaders give them as int64) plus ONE frozen
float32 embedding matrix ``(V + 1, 300)`` holding the raw (unnormalised) word2vec rows of the
vocabulary actually used. The data modules embed per batch in ``on_after_batch_transfer``, which
is numerically identical.

The processed ids and the matrix are cached with ``torch.save`` (atomically) under a key hashed
from the input files (paths, sizes, mtimes; every review of an extracted IMDB folder), the
embeddings source and the options.

The cache is built in ``prepare_data``, which Lightning calls before it creates the run directory,
so unreadable or malformed data files fail there, with a ``DataError`` naming the file (and the
line, for text files) and what was expected; missing ones raise ``FileNotFoundError``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
from nltk.tokenize import ToktokTokenizer
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from eqprop_lightning.errors import ConfigError, DataError, check_flag
from eqprop_lightning.io import write_atomic

from .data_root import is_writable, resolve_data_dir, user_cache_dir
from .splits import SplitsDataModule

EMBED_DIM = 300
PAD_ID = 0
#: gensim-data name of the full Google News word2vec model used by the original code.
DEFAULT_W2V_NAME = "word2vec-google-news-300"
#: Default embeddings file, relative to the data root.
DEFAULT_W2V_RELPATH = Path("word2vec") / "GoogleNews-vectors-negative300-subset.bin"
#: Bump with every change to the cleaning, tokenizing or parsing, or to what the cache holds, so
#: that old caches (keyed by the inputs, the options and this number, not the code) are not
#: reused. 3: the examples' names; 4: IMDB words kept apart at the characters the filter
#: removes (but ' and -) and at ? and !; 5: and at dashes (``--``); 6: ``<br />`` as ``br``.
PIPELINE_VERSION = 6

_BRACKETS = re.compile(r"\[[^]]*\]")
_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_PUNCT = re.compile(r"([.?!])")  # spaced in both pipelines
# The IMDB and SNLI filters keep the original ``A-z`` typo: A..z also covers [ \ ] ^ _ and `.
_IMDB_SEPARATE = re.compile(r"[^a-zA-z0-9.!?,\s'-]")
_IMDB_DROP = re.compile(r"['-]")
_DASH = re.compile(r"-{2,}")  # a dash between words, not a hyphen inside one
_SNLI_DROP = re.compile(r"[^a-zA-z0-9.?!\s]")
_TOKENIZER = ToktokTokenizer()


def strip_html(text: str) -> str:
    """Text content of ``text`` parsed as HTML (tags dropped, entities decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        return BeautifulSoup(text, "html.parser").get_text()


def remove_brackets(text: str) -> str:
    """Remove ``[...]`` spans (non-nested, as the original regex)."""
    return _BRACKETS.sub("", text)


def clean_imdb(text: str) -> str:
    """IMDB ``denoise_text`` + ``remove_special_characters``: keeps ``[a-zA-z0-9.!?,\\s]``.

    The original read Keras's text, whose words stand alone (Stanford's ``imdb.vocab``: no word
    holds ``/``, ``;``, ``:`` or ``"``, and ``?`` is a word of its own); the Stanford files have
    HTML and punctuation, so three steps keep their words apart as Keras's text has them: a
    ``<br />`` becomes the word ``br``, which Keras's text has in its place (one of the ten most
    frequent words of its index; the HTML parser's text would glue ``movie.<br />The`` into
    ``movie.The``); a character the filter removes becomes a space (``5/10`` -> ``5 10``,
    ``film;great`` -> ``film great``), except ``'`` and ``-``, removed as the original removes
    them from Keras's words (``don't`` -> ``dont``, ``sci-fi`` -> ``scifi``), but for a dash of
    two or more (``good--bad`` -> ``good bad``: ``imdb.vocab`` has no word holding ``--``); and
    ``. ? !`` get spaces around them (Toktok splits one off only at the end of the text:
    ``movie. The`` would keep ``movie.``, ``good?I`` one word, out of vocabulary). All are
    no-ops on Keras's text but for its ``#`` (start, padding, unknown), which becomes a space
    instead of nothing: the same tokens.
    """
    text = remove_brackets(strip_html(_LINE_BREAK.sub(" br ", text)))
    text = _IMDB_DROP.sub("", _IMDB_SEPARATE.sub(" ", _DASH.sub(" ", text)))
    return _SENTENCE_PUNCT.sub(r" \1 ", text)


def clean_snli(text: object) -> str:
    """SNLI cleaning: non-strings become ``' '``; spaces around ``. ? !``; filter.

    Keeps ``[a-zA-z0-9.?!\\s]`` (with the ``A-z`` typo); commas are removed, unlike IMDB.
    """
    if not isinstance(text, str):
        return " "
    text = remove_brackets(strip_html(text))
    return _SNLI_DROP.sub("", _SENTENCE_PUNCT.sub(r" \1 ", text))


def tokenize(text: str) -> list[str]:
    """nltk ``ToktokTokenizer`` tokens, stripped and lower-cased (no stop words are removed)."""
    return [token.strip().lower() for token in _TOKENIZER.tokenize(text)]


# --------------------------------------------------------------------------------------------
# Embeddings


def resolve_embeddings(spec: str | None, data_root: Path) -> tuple[str, str]:
    """``("path", file)`` or ``("name", gensim_data_name)`` for the ``embeddings`` argument."""
    if spec is None:
        default = data_root / DEFAULT_W2V_RELPATH
        if default.is_file():
            return "path", str(default)
        return "name", DEFAULT_W2V_NAME
    path = Path(spec).expanduser()
    if path.is_file():
        return "path", str(path)
    if os.sep in spec or "/" in spec or path.suffix in {".bin", ".txt", ".gz", ".vec", ".w2v"}:
        raise FileNotFoundError(
            f"Embeddings file {spec!r} not found (resolved to {path.resolve()}). Pass "
            f"--data.embeddings with an existing word2vec file (binary .bin or text, .gz allowed) "
            f"or a gensim-data name such as {DEFAULT_W2V_NAME!r}."
        )
    return "name", spec


def embeddings_fingerprint(kind: str, value: str) -> dict[str, Any]:
    """Identity of an embeddings source for the cache key."""
    if kind == "path":
        return {"path": file_fingerprint(Path(value))}
    return {"name": value}


def open_word2vec(path: str) -> IO[bytes]:
    """A word2vec file opened for reading bytes (gunzipped on the fly for ``.gz``)."""
    return (gzip.open if path.endswith(".gz") else open)(path, "rb")


def word2vec_header_dim(path: str) -> int | None:
    """Vector size from a word2vec file's first line ``"<words> <dim>"`` (binary and text
    formats; ``.gz`` allowed), or ``None`` if that line cannot be read."""
    try:
        with open_word2vec(path) as fh:
            words, dim = fh.readline(256).split()
        return int(dim) if int(words) >= 0 and int(dim) > 0 else None
    except (OSError, EOFError, zlib.error, ValueError):
        return None


def word2vec_is_binary(path: str) -> bool:
    """Whether a word2vec file is in the binary format, told by its content: in the text format
    the line after the header is a word and ``dim`` numbers (``.gz`` allowed; a file too short
    or unreadable to tell counts as binary, whose reader then names the problem)."""
    try:
        with open_word2vec(path) as fh:
            dim = int(fh.readline(256).split()[1])
            # a word that is not UTF-8 leaves its numbers readable: still the text format
            fields = fh.readline(1 << 16).decode("utf-8", errors="replace").split()
        return len(fields) != dim + 1 or not all(map(_is_number, fields[1:]))
    except (OSError, EOFError, zlib.error, ValueError, IndexError):
        return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def embeddings_dim_hint(kind: str, value: str) -> int:
    """Embedding dimension expected from an embeddings source without loading it: a file's
    word2vec header, a gensim-data name's ``-<dim>`` suffix, else ``EMBED_DIM``."""
    if kind == "path":
        dim = word2vec_header_dim(value)
    else:
        match = re.search(r"-(\d+)$", value)
        dim = int(match.group(1)) if match else None
    return dim or EMBED_DIM


def load_embeddings(kind: str, value: str, data_root: Path) -> Any:
    """Load gensim ``KeyedVectors`` from a word2vec file or a gensim-data name.

    Raises ``DataError`` for an unreadable file and ``FileNotFoundError`` when no file is given
    and the gensim-data download fails.
    """
    from gensim.models import KeyedVectors

    if kind == "path":
        binary = word2vec_is_binary(value)
        try:
            return KeyedVectors.load_word2vec_format(value, binary=binary)
        except Exception as err:  # corrupt/truncated/wrong format
            fmt = "binary" if binary else "text"
            raise DataError(
                f"Could not read word2vec embeddings from {value} as {fmt} word2vec format: "
                f"{type(err).__name__}: {err}. Pass --data.embeddings with a valid word2vec file "
                f"(binary or text, .gz allowed)."
            ) from err
    try:
        import gensim.downloader as api

        return api.load(value)
    except Exception as err:  # no network, unknown name, ...
        default = data_root / DEFAULT_W2V_RELPATH
        raise FileNotFoundError(
            f"Could not load word2vec embeddings: gensim-data {value!r} failed "
            f"({type(err).__name__}: {err}; without the Internet gensim-data can neither load "
            f"nor check a name) and no file was given (default file {default} "
            f"{'exists' if default.is_file() else 'does not exist'}). Pass --data.embeddings "
            f"/path/to/GoogleNews-vectors-negative300.bin (word2vec binary .bin or text, .gz "
            f"allowed), or put such a file at {default}, or make gensim-data reachable."
        ) from err


class VocabularyBuilder:
    """Maps tokens to compact ids (1..V, in order of first use) of the word2vec rows used."""

    def __init__(self, keyed_vectors: Any, keep_oov: bool = False) -> None:
        self.kv = keyed_vectors
        self.keep_oov = keep_oov
        self.words: list[str] = []
        self._ids: dict[str, int] = {}

    def encode(self, tokens: Iterable[str], limit: int | None = None) -> list[int]:
        """Ids of the kept tokens (the first ``limit`` of them); the tokens after them are not
        read, so that they add no word to the vocabulary."""
        out: list[int] = []
        key_to_index = self.kv.key_to_index
        for token in tokens:
            idx = self._ids.get(token)
            if idx is None:
                if token in key_to_index:
                    idx = len(self.words) + 1
                    self._ids[token] = idx
                    self.words.append(token)
                elif self.keep_oov:
                    idx = PAD_ID  # a zero vector, like padding
                else:
                    continue  # dropped, as in the original
            out.append(idx)
            if len(out) == limit:
                break
        return out

    def matrix(self) -> torch.Tensor:
        """Frozen ``(V + 1, dim)`` float32 matrix; row 0 is zeros."""
        dim = int(self.kv.vector_size)
        weight = torch.zeros(len(self.words) + 1, dim, dtype=torch.float32)
        if self.words:
            rows = [self.kv.key_to_index[w] for w in self.words]
            weight[1:] = torch.from_numpy(self.kv.vectors[rows]).to(torch.float32)
        return weight


#: ``pad_sequences``'s sides: ``post`` pads/cuts at the end, ``pre`` at the start.
SIDES = ("post", "pre")


def check_side(name: str, value: str) -> None:
    if value not in SIDES:
        raise ConfigError(f"{name}={value!r} is not supported; choose 'post' or 'pre'")


def pad_sequence(ids: list[int], seq_len: int, padding: str, truncating: str) -> list[int]:
    """Keras ``pad_sequences`` on one sequence with value 0: a longer one keeps its first
    (``truncating="post"``) or last (``"pre"``) ``seq_len`` ids; a shorter one gets zeros after
    (``padding="post"``) or before (``"pre"``) it."""
    kept = ids[:seq_len] if truncating == "post" else ids[max(len(ids) - seq_len, 0) :]
    zeros = [PAD_ID] * (seq_len - len(kept))
    return kept + zeros if padding == "post" else zeros + kept


def encode_texts(
    texts: Sequence[str],
    clean: Callable[[Any], str],
    vocab: VocabularyBuilder,
    seq_len: int,
    desc: str,
    padding: str = "post",
    truncating: str = "post",
) -> torch.Tensor:
    """``(N, seq_len)`` int32 ids of ``texts`` through ``clean``, ``tokenize`` and ``vocab``, then
    :func:`pad_sequence` (the original's ``post``/``post``: the first ``seq_len`` kept tokens)."""
    limit = seq_len if truncating == "post" else None
    ids = torch.zeros(len(texts), seq_len, dtype=torch.int32)
    for i, text in enumerate(tqdm(texts, desc=desc, unit="text", mininterval=1.0)):
        kept = vocab.encode(tokenize(clean(text)), limit)
        ids[i] = torch.tensor(pad_sequence(kept, seq_len, padding, truncating), dtype=torch.int32)
    return ids


# --------------------------------------------------------------------------------------------
# Files, cache


def file_fingerprint(path: Path) -> list[Any]:
    """``[absolute path, size, mtime_ns]`` of a file or directory."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def folder_fingerprint(folders: Sequence[Path]) -> list[Any]:
    """Identity of the ``*.txt`` files of ``folders``: their absolute paths and a hash of every
    file's name, size and mtime (a file rewritten in place changes neither its folder's size nor
    its mtime)."""
    digest = hashlib.sha256()
    for folder in folders:
        entries = sorted(  # DirEntry.stat() is cached: one stat per file
            (e.name, e.stat().st_size, e.stat().st_mtime_ns)
            for e in os.scandir(folder)
            if e.name.endswith(".txt")
        )
        digest.update(json.dumps(entries).encode())
    return [[str(f.resolve()) for f in folders], digest.hexdigest()]


def resolve_cache_dir(cache_dir: str | None, data_root: Path) -> Path:
    """``cache_dir`` if given, else ``<data root>/cache`` if writable, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    candidate = data_root / "cache"
    if candidate.is_dir() and is_writable(candidate):
        return candidate
    if not candidate.exists() and data_root.is_dir() and is_writable(data_root):
        return candidate
    return user_cache_dir()


def cache_key(payload: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable ``payload``."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` of ``obj`` to ``path`` (its folder made), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda name: torch.save(obj, name))


def _by_class(labels: Sequence[int]) -> list[list[int]]:
    """Indices of each class, classes in increasing label order, indices in increasing order."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    return [by_class[label] for label in sorted(by_class)]


def _round_robin(pools: list[list[int]]) -> list[int]:
    """The first of every pool, then the second of every pool, ...: balanced prefixes that fill
    from the larger pools once the smaller ones run out."""
    depth = max(map(len, pools), default=0)
    return [pool[d] for d in range(depth) for pool in pools if d < len(pool)]


def balanced_subset(labels: Sequence[int], limit: int, seed: int) -> list[int]:
    """Sorted indices of a seeded subset of ``limit`` examples, balanced across classes."""
    if limit >= len(labels):
        return list(range(len(labels)))
    generator = torch.Generator().manual_seed(seed)
    pools = []
    for members in _by_class(labels):
        perm = torch.randperm(len(members), generator=generator).tolist()
        pools.append([members[j] for j in perm])
    return sorted(_round_robin(pools)[:limit])


def alternate_classes(labels: Sequence[int]) -> list[int]:
    """Indices ``0..N-1`` reordered so that the classes alternate (each class in its order), so
    that every prefix of a set sorted by class (IMDB's ``neg/`` then ``pos/``) holds every class
    in proportion: an evaluation cut short by ``limit_test_batches`` measures them all."""
    return _round_robin(_by_class(labels))


# --------------------------------------------------------------------------------------------
# Dataset and base data module


#: One split: ids ``(N, L)``, labels ``(N,)`` and each example's name (where it comes from:
#: ``aclImdb/test/neg/0_2.txt``, ``snli_1.0/snli_1.0_test.jsonl:12``), in the same order.
Split = tuple[torch.Tensor, torch.Tensor, list[str]]


class TokenIdsDataset(Dataset):
    """Examples ``(ids int64 (L,), one-hot float32 (C,))`` over stored int32 ids; ``names[i]``
    says where example ``i`` comes from (``eqprop predict`` writes it beside each prediction)."""

    def __init__(
        self, ids: torch.Tensor, labels: torch.Tensor, names: list[str], num_classes: int
    ) -> None:
        if not len(ids) == len(labels) == len(names):
            raise ValueError(f"{len(ids)} ids, {len(labels)} labels and {len(names)} names")
        self.ids = ids
        self.labels = labels
        self.names = names
        self.onehot = F.one_hot(labels.long(), num_classes).to(torch.float32)

    def reordered(self, order: Sequence[int]) -> TokenIdsDataset:
        """The examples ``order[0], order[1], ...``, names included."""
        index = torch.as_tensor(order, dtype=torch.long)
        names = [self.names[i] for i in order]
        return TokenIdsDataset(self.ids[index], self.labels[index], names, self.onehot.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[index].long(), self.onehot[index]


class TextDataModule(SplitsDataModule):
    """Base of the word2vec text data modules: cache and per-batch embedding (the loaders are
    :class:`~.splits.SplitsDataModule`'s).

    Subclasses implement ``_sources`` (fingerprint of the input files), ``_options`` (processing
    options entering the cache key), ``_build`` (returns a :data:`Split` per split name, given a
    ``VocabularyBuilder``), ``_make_datasets``, ``_validation_set`` and
    ``_test_set_name`` (what the evaluated sets are), ``num_classes`` and ``seq_len``.
    """

    kind = "text"

    def __init__(
        self,
        data_dir: str | None,
        embeddings: str | None,
        batch_size: int,
        test_batch_size: int | None,
        keep_oov: bool,
        num_workers: int,
        seed: int,
        cache_dir: str | None,
    ) -> None:
        super().__init__(batch_size, test_batch_size, num_workers)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.data_root, self._root_origin = resolve_data_dir(data_dir)
        self._embeddings_spec = embeddings
        check_flag("keep_oov", keep_oov)
        self._keep_oov = keep_oov
        self._seed = seed
        self._limits: dict[str, int | None] = {}  # the subclass's limit_* per split
        self._cache_dir_arg = cache_dir
        self._data: dict[str, Any] | None = None
        self._dim_hint: int | None = None
        self._weights: dict[torch.device, torch.Tensor] = {}

    # -- to implement ----------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes."""
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        """Total number of token positions of one example ``x``."""
        raise NotImplementedError

    def _sources(self) -> dict[str, Any]:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build(self, vocab: VocabularyBuilder) -> dict[str, Split]:
        raise NotImplementedError

    def _make_datasets(self, splits: dict[str, TokenIdsDataset]) -> None:
        raise NotImplementedError

    def _check_data(self, data: dict[str, Any]) -> None:
        """Check options against the processed data in ``prepare_data`` (``ConfigError``)."""

    # -- properties --------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Embedding dimension (300 for word2vec Google News).

        Before the data is loaded: the embeddings file's word2vec header (its first line), the
        ``-<dim>`` suffix of a gensim-data name, else 300.
        """
        if self._data is not None:
            return int(self._data["embedding"].shape[1])
        if self._dim_hint is None:
            try:
                self._dim_hint = embeddings_dim_hint(*self._embeddings_source())
            except FileNotFoundError:  # reported by prepare_data
                self._dim_hint = EMBED_DIM
        return self._dim_hint

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example as the model receives it: ``(seq_len, embed_dim)``."""
        return (self.seq_len, self.embed_dim)

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrix: used vocabulary plus the padding row 0."""
        return int(self._require_data()["embedding"].shape[0])

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """The frozen ``(vocab_size, embed_dim)`` float32 matrix (row 0 zeros)."""
        return self._require_data()["embedding"]

    @property
    def vocabulary(self) -> list[str]:
        """Words of rows 1..V of the embedding matrix."""
        return self._require_data()["vocab"]

    # -- cache -----------------------------------------------------------------------------
    def _require_data(self) -> dict[str, Any]:
        if self._data is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must be called first")
        return self._data

    def _embeddings_source(self) -> tuple[str, str]:
        return resolve_embeddings(self._embeddings_spec, self.data_root)

    def cache_path(self) -> Path:
        """Cache file for the current inputs and options."""
        kind, value = self._embeddings_source()
        payload = {
            "version": PIPELINE_VERSION,
            "kind": self.kind,
            "sources": self._sources(),
            "embeddings": embeddings_fingerprint(kind, value),
            "options": {**self._options(), "keep_oov": self._keep_oov, "seed": self._data_seed()},
        }
        cache_dir = resolve_cache_dir(self._cache_dir_arg, self.data_root)
        return cache_dir / f"{self.kind}-{cache_key(payload)}.pt"

    def _check_seed_draws(self, options: dict[str, object]) -> None:
        """``seed`` draws only what ``options`` take (a validation split, the ``limit_*``
        subsets): another seed than the default 0 with none of them set is a ``ConfigError``."""
        if self._seed != 0 and not any(options.values()):
            raise ConfigError(
                f"seed={self._seed} draws what {', '.join(options)} take, and none is set: it "
                "would change nothing; set one of them, or drop seed"
            )

    def _data_seed(self) -> int | None:
        """The seed where it changes what is cached (the ``limit_*`` subsets), else ``None``:
        another seed then reuses the cache (a validation split is drawn in ``setup``)."""
        return self._seed if any(v is not None for v in self._limits.values()) else None

    def _build_data(self) -> dict[str, Any]:
        kind, value = self._embeddings_source()
        self._sources()  # fail on missing inputs before loading the (large) embeddings
        kv = load_embeddings(kind, value, self.data_root)
        vocab = VocabularyBuilder(kv, keep_oov=self._keep_oov)
        splits = self._build(vocab)
        return {
            "version": PIPELINE_VERSION,
            "splits": {
                name: {"ids": ids, "labels": y, "names": names}
                for name, (ids, y, names) in splits.items()
            },
            "embedding": vocab.matrix(),
            "vocab": vocab.words,
        }

    def _load_or_build(self) -> dict[str, Any]:
        path = self.cache_path()
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # corrupt cache: rebuild it
                warnings.warn(f"Ignoring unreadable cache {path} ({err}); rebuilding", stacklevel=2)
        data = self._build_data()
        try:
            save_atomic(data, path)
        except OSError as err:
            warnings.warn(f"Could not write the cache {path} ({err})", stacklevel=2)
        return data

    def prepare_data(self) -> None:
        """Build and cache the processed ids and embedding matrix unless already cached.

        Raises ``FileNotFoundError`` for missing inputs, ``DataError`` for unreadable or
        malformed ones and ``ConfigError`` for options the data cannot satisfy.
        """
        if self._data is None:
            self._data = self._load_or_build()
        self._check_coverage(self._data)
        self._check_data(self._data)

    def _check_coverage(self, data: dict[str, Any]) -> None:
        """``DataError`` when no token of the data is in the embeddings (every input would be
        zeros: the wrong file); a warning when most training examples keep no token."""
        source = self._embeddings_source()[1]
        if not data["vocab"]:
            raise DataError(
                f"None of the {self.kind.upper()} tokens is in the embeddings {source}: every "
                f"example would be all zeros. Pass --data.embeddings with word2vec vectors of "
                f"English words (such as {DEFAULT_W2V_NAME!r})"
            )
        ids = data["splits"]["train"]["ids"]
        empty = int((ids == PAD_ID).all(dim=1).sum())
        if empty > len(ids) / 2:
            warnings.warn(
                f"{empty} of the {len(ids)} training examples keep no token found in the "
                f"embeddings {source} ({len(data['vocab'])} words matched): they are all zeros. "
                f"Is it the right word2vec file?",
                stacklevel=2,
            )

    def setup(self, stage: str | None = None) -> None:
        """Load the cached ids (building them if needed) and create the datasets."""
        if self._data is None:
            self._data = self._load_or_build()
        if self.test_set is None:
            splits = {
                name: TokenIdsDataset(
                    entry["ids"], entry["labels"], entry["names"], self.num_classes
                )
                for name, entry in self._data["splits"].items()
            }
            self._make_datasets(splits)

    # -- embedding ---------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(..., L)`` ids to ``(..., L, embed_dim)`` float32 vectors on ``ids.device``."""
        weight = self._weights.get(ids.device)
        if weight is None:
            weight = self.embedding_matrix.to(ids.device)
            self._weights[ids.device] = weight
        return F.embedding(ids.long(), weight)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Embed ``(ids, y)`` into ``(x, y)`` on the batch's device."""
        ids, y = batch
        return self.embed(ids), y

    # -- evaluated sets ----------------------------------------------------------------------
    @property
    def evaluation_sets(self) -> dict[str, str]:
        """``{"val"|"test": what the set is}``, in the order of ``val_dataloader``'s loaders:
        the validation set then the test set with a validation split, else the test set."""
        val = self._validation_set()
        test = self._test_set_name()
        return {"test": test} if val is None else {"val": val, "test": test}

    def _validation_set(self) -> str | None:
        """What the validation set is, or ``None`` without one."""
        raise NotImplementedError

    def _test_set_name(self) -> str:
        raise NotImplementedError

    def _subset_note(self, role: str, limit: int | None) -> str:
        """``" (N, a class-balanced subset)"`` for a set cut to ``limit`` examples (N = limit
        until the data is loaded), or ``" (all N: the limit L is above the split's size)"``
        where the split has fewer than ``limit``."""
        if limit is None:
            return ""
        dataset = self.test_set if role == "test" else self.val_set
        count = len(dataset) if dataset is not None else limit
        if count < limit:
            return f" (all {count}: the limit {limit} is above the split's size)"
        return f" ({count}, a class-balanced subset)"
