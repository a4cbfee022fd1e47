"""Numerics and Tensor API edge cases: NaN propagation, dtype rules, comparisons, checked hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import Tensor, nn
from whitebox.optim import SGD, AdamW


def test_softmax_spreads_nan_over_the_row():
    x = Tensor(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]))
    p = F.softmax(x, axis=-1).numpy()
    assert np.isnan(p[0]).all()
    assert np.isfinite(p[1]).all() and np.isclose(p[1].sum(), 1.0)
    lp = F.log_softmax(x, axis=-1).numpy()
    assert np.isnan(lp[0]).all()
    assert np.allclose(np.exp(lp[1]).sum(), 1.0)


def test_fully_masked_row_stays_zero_without_nan():
    x = Tensor(np.array([[-np.inf, -np.inf], [0.0, -np.inf]]), requires_grad=True)
    p = F.softmax(x, axis=-1)
    assert np.array_equal(p.numpy(), [[0.0, 0.0], [1.0, 0.0]])
    p.sum().backward()
    assert np.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_logdet_refuses_non_finite_like_non_positive_definite(bad):
    a = np.eye(3)
    a[1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        F.logdet(Tensor(a))
    with pytest.raises(ValueError, match="positive-definite"):
        F.logdet(Tensor(-np.eye(3)))


@pytest.mark.parametrize("data", [[1, 2, 3], [True, False]])
def test_integer_and_boolean_tensors_refuse_requires_grad(data):
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(data, requires_grad=True)
    assert not Tensor(data).requires_grad


def test_float_tensor_gradient_is_not_truncated():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * 0.5).sum().backward()
    assert np.allclose(x.grad, 0.5)


@pytest.mark.parametrize("data", [["a", "b"], None, [object()]])
def test_non_numeric_data_is_refused_at_construction(data):
    with pytest.raises(TypeError, match="dtype"):
        Tensor(data)


def test_comparisons_are_elementwise_boolean_tensors_and_hash_by_identity():
    a = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = Tensor([1.0, 0.0, 3.0])
    for result, want in [
        (a == b, [True, False, True]),
        (a != b, [False, True, False]),
        (a < 2.5, [True, True, False]),
        (a >= b, [True, True, True]),
    ]:
        assert isinstance(result, Tensor) and result.dtype == bool
        assert not result.requires_grad
        assert result.numpy().tolist() == want
    assert len({a, b, a}) == 2


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0])
@pytest.mark.parametrize("opt", [SGD, AdamW])
def test_optimizers_refuse_a_non_finite_or_negative_lr(opt, lr):
    p = nn.Parameter(np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="lr must be a finite number"):
        opt([p], lr=lr)
    o = opt([p], lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        o.lr = lr


def test_non_strict_load_that_matches_nothing_is_an_error():
    model = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="no key of the state dict matches"):
        model.load_state_dict({"other.weight": np.zeros((3, 2))}, strict=False)
    state = {"weight": np.ones((3, 2), dtype=np.float32)}
    model.load_state_dict(state, strict=False)  # a partial match still loads
    assert np.array_equal(model.weight.numpy(), np.ones((3, 2)))


# ---- checkpoint files: a user's broken file is one ValueError, never a traceback elsewhere ----


def _checkpoint(tmp_path):
    import whitebox

    path = tmp_path / "ck.npz"
    whitebox.save(path, {"w": np.arange(1000, dtype=np.float32), "meta": {"epoch": 3}})
    return path


def test_truncated_random_and_bit_flipped_checkpoints_give_one_value_error(tmp_path):
    import whitebox

    path = _checkpoint(tmp_path)
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    variants = {
        "truncated": raw[: len(raw) // 2],
        "random": rng.integers(0, 256, len(raw), dtype=np.uint8).tobytes(),
    }
    for pos in range(40, len(raw), max(1, len(raw) // 25)):  # flip one byte at a time across the file
        flipped = bytearray(raw)
        flipped[pos] ^= 0xFF
        variants[f"flip@{pos}"] = bytes(flipped)
    for name, data in variants.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(data)
        try:
            whitebox.load(bad)
        except ValueError as exc:
            assert str(bad) in str(exc), name
        # a flip in padding bytes may leave a readable file: then it must read back whole
        else:
            assert set(whitebox.load(bad)) == {"w", "meta"}, name


def test_a_header_claiming_huge_data_is_refused_without_allocating(tmp_path):
    import zipfile

    import whitebox

    path = tmp_path / "huge.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=np.float32))
    header["shape"] = (2**42,)
    with zipfile.ZipFile(path, "w") as zf, zf.open("__whitebox__.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)
    with pytest.raises(ValueError, match="declares"):
        whitebox.load(path)


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    import whitebox
    from whitebox import serialization

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serialization.np.lib.format, "write_array", full_disk)
    with pytest.raises(OSError, match="No space"):
        whitebox.save(tmp_path / "ck.npz", {"w": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []
