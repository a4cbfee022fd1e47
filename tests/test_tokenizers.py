"""Tokenizers: round trips (hypothesis), BPE merges worked out by hand, specials, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from whitebox.data.tokenizers import (
    MASK,
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    pre_split,
    train_tokenizer,
)

ALPHABET = "abc xyz\nÄé日"
CHAR = CharTokenizer.train(ALPHABET, specials=(MASK,))
BPE = BPETokenizer.train("the cat sat on the mat; the hat is flat. ünïcödé ünïcödé", 300, specials=(MASK,))


@given(st.text(alphabet=ALPHABET))
def test_char_round_trip(text):
    assert CHAR.decode(CHAR.encode(text)) == text


@given(st.text())
def test_bpe_round_trip_on_any_unicode(text):
    ids = BPE.encode(text)
    assert ids.dtype == np.int64 and (ids < BPE.n_regular).all()
    assert BPE.decode(ids) == text


@given(st.text())
def test_pre_split_loses_nothing(text):
    chunks = pre_split(text)
    assert "".join(chunks) == text
    assert all(c for c in chunks)


def test_bpe_merges_by_hand():
    """'aaabdaaabac' (a=97, b=98, c=99, d=100).

    Pair counts: aa 4, ab 2, others 1       -> merge (97, 97) = 256 'aa'
    now [256 97 98 100 256 97 98 97 99]: (256, 97) 2, (97, 98) 2: tie -> the smaller pair
                                            -> merge (97, 98) = 257 'ab'
    now [256 257 100 256 257 97 99]: (256, 257) 2 -> merge = 258 'aaab'
    now [258 100 258 97 99]: every pair once -> stop (no pair occurs twice).
    """
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=300)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.pieces[258] == b"aaab"
    assert tok.encode("aaabdaaabac").tolist() == [258, 100, 258, 97, 99]
    assert BPETokenizer.train("aaabdaaabac", vocab_size=257).merges == [(97, 97)]


def test_bpe_merges_stay_inside_whitespace_chunks():
    tok = BPETokenizer.train("ab ab ab", vocab_size=300)
    # chunks 'ab', ' ab', ' ab': (97, 98) 3, (32, 97) 2 -> merge 'ab' first, then ' ' + 'ab'
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.encode("ab ab").tolist() == [256, 257]


def test_specials_and_mask_marker():
    assert CHAR.mask_id == CHAR.vocab_size - 1
    ids = CHAR.encode(f"ab{MASK}c", allow_special=True)
    assert ids.tolist() == [*CHAR.encode("ab").tolist(), CHAR.mask_id, *CHAR.encode("c").tolist()]
    assert CHAR.decode(ids) == f"ab{MASK}c"
    ids = BPE.encode(f"the {MASK} sat", allow_special=True)
    assert (ids == BPE.mask_id).sum() == 1 and BPE.decode(ids) == f"the {MASK} sat"
    with pytest.raises(ValueError, match="no special token"):
        _ = CharTokenizer.train("ab").mask_id


def test_unseen_character_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'Q'.*BPE"):
        CHAR.encode("abQ")


@pytest.mark.parametrize("tok", [CHAR, BPE], ids=["char", "bpe"])
def test_save_load(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    back = load_tokenizer(tmp_path / "tok.json")
    assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
    text = "the cat ab" if tok is BPE else "abc 日"
    assert back.encode(text).tolist() == tok.encode(text).tolist()


def test_train_tokenizer_dispatch():
    assert isinstance(train_tokenizer("char", "ab"), CharTokenizer)
    assert train_tokenizer("bpe", "ab ab", vocab_size=258).vocab_size <= 258
    with pytest.raises(ValueError, match="char"):
        train_tokenizer("wordpiece", "ab")
