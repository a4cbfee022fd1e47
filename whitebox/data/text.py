"""Text corpora, a deterministic train/validation split, and random windows of token ids.

Corpora (``load_corpus(name)``):

* ``"pydoc"`` (default, offline): the English help text that ships with Python
  itself (``pydoc_data.topics``: the language reference behind ``help("if")``),
  the topic texts joined in sorted key order; about 465k characters. It is the
  same for a given Python version (the text changes a little between versions).
* ``"tinyshakespeare"``: Karpathy's char-rnn corpus (1,115,394 bytes), downloaded
  once into the data cache (``whitebox.data.download``: ``$WHITEBOX_DATA`` or
  ``~/.cache/whitebox``) and checked by size and first line before it is used.

A language model sees windows of ``block_size`` consecutive ids: the input
x = ids[s : s + T] and the target y = ids[s + 1 : s + T + 1] (each position
predicts the next token), for random starts s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from whitebox.data.download import cache_dir, fetch

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
# Checked instead of a SHA-256 digest (none verified offline): the exact size and the first line.
TINYSHAKESPEARE_SIZE = 1_115_394
TINYSHAKESPEARE_FIRST_LINE = "First Citizen:"

CORPORA = ("pydoc", "tinyshakespeare")

S = TypeVar("S", str, np.ndarray)


def pydoc_text() -> str:
    """Python's own help topics (``pydoc_data.topics.topics``), joined in sorted key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def tinyshakespeare_text(opener: Callable[[str], Any] | None = None) -> str:
    """The tiny Shakespeare corpus, downloaded into ``cache_dir()`` on first use (``fetch``;
    ``opener`` replaces ``urllib.request.urlopen``, for tests)."""
    path = fetch(
        TINYSHAKESPEARE_URL,
        cache_dir() / "tinyshakespeare.txt",
        size=TINYSHAKESPEARE_SIZE,
        first_line=TINYSHAKESPEARE_FIRST_LINE,
        opener=opener,
    )
    return path.read_text(encoding="utf-8")


def load_corpus(name: str = "pydoc") -> str:
    """The text of corpus ``name`` (one of ``CORPORA``)."""
    if name == "pydoc":
        return pydoc_text()
    if name == "tinyshakespeare":
        return tinyshakespeare_text()
    raise ValueError(f"unknown corpus {name!r}; valid names: {', '.join(CORPORA)}")


def split(seq: S, val_fraction: float = 0.1) -> tuple[S, S]:
    """(train, validation) of a text or an id array: the last ``val_fraction`` is held out."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = len(seq) - round(len(seq) * val_fraction)
    return seq[:cut], seq[cut:]


def get_batch(
    ids: np.ndarray, block_size: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows: x = ids[s : s+T], y = ids[s+1 : s+T+1], both (B, T) int64.

    The starts s are drawn uniformly from [0, len(ids) - T) by ``rng``, so a seed
    fixes the batch.
    """
    if len(ids) <= block_size:
        raise ValueError(f"get_batch: {len(ids)} ids are too few for windows of block_size {block_size} + 1")
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)
    index = starts[:, None] + np.arange(block_size)
    ids = np.asarray(ids, dtype=np.int64)
    return ids[index], ids[index + 1]


def windows(ids: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping window, in order, as (x, y) of shape (n, T): a fixed evaluation set."""
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(f"windows: {len(ids)} ids are too few for one window of block_size {block_size} + 1")
    index = np.arange(n)[:, None] * block_size + np.arange(block_size)
    ids = np.asarray(ids, dtype=np.int64)
    return ids[index], ids[index + 1]
