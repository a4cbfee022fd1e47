"""Host threads (whitebox/host_threads.py): blocks cover every row once, small or device work runs
as one call, errors reach the caller, and every op that splits its work gives bit-identical
results (outputs and gradients) for any number of threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import whitebox as wb
import whitebox.functional as F
from whitebox import host_threads
from whitebox.host_threads import for_blocks


def test_blocks_cover_every_row_once_in_order(threads) -> None:
    threads(3)
    seen = np.zeros(10, dtype=int)
    names = set()

    def fn(r: slice) -> tuple[int, int]:
        seen[r] += 1
        names.add(threading.current_thread().name)
        return r.start, r.stop

    bounds = for_blocks(fn, 10, np.zeros((10, 4)))
    assert bounds == [(0, 3), (3, 6), (6, 10)]
    assert seen.tolist() == [1] * 10
    assert len(names) > 1  # the blocks ran on more than one thread


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_fewer_rows_than_threads(threads, rows: int) -> None:
    threads(4)
    assert (
        sum(len(range(r.start, r.stop)) for r in for_blocks(lambda r: r, rows, np.zeros((rows, 3)))) == rows
    )


def test_small_work_and_one_thread_run_as_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    before = host_threads.num_threads()
    try:
        host_threads.set_num_threads(4)
        big = np.zeros((4, host_threads.MIN_BLOCK))
        assert len(for_blocks(lambda r: r, 4, np.zeros((4, 3)))) == 1  # under MIN_BLOCK a block
        assert len(for_blocks(lambda r: r, 4, big)) == 4
        assert len(for_blocks(lambda r: r, 4, big.tolist())) == 1  # not a NumPy array (e.g. CuPy)
        host_threads.set_num_threads(1)
        assert len(for_blocks(lambda r: r, 4, big)) == 1
    finally:
        host_threads.set_num_threads(before)


def test_nested_calls_run_inline(threads) -> None:
    threads(2)
    like = np.zeros((8, 8))
    inner = for_blocks(lambda r: len(for_blocks(lambda q: q, 8, like)), 8, like)
    assert inner == [1, 1]


def test_an_error_in_any_block_reaches_the_caller(threads) -> None:
    threads(3)

    def fn(r: slice) -> None:
        if r.start > 0:
            raise ZeroDivisionError(f"block {r}")

    with pytest.raises(ZeroDivisionError, match="block"):
        for_blocks(fn, 9, np.zeros((9, 2)))
    assert for_blocks(lambda r: r.stop, 9, np.zeros((9, 2)))[-1] == 9  # the pool still works


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_names_bad_values(bad) -> None:
    with pytest.raises(ValueError, match="set_num_threads: n must be a positive integer"):
        host_threads.set_num_threads(bad)


def test_thread_count_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHITEBOX_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert host_threads._default_threads() == 3
    monkeypatch.delenv("WHITEBOX_NUM_THREADS")
    assert host_threads._default_threads() == 1
    monkeypatch.setenv("WHITEBOX_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="WHITEBOX_NUM_THREADS must be a positive integer, got 'many'"):
        host_threads._default_threads()


# ---- the ops that split their work: same bits for 1, 2 and 3 threads --------------------------


def _run_op(op, arrays: list[np.ndarray], seed: int = 0):
    """Outputs and input gradients of ``op`` (as NumPy arrays), for a fixed upstream gradient."""
    tensors = [wb.Tensor(a, requires_grad=True) for a in arrays]
    wb.manual_seed(seed)
    out = op(*tensors)
    upstream = np.random.default_rng(1).standard_normal(out.shape).astype(out.data.dtype)
    (out * wb.Tensor(upstream)).sum().backward()
    return [out.data.copy(), *[t.grad.copy() for t in tensors]]


def _same_for_any_thread_count(threads, op, arrays: list[np.ndarray], exact: bool = True) -> None:
    """Bit for bit (``exact``), or for ops with split products to float32 rounding: a BLAS may
    sum a block of rows in another order than all rows (the one NumPy ships does not)."""
    threads(1)
    expected = _run_op(op, arrays)
    for n in (2, 3):
        threads(n)
        for got, want in zip(_run_op(op, arrays), expected, strict=True):
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_bits_do_not_depend_on_threads(threads, affine: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 12)).astype(np.float32)
    if affine:
        w, b = rng.standard_normal((2, 12)).astype(np.float32)
        _same_for_any_thread_count(threads, F.layer_norm, [x, w, b])
    else:
        _same_for_any_thread_count(threads, F.layer_norm, [x])


MASKS = {
    "none": None,
    "causal (N, N)": np.tril(np.ones((6, 6), dtype=bool)),
    "per batch (B, 1, N, N)": np.random.default_rng(2).random((5, 1, 6, 6)) > 0.3,
    "full (B, H, N, N)": np.random.default_rng(3).random((5, 2, 6, 6)) > 0.3,
}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_bits_do_not_depend_on_threads(threads, mask: str, dropout: float) -> None:
    rng = np.random.default_rng(0)
    m = MASKS[mask]
    w = rng.standard_normal((5, 6, 2 * 4)).astype(np.float32)
    qkv = rng.standard_normal((5, 6, 3 * 2 * 4)).astype(np.float32)
    _same_for_any_thread_count(threads, lambda t: F.tied_attention(t, 2, mask=m, dropout=dropout)[0], [w])
    _same_for_any_thread_count(threads, lambda t: F.attention(t, 2, mask=m, dropout=dropout)[0], [qkv])


def test_attention_without_a_batch_axis_splits_over_heads(threads) -> None:
    w = np.random.default_rng(0).standard_normal((6, 3 * 4)).astype(np.float32)
    _same_for_any_thread_count(threads, lambda t: F.tied_attention(t, 3)[0], [w])


def test_a_mask_that_does_not_broadcast_is_named_before_any_work() -> None:
    w = wb.Tensor(np.zeros((2, 5, 8), dtype=np.float32))
    with pytest.raises(
        ValueError, match=r"mask of shape \(4, 4\) does not broadcast to the scores \(2, 2, 5, 5\)"
    ):
        F.tied_attention(w, 2, mask=np.ones((4, 4), dtype=bool))


@pytest.mark.parametrize("tokens", [1, 20])  # 1 token: the unfolded (generation) path
def test_ista_does_not_depend_on_threads(threads, tokens: int) -> None:
    from whitebox.crate.ista import ista

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, tokens, 8)).astype(np.float32)
    D = (0.3 * rng.standard_normal((8, 8))).astype(np.float32)
    _same_for_any_thread_count(threads, lambda a, b: ista(a, b, 0.1, 0.1), [x, D], exact=False)


@pytest.mark.parametrize(("a_shape", "b_shape"), [((3, 40, 7), (7, 5)), ((70, 6), (6, 9)), ((2, 3), (3, 4))])
def test_matmul_does_not_depend_on_threads(threads, a_shape, b_shape) -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (a_shape, b_shape))
    _same_for_any_thread_count(threads, lambda x, y: x @ y, [a, b], exact=False)


def test_product_blocks_are_never_one_row(threads) -> None:
    from whitebox.ops.linalg import MIN_ROWS, matmul_arrays

    threads(4)
    sizes = []
    a, b = np.ones((2 * MIN_ROWS + 1, 3), dtype=np.float32), np.ones((3, 2), dtype=np.float32)
    original = host_threads.for_blocks

    def spy(fn, rows, like, min_rows=1):
        sizes.extend(r.stop - r.start for r in original(lambda r: r, rows, like, min_rows))
        return original(fn, rows, like, min_rows)

    from whitebox.ops import linalg

    linalg.for_blocks, saved = spy, linalg.for_blocks
    try:
        np.testing.assert_array_equal(matmul_arrays(a, b), a @ b)
    finally:
        linalg.for_blocks = saved
    assert len(sizes) == 2 and min(sizes) >= MIN_ROWS


def test_a_training_step_does_not_depend_on_threads(threads, monkeypatch: pytest.MonkeyPatch) -> None:
    from whitebox.crate import CRATE
    from whitebox.optim import AdamW

    def train(n: int) -> list[np.ndarray]:
        threads(n)
        wb.manual_seed(0)
        model = CRATE(image_size=8, patch_size=2, num_classes=3, dim=16, depth=2, heads=2, channels=1)
        opt = AdamW(model.parameters(), lr=1e-2)
        rng = np.random.default_rng(0)
        x, y = wb.Tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32)), rng.integers(0, 3, 6)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return [np.array(v) for v in model.state_dict().values()]

    one = train(1)
    for n in (2, 3):
        for got, want in zip(train(n), one, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
