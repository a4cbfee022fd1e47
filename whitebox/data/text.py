"""Text corpora, a deterministic train/validation split, and random windows of token ids.

Corpora (``load_corpus(name)``):

* ``"pydoc"`` (default, offline): the English help text that ships with Python
  itself (``pydoc_data.topics``: the language reference behind ``help("if")``),
  the topic texts joined in sorted key order; about 465k characters. It is the
  same for a given Python version (the text changes a little between versions).
* ``"tinyshakespeare"``: Karpathy's char-rnn corpus (1,115,394 bytes), downloaded
  once into the data cache (``whitebox.data.download``: ``$WHITEBOX_DATA`` or
  ``~/.cache/whitebox``; ``python -m whitebox download tinyshakespeare``) and checked
  by size and first line. Its publisher gives no digest, so the SHA-256 of the file
  is recorded beside it (``tinyshakespeare.txt.sha256``) when it is first obtained
  and verified on every load.

A language model sees windows of ``block_size`` consecutive ids: the input
x = ids[s : s + T] and the target y = ids[s + 1 : s + T + 1] (each position
predicts the next token), for random starts s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from whitebox.data.download import ChecksumError, cache_dir, fetch, file_digest, verify_file
from whitebox.serialization import atomic_write

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


def tinyshakespeare_text(opener: Callable[[str], Any] | None = None, download: bool = True) -> str:
    """The tiny Shakespeare corpus, downloaded into ``cache_dir()`` on first use (``fetch``;
    ``opener`` replaces ``urllib.request.urlopen``, for tests) and verified against the
    checksum recorded then. A failed download raises ``FileNotFoundError`` (naming the download
    command unless ``download``: called by it), a changed file ``ChecksumError``."""
    path = cache_dir() / "tinyshakespeare.txt"
    recorded = path.with_name(path.name + ".sha256")
    hint = "delete it and run `python -m whitebox download tinyshakespeare`"
    if not path.is_file():
        try:
            fetch(TINYSHAKESPEARE_URL, path, size=TINYSHAKESPEARE_SIZE,
                  first_line=TINYSHAKESPEARE_FIRST_LINE, opener=opener)  # fmt: skip
        except OSError as exc:  # URLError is an OSError
            again = "" if download else "; run `python -m whitebox download tinyshakespeare` where it is"
            raise FileNotFoundError(
                f"tinyshakespeare is not in the cache ({path}) and could not be downloaded "
                f"from {TINYSHAKESPEARE_URL}: {exc}{again}"
            ) from None
        recorded.unlink(missing_ok=True)
    if recorded.is_file():
        verify_file(
            path, "sha256", recorded.read_text().strip(), f"the file changed since it was obtained; {hint}"
        )
    else:  # first obtained now, or cached before digests were recorded: check, then record
        data = path.read_bytes()
        if len(data) != TINYSHAKESPEARE_SIZE or not data.startswith(
            TINYSHAKESPEARE_FIRST_LINE.encode() + b"\n"
        ):
            raise ChecksumError(f"{path} is not the published corpus (size or first line differ); {hint}")
        digest = file_digest(path, "sha256")
        atomic_write(recorded, lambda f: f.write(digest.encode() + b"\n"))
    return path.read_text(encoding="utf-8")


def load_corpus(
    name: str = "pydoc", download: bool = False, opener: Callable[[str], Any] | None = None
) -> str:
    """The text of corpus ``name`` (one of ``CORPORA``); ``download``: called to download it (the
    errors say so), ``opener``: see ``tinyshakespeare_text``."""
    if name == "pydoc":
        return pydoc_text()
    if name == "tinyshakespeare":
        return tinyshakespeare_text(opener, download)
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
