"""Corpora, the split, batches of windows, and the verified downloader (on a fake opener)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from whitebox.data import text as data
from whitebox.data.download import ChecksumError, fetch
from whitebox.data.masking import IGNORE_INDEX, mask_tokens


def test_pydoc_corpus_is_deterministic_english():
    a, b = data.load_corpus("pydoc"), data.load_corpus("pydoc")
    assert a == b and len(a) > 100_000
    assert " the " in a


def test_unknown_corpus_lists_valid_names():
    with pytest.raises(ValueError, match="pydoc, tinyshakespeare"):
        data.load_corpus("wikitext")


def test_split_holds_out_the_tail():
    ids = np.arange(100)
    train, val = data.split(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_get_batch_targets_are_shifted_inputs():
    ids = np.arange(1000)
    x, y = data.get_batch(ids, 16, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)
    x2, _ = data.get_batch(ids, 16, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    with pytest.raises(ValueError, match="block_size"):
        data.get_batch(np.arange(10), 10, 1, np.random.default_rng(0))


def test_windows_cover_in_order():
    x, y = data.windows(np.arange(10), 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    np.testing.assert_array_equal(y, x + 1)


class _Opener:
    def __init__(self, payload: bytes) -> None:
        self.payload, self.calls = payload, 0

    def __call__(self, url: str) -> io.BytesIO:
        self.calls += 1
        return io.BytesIO(self.payload)


def test_download_verifies_and_caches(tmp_path):
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    opener = _Opener(payload)
    dest = tmp_path / "sub" / "corpus.txt"
    kw = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "first_line": "First Citizen:"}
    assert fetch("http://x", dest, opener=opener, **kw).read_bytes() == payload
    fetch("http://x", dest, opener=opener, **kw)
    assert opener.calls == 1  # served from the cache the second time


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"sha256": "0" * 64}, "sha256"), ({"size": 3}, "size"), ({"first_line": "Hamlet"}, "first line")],
)
def test_download_rejects_a_bad_file(tmp_path, kw, message):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(ChecksumError, match=message):
        fetch("http://x", dest, opener=_Opener(b"not it\n"), **kw)
    assert not dest.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("tilde", [False, True])
def test_tinyshakespeare_goes_to_the_data_cache(tmp_path, monkeypatch, tilde):
    """The text corpus uses the image datasets' cache, ``~`` in ``$WHITEBOX_DATA`` expanded."""
    payload = b"First Citizen:\n" + b"x" * (data.TINYSHAKESPEARE_SIZE - 15)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WHITEBOX_DATA", "~/cache" if tilde else str(tmp_path / "cache"))
    opener = _Opener(payload)
    text = data.tinyshakespeare_text(opener=opener)
    assert text.startswith("First Citizen:") and (tmp_path / "cache" / "tinyshakespeare.txt").exists()
    assert data.tinyshakespeare_text(opener=opener) == text and opener.calls == 1


def test_mask_tokens_follows_the_80_10_10_rule():
    ids = np.random.default_rng(0).integers(0, 50, size=(200, 100))
    inputs, targets = mask_tokens(ids, np.random.default_rng(1), mask_id=50, vocab_size=50, p=0.15)
    chosen = targets != IGNORE_INDEX
    assert abs(chosen.mean() - 0.15) < 0.01
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # unchosen positions untouched
    masked = (inputs == 50)[chosen].mean()
    assert abs(masked - 0.8) < 0.02 and inputs.max() <= 50
    kept_or_random = inputs[chosen & (inputs != 50)]
    assert 0.15 < len(kept_or_random) / chosen.sum() < 0.25
    with pytest.raises(ValueError, match="p must be"):
        mask_tokens(ids, np.random.default_rng(1), 50, 50, p=1.5)
