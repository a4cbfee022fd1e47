"""Corpora, the split, batches of windows, and the verified downloader (on a fake opener)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from whitebox.data import text as data


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
    assert data.download("http://x", dest, opener=opener, **kw).read_bytes() == payload
    data.download("http://x", dest, opener=opener, **kw)
    assert opener.calls == 1  # served from the cache the second time


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"sha256": "0" * 64}, "sha256"), ({"size": 3}, "size"), ({"first_line": "Hamlet"}, "first line")],
)
def test_download_rejects_a_bad_file(tmp_path, kw, message):
    dest = tmp_path / "corpus.txt"
    with pytest.raises(ValueError, match=message):
        data.download("http://x", dest, opener=_Opener(b"not it\n"), **kw)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_tinyshakespeare_goes_to_the_data_cache(tmp_path, monkeypatch):
    payload = b"First Citizen:\n" + b"x" * (data.TINYSHAKESPEARE_SIZE - 15)
    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path))
    text = data.tinyshakespeare_text(opener=_Opener(payload))
    assert text.startswith("First Citizen:") and (tmp_path / "tinyshakespeare.txt").exists()
