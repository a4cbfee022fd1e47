"""Tokenizers: text <-> integer ids, the first and last step of a language model.

Two kinds, both saved as JSON and reloaded with ``load_tokenizer``:

* ``CharTokenizer``: one id per character seen in a training corpus (sorted).
  Tiny vocabulary, long sequences, and it cannot encode a character it has
  never seen (it has no <unk> token on purpose: an unknown input is an error).
* ``BPETokenizer``: byte-level byte-pair encoding that whitebox trains itself.
  The base vocabulary is the 256 byte values, so *any* Unicode text encodes
  (as its UTF-8 bytes); training then repeatedly merges the most frequent
  adjacent pair of ids into a new id:

      ids 0..255 = bytes;  merge i:  (a, b) -> 256 + i,  (a, b) = argmax_pair count(pair)

  ties are broken by the smallest pair, so training is deterministic.

Special tokens (``"[MASK]"`` for the masked objective) get the ids after the
ordinary ones. ``encode(text)`` treats text as plain characters; with
``allow_special=True`` the literal string ``"[MASK]"`` in the text becomes the
special id (this is how ``fill_mask`` reads its prompt).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

MASK = "[MASK]"


def _split_specials(text: str, specials: dict[str, int]) -> list[str | int]:
    """Cut ``text`` at occurrences of special-token strings: plain pieces stay str, specials become ids."""
    pieces: list[str | int] = [text]
    for name, sid in specials.items():
        out: list[str | int] = []
        for piece in pieces:
            if isinstance(piece, int):
                out.append(piece)
                continue
            parts = piece.split(name)
            for j, part in enumerate(parts):
                if j:
                    out.append(sid)
                if part:
                    out.append(part)
        pieces = out
    return pieces


class _Tokenizer:
    """What both tokenizers share: special tokens, ``encode`` with specials, decode to str."""

    kind = ""
    n_regular = 0  # ids [0, n_regular) are ordinary tokens; specials follow

    def __init__(self, specials: tuple[str, ...]) -> None:
        self.specials = tuple(specials)
        self._special_ids = {s: self.n_regular + i for i, s in enumerate(self.specials)}

    @property
    def vocab_size(self) -> int:
        return self.n_regular + len(self.specials)

    def special_id(self, name: str = MASK) -> int:
        """The id of a special token, e.g. ``special_id("[MASK]")``."""
        if name not in self._special_ids:
            raise ValueError(f"{type(self).__name__} has no special token {name!r} (it has {self.specials})")
        return self._special_ids[name]

    @property
    def mask_id(self) -> int:
        return self.special_id(MASK)

    def encode(self, text: str, allow_special: bool = False) -> np.ndarray:
        """Token ids (int64) of ``text``; with ``allow_special``, special-token strings map to their ids."""
        pieces = _split_specials(text, self._special_ids) if allow_special else [text]
        ids: list[int] = []
        for piece in pieces:
            ids.extend([piece] if isinstance(piece, int) else self._encode_plain(piece))
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        """Text of a sequence of ids; special ids are written as their names."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"{type(self).__name__}.decode: ids {bad[:5]} outside [0, {self.vocab_size})")
        out: list[str] = []
        run: list[int] = []
        for i in [*ids, -1]:  # -1: a sentinel that flushes the last run of ordinary ids
            if 0 <= i < self.n_regular:
                run.append(i)
                continue
            if run:
                out.append(self._decode_plain(run))
                run = []
            if i >= self.n_regular:
                out.append(self.specials[i - self.n_regular])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    # subclasses
    def _encode_plain(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_plain(self, ids: list[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError


class CharTokenizer(_Tokenizer):
    """One id per character: id i is the i-th of the sorted characters of the training text."""

    kind = "char"

    def __init__(self, chars: str, specials: tuple[str, ...] = ()) -> None:
        self.chars = "".join(sorted(set(chars)))
        self.n_regular = len(self.chars)
        self._index = {c: i for i, c in enumerate(self.chars)}
        super().__init__(specials)

    @classmethod
    def train(cls, text: str, specials: tuple[str, ...] = ()) -> CharTokenizer:
        """The alphabet of ``text``."""
        return cls(text, specials)

    def _encode_plain(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError:
            unseen = sorted(set(text) - set(self._index))
            raise ValueError(
                f"CharTokenizer: character(s) {', '.join(map(repr, unseen))} never seen in the training "
                f"text ({len(self.chars)} known characters). Use the byte-level BPE tokenizer "
                "(--tokenizer bpe), which encodes any text without an <unk> token, or remove them."
            ) from None

    def _decode_plain(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"type": self.kind, "chars": self.chars, "specials": list(self.specials)}


def pre_split(text: str) -> list[str]:
    """Cut text into chunks that each start with their leading whitespace: "a  b\\nc" -> ["a", "  b", "\\nc"].

    A new chunk starts at every whitespace character that follows a non-whitespace
    one. BPE merges never cross chunks, so tokens are (pieces of) words with their
    leading space, and training only has to count each distinct chunk once.
    """
    chunks: list[str] = []
    start = 0
    for i in range(1, len(text)):
        if text[i].isspace() and not text[i - 1].isspace():
            chunks.append(text[start:i])
            start = i
    if text:
        chunks.append(text[start:])
    return chunks


def _merge(ids: tuple[int, ...], pair: tuple[int, int], new: int) -> tuple[int, ...]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right, by ``new``."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def _pairs(ids: tuple[int, ...]) -> Counter[tuple[int, int]]:
    return Counter(itertools.pairwise(ids))


class BPETokenizer(_Tokenizer):
    """Byte-level BPE: ids 0..255 are bytes, id 256 + i is the i-th learned merge."""

    kind = "bpe"

    def __init__(self, merges: list[tuple[int, int]], specials: tuple[str, ...] = ()) -> None:
        self.merges = [tuple(m) for m in merges]
        self.n_regular = 256 + len(self.merges)
        self.rank = {pair: 256 + i for i, pair in enumerate(self.merges)}
        self.pieces = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.pieces.append(self.pieces[a] + self.pieces[b])
        self._cache: dict[str, list[int]] = {}
        super().__init__(specials)

    @classmethod
    def train(cls, text: str, vocab_size: int, specials: tuple[str, ...] = ()) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(specials)`` merges from ``text``.

        Each distinct chunk (``pre_split``) is a tuple of ids with a frequency. A
        table counts every adjacent pair over all chunks (weighted by frequency);
        each step merges the most frequent pair (smallest pair on ties) and updates
        the counts of only the chunks that contained it. Stops early when no pair
        occurs twice.
        """
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise ValueError(f"BPE: vocab_size {vocab_size} < 256 bytes + {len(specials)} special tokens")
        freq = Counter(pre_split(text))
        words = [tuple(w.encode("utf-8")) for w in freq]
        counts = list(freq.values())
        pair_count: Counter[tuple[int, int]] = Counter()
        where: dict[tuple[int, int], set[int]] = {}
        for w, (ids, n) in enumerate(zip(words, counts, strict=True)):
            for pair, k in _pairs(ids).items():
                pair_count[pair] += k * n
                where.setdefault(pair, set()).add(w)
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges and pair_count:
            best = min(pair_count, key=lambda p: (-pair_count[p], p))
            if pair_count[best] < 2:
                break
            new = 256 + len(merges)
            merges.append(best)
            for w in where.pop(best):
                old_pairs = _pairs(words[w])
                words[w] = _merge(words[w], best, new)
                new_pairs = _pairs(words[w])
                for pair in old_pairs | new_pairs:
                    delta = (new_pairs[pair] - old_pairs[pair]) * counts[w]
                    pair_count[pair] += delta
                    if pair_count[pair] <= 0:
                        del pair_count[pair]
                    if new_pairs[pair]:
                        where.setdefault(pair, set()).add(w)
                    elif pair in where:
                        where[pair].discard(w)
        return cls(merges, specials)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply merges to one chunk, always the earliest-learned applicable one first."""
        ids = tuple(chunk.encode("utf-8"))
        while len(ids) > 1:
            pair = min(itertools.pairwise(ids), key=lambda p: self.rank.get(p, 1 << 62))
            if pair not in self.rank:
                break
            ids = _merge(ids, pair, self.rank[pair])
        return list(ids)

    def _encode_plain(self, text: str) -> list[int]:
        out: list[int] = []
        for chunk in pre_split(text):
            if chunk not in self._cache:
                self._cache[chunk] = self._encode_chunk(chunk)
            out.extend(self._cache[chunk])
        return out

    def _decode_plain(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": self.kind, "merges": [list(m) for m in self.merges], "specials": list(self.specials)}


Tokenizer = CharTokenizer | BPETokenizer


def from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()``."""
    specials = tuple(d.get("specials", ()))
    if d.get("type") == "char":
        return CharTokenizer(d["chars"], specials)
    if d.get("type") == "bpe":
        return BPETokenizer([tuple(m) for m in d["merges"]], specials)
    raise ValueError(f"unknown tokenizer type {d.get('type')!r} (expected 'char' or 'bpe')")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved with ``save``."""
    return from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def train_tokenizer(kind: str, text: str, vocab_size: int = 512, specials: tuple[str, ...] = ()) -> Tokenizer:
    """``CharTokenizer`` ('char', vocab from the text) or ``BPETokenizer`` ('bpe', ``vocab_size`` ids)."""
    if kind == "char":
        return CharTokenizer.train(text, specials)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size, specials)
    raise ValueError(f"unknown tokenizer {kind!r}; choose 'char' or 'bpe'")
