"""Your own text as a corpus: a UTF-8 file or a folder of ``.txt`` files, checked, split and encoded.

``read_corpus(path)`` reads a file, or every ``*.txt`` file under a folder (sorted by relative
path, hidden files skipped, joined with a blank line between files, as ``pydoc_text`` joins its
topics); a leading byte-order mark is dropped. The split is the built-in corpora's
(``whitebox.data.text.split``): the last ``val_fraction`` of the characters is validation.

``encode_corpus(corpus, tokenizer, val_fraction, block_size)`` encodes the training and the
validation text and caches the ids in the data cache (``cache_dir() / "text-ids"``), keyed by
the SHA-256 of the source bytes, of the tokenizer's JSON and the split, so a second run on the
same file does not encode it again. ``check_block_size`` says whether both splits are long
enough for windows of ``block_size`` tokens; ``encode_corpus`` calls it before it writes.

Every problem with the input is one ``ValueError`` naming the file and what is wrong: a missing
path, an empty file, a binary file (it holds a NUL byte), bytes that are not UTF-8 (with their
offset and line), a folder with no ``.txt`` files, text too short for the block size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from whitebox.data.download import cache_dir
from whitebox.data.text import split

FILE_SEPARATOR = "\n\n"
CACHE_FOLDER = "text-ids"


class Encoder(Protocol):
    """What ``encode_corpus`` needs of a tokenizer (both of whitebox's tokenizers are one)."""

    def encode(self, text: str) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Corpus:
    """The text of a file or folder, the SHA-256 of its bytes, and the files it was read from."""

    text: str
    sha256: str  # of the file's bytes, or of the folder's (relative name, file SHA-256) list
    path: Path
    files: tuple[Path, ...]

    def record(self) -> dict[str, Any]:
        """A JSON-ready record of the source: path, SHA-256, characters and files."""
        names = [p.name if p == self.path else p.relative_to(self.path).as_posix() for p in self.files]
        return {"path": str(self.path), "sha256": self.sha256, "characters": len(self.text), "files": names}


def decode_text(file: Path, data: bytes) -> str:
    """The text of ``data`` (the bytes of ``file``): refused if empty, binary or not UTF-8."""
    if not data.strip():
        raise ValueError(
            f"{file}: the file is empty" if not data else f"{file}: the file holds only whitespace"
        )
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(
            f"{file}: looks binary (a NUL byte at offset {nul}); expected UTF-8 text "
            "(a UTF-16 file has NUL bytes too: save it as UTF-8)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise ValueError(
            f"{file}: not UTF-8: byte(s) {bad} at offset {exc.start} (line {line}) ({exc.reason}); "
            "save the file as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")


def read_corpus(path: str | Path) -> Corpus:
    """The ``Corpus`` of a UTF-8 text file or of the ``.txt`` files under a folder (module docstring)."""
    path = Path(path).expanduser()
    if path.is_file():
        data = path.read_bytes()
        return Corpus(decode_text(path, data), hashlib.sha256(data).hexdigest(), path, (path,))
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    files = tuple(
        sorted(
            (p for p in path.rglob("*.txt") if p.is_file()),
            key=lambda p: p.relative_to(path).as_posix(),
        )
    )
    files = tuple(p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ValueError(f"{path}: the folder holds no .txt files")
    digest = hashlib.sha256()
    texts = []
    for file in files:
        data = file.read_bytes()
        digest.update(f"{file.relative_to(path).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        texts.append(decode_text(file, data))
    return Corpus(FILE_SEPARATOR.join(texts), digest.hexdigest(), path, files)


def check_block_size(source: str | Path, n_train: int, n_val: int, block_size: int) -> None:
    """Raise ``ValueError`` unless both splits hold at least ``block_size + 1`` tokens.

    A training batch draws windows of ``block_size`` inputs and their next tokens, and the
    evaluation needs at least one such window of validation text.
    """
    need = block_size + 1
    if n_train >= need and n_val >= need:
        return
    short = "training" if n_train < need else "validation"
    hint = "a smaller block size (--block-size)"
    if n_train >= need:
        hint += " or a larger validation fraction (--val-fraction)"
    raise ValueError(
        f"{source}: text too short for block_size {block_size}: it gives {n_train} training and "
        f"{n_val} validation tokens, and the {short} split needs at least {need}; use a longer "
        f"text or {hint}"
    )


def tokenizer_digest(tokenizer: Encoder) -> str:
    """SHA-256 of the tokenizer's JSON (sorted keys): two tokenizers that encode alike share it."""
    return hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode()).hexdigest()


def cache_path(corpus: Corpus, tokenizer: Encoder, val_fraction: float, root: Path | None = None) -> Path:
    """Where ``encode_corpus`` keeps the ids of ``corpus`` under ``tokenizer`` and this split."""
    key = hashlib.sha256(f"{corpus.sha256} {tokenizer_digest(tokenizer)} {val_fraction!r}".encode())
    return (root if root is not None else cache_dir()) / CACHE_FOLDER / f"{key.hexdigest()[:32]}.npz"


def _read_cached(file: Path, vocab: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(train, val) ids of a cache file, or None if it is missing or not a well-formed id file."""
    try:
        with np.load(file, allow_pickle=False) as z:
            train, val = z["train"].astype(np.int64), z["val"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    ok = all(a.ndim == 1 and (a.size == 0 or (a.min() >= 0 and a.max() < vocab)) for a in (train, val))
    return (train, val) if ok else None


def _write_atomic(file: Path, train: np.ndarray, val: np.ndarray) -> None:
    """Write the ids to a temporary file beside ``file``, then rename it into place."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, train=train, val=val)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_corpus(
    corpus: Corpus,
    tokenizer: Encoder,
    val_fraction: float = 0.1,
    block_size: int | None = None,
    *,
    cache: bool = True,
    cache_root: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, validation ids), int64, of ``corpus`` split by ``val_fraction`` (module docstring).

    With ``block_size``, both splits are checked (``check_block_size``) before anything is written.
    ``cache=False`` neither reads nor writes the cache; ``cache_root`` replaces ``cache_dir()``.
    """
    vocab = getattr(tokenizer, "vocab_size", np.iinfo(np.int64).max)
    file = cache_path(corpus, tokenizer, val_fraction, cache_root) if cache else None
    cached = None if file is None else _read_cached(file, vocab)
    if cached is not None:
        train, val = cached
    else:
        train_text, val_text = split(corpus.text, val_fraction)
        train = np.asarray(tokenizer.encode(train_text), dtype=np.int64)
        val = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
    if block_size is not None:
        check_block_size(corpus.path, len(train), len(val), block_size)
    if file is not None and cached is None:
        _write_atomic(file, train, val)
    return train, val
