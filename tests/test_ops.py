"""Every op of the core: forward values against NumPy, gradients against finite differences.

Inputs are float64 (so central differences are accurate), drawn by hypothesis over
shapes with broadcasting, size-1 axes, an empty leading axis and non-contiguous
layouts (transposed and strided views of NumPy arrays). Point-wise data is kept
away from the kinks of abs/relu/clip/max/soft_threshold.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.special
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import whitebox as wb
import whitebox.functional as F
from whitebox import backend, ops
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor

seeds = st.integers(0, 2**32 - 1)
layouts = st.sampled_from(["contiguous", "transposed", "strided"])
# an empty leading axis in about one draw out of five
empties = st.sampled_from([False, False, False, False, True])


# ---- helpers -------------------------------------------------------------------
def lay(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout: a transposed or a strided view."""
    a = np.asarray(a)
    if layout == "contiguous":
        return a
    out = a
    if layout == "transposed" and a.ndim >= 2:
        out = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)
    if out.flags.c_contiguous:  # strided (or a transpose that a size-1 axis made contiguous)
        big = np.zeros((*a.shape, 2), dtype=a.dtype)
        big[..., 0] = a
        out = big[..., 0]
    assert out.size <= 1 or not out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    return out


def tensor(a: Any, device: str, requires_grad: bool = True) -> Tensor:
    return Tensor(backend.to_device(np.asarray(a), device), requires_grad=requires_grad)


def away(a: np.ndarray, kinks: list[float], margin: float = 0.05) -> np.ndarray:
    """``a`` with every value within ``margin`` of a kink pushed 2 * margin away from it."""
    a = np.array(a, dtype=np.float64)
    for k in kinks:
        close = np.abs(a - k) < margin
        a[close] = k + np.where(a[close] >= k, 2 * margin, -2 * margin)
    return a


def check(out: Tensor, expected: Any, rtol: float = 1e-7, atol: float = 1e-10) -> None:
    expected = np.asarray(expected)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol, atol=atol)


@st.composite
def shapes(draw: st.DrawFn, min_dims: int = 0, max_dims: int = 3, max_side: int = 3) -> tuple[int, ...]:
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side))
    return (0, *shape) if draw(empties) else shape


@st.composite
def broadcast_shapes(draw: st.DrawFn, n: int = 2, max_dims: int = 3) -> tuple[tuple[int, ...], ...]:
    """``n`` mutually broadcastable shapes; sometimes with an empty leading axis (0 vs 0, 1 or absent)."""
    found = draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=max_dims, max_side=3))
    out = found.input_shapes
    if draw(empties):  # a new leading axis of the broadcast shape: 0 in the first, 0, 1 or absent in the rest
        nd = max(len(s) for s in out)

        def grow(s: tuple[int, ...], lead: tuple[int, ...]) -> tuple[int, ...]:
            return (*lead, *(1,) * (nd - len(s)), *s) if lead else s

        out = (grow(out[0], (0,)), *(grow(s, draw(st.sampled_from([(), (1,), (0,)]))) for s in out[1:]))
    return out


# ---- elementwise ---------------------------------------------------------------
SQRT2 = math.sqrt(2)


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + scipy.special.erf(x / SQRT2))


def _gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _soft(x: np.ndarray, lam: float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - lam, 0)


# name: (whitebox fn, NumPy reference, (low, high) of the data, kinks to stay away from)
UNARY: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[np.ndarray], np.ndarray], tuple, list]] = {
    "neg": (operator.neg, np.negative, (-2, 2), []),
    "exp": (ops.exp, np.exp, (-2, 2), []),
    "exp_method": (lambda x: x.exp(), np.exp, (-2, 2), []),
    "log": (ops.log, np.log, (0.3, 3), []),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, (0.3, 3), []),
    "tanh": (ops.tanh, np.tanh, (-2, 2), []),
    "sigmoid": (ops.sigmoid, scipy.special.expit, (-5, 5), []),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), (-2, 2), [0.0]),
    "gelu": (ops.gelu, _gelu_ref, (-3, 3), []),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), _gelu_tanh_ref, (-3, 3), []),
    "abs": (lambda x: x.abs(), np.abs, (-2, 2), [0.0]),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), (-2, 2), [-0.5, 0.7]),
    "clip_lo": (lambda x: x.clip(lo=-0.5), lambda x: np.maximum(x, -0.5), (-2, 2), [-0.5]),
    "clip_hi": (lambda x: x.clip(hi=0.7), lambda x: np.minimum(x, 0.7), (-2, 2), [0.7]),
    "soft_threshold": (lambda x: ops.soft_threshold(x, 0.3), lambda x: _soft(x, 0.3), (-2, 2), [-0.3, 0.3]),
    "soft_threshold_nonneg": (
        lambda x: ops.soft_threshold(x, 0.3, nonnegative=True),
        lambda x: np.maximum(x - 0.3, 0),
        (-2, 2),
        [0.3],
    ),
    "square": (lambda x: x**2, np.square, (-2, 2), []),
    "pow_half": (lambda x: x**0.5, np.sqrt, (0.3, 3), []),
    "rpow": (lambda x: 2.0**x, lambda x: 2.0**x, (-2, 2), []),
    "rsub": (lambda x: 1.5 - x, lambda x: 1.5 - x, (-2, 2), []),
    "rdiv": (lambda x: 3.0 / x, lambda x: 3.0 / x, (0.5, 2), []),
    "scalar_mul_add": (lambda x: 2.0 * x + 1, lambda x: 2.0 * x + 1, (-2, 2), []),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes(), seed=seeds, layout=layouts)
def test_unary(device: str, name: str, shape: tuple[int, ...], seed: int, layout: str) -> None:
    fn, ref, (lo, hi), kinks = UNARY[name]
    a = away(np.random.default_rng(seed).uniform(lo, hi, shape), kinks)
    x = tensor(lay(a, layout), device)
    out = fn(x)
    assert out.dtype == np.float64
    check(out, ref(a))
    gradcheck(fn, x)


def _grid(rng: np.random.Generator, shape: tuple[int, ...], offset: float) -> np.ndarray:
    """Values on a 0.5-grid shifted by ``offset``: two grids 0.25 apart never tie."""
    return rng.integers(-4, 5, shape) * 0.5 + offset


BINARY: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    # name: (whitebox fn, NumPy reference, draw a, draw b)
    "add": (operator.add, np.add, lambda r, s: r.uniform(-2, 2, s), lambda r, s: r.uniform(-2, 2, s)),
    "sub": (operator.sub, np.subtract, lambda r, s: r.uniform(-2, 2, s), lambda r, s: r.uniform(-2, 2, s)),
    "mul": (operator.mul, np.multiply, lambda r, s: r.uniform(-2, 2, s), lambda r, s: r.uniform(-2, 2, s)),
    "div": (
        operator.truediv,
        np.divide,
        lambda r, s: r.uniform(-2, 2, s),
        lambda r, s: r.choice([-1, 1], s) * r.uniform(0.5, 2, s),
    ),
    "pow": (operator.pow, np.power, lambda r, s: r.uniform(0.5, 2, s), lambda r, s: r.uniform(-2, 2, s)),
    "maximum": (ops.maximum, np.maximum, lambda r, s: _grid(r, s, 0.25), lambda r, s: _grid(r, s, 0.0)),
    "minimum": (ops.minimum, np.minimum, lambda r, s: _grid(r, s, 0.25), lambda r, s: _grid(r, s, 0.0)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=broadcast_shapes(), seed=seeds, layout_a=layouts, layout_b=layouts)
def test_binary(device: str, name: str, *, shapes: tuple, seed: int, layout_a: str, layout_b: str) -> None:
    fn, ref, draw_a, draw_b = BINARY[name]
    rng = np.random.default_rng(seed)
    a, b = np.asarray(draw_a(rng, shapes[0])), np.asarray(draw_b(rng, shapes[1]))
    x, y = tensor(lay(a, layout_a), device), tensor(lay(b, layout_b), device)
    out = fn(x, y)
    check(out, ref(a, b))
    gradcheck(fn, x, y)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
def test_binary_with_one_constant(device: str, name: str) -> None:
    """Only one operand needs grad; the other is a plain array (on either side)."""
    fn, ref, _, _ = BINARY[name]
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2, (2, 3)), rng.uniform(0.5, 2, (3,))
    x = tensor(a, device)
    check(fn(x, backend.to_device(b, device)), ref(a, b))
    gradcheck(lambda t: fn(t, backend.to_device(b, device)), x)
    check(fn(backend.to_device(b, device), x), ref(b, a))
    gradcheck(lambda t: fn(backend.to_device(b, device), t), x)


@given(shapes=broadcast_shapes(n=3), seed=seeds, layout=layouts)
def test_where(device: str, shapes: tuple, seed: int, layout: str) -> None:
    rng = np.random.default_rng(seed)
    cond = rng.random(shapes[0]) < 0.5
    a, b = rng.uniform(-2, 2, shapes[1]), rng.uniform(-2, 2, shapes[2])
    x, y = tensor(lay(a, layout), device), tensor(b, device)
    c = Tensor(backend.to_device(cond, device))
    check(wb.where(c, x, y), np.where(cond, a, b))
    gradcheck(lambda p, q: ops.where(c, p, q), x, y)
    # the condition may also be a plain array
    check(ops.where(backend.to_device(cond, device), x, y), np.where(cond, a, b))


def test_infinities_do_not_become_nan(device: str) -> None:
    """-inf * 0 is NaN: a mask multiply would turn relu(-inf) into NaN instead of 0."""
    a = np.array([-np.inf, -1.0, 2.0, np.inf])
    x = tensor(a, device)
    check(ops.relu(x), [0, 0, 2, np.inf])
    check(ops.soft_threshold(x, 0.5), [-np.inf, -0.5, 1.5, np.inf])
    check(ops.soft_threshold(x, 0.5, nonnegative=True), [0, 0, 1.5, np.inf])
    check(ops.clip(x, -1, 1), [-1, -1, 1, 1])
    check(ops.sigmoid(x), [0, scipy.special.expit(-1), scipy.special.expit(2), 1])
    check(ops.tanh(x), np.tanh(a))


def test_maximum_tie_sends_gradient_to_first(device: str) -> None:
    x = tensor([1.0, 2.0, 3.0], device)
    y = tensor([1.0, 0.0, 3.0], device)
    ops.maximum(x, y).sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(x.grad), [1, 1, 1])
    np.testing.assert_array_equal(backend.to_numpy(y.grad), [0, 0, 0])


def test_ndarray_on_the_left_defers_to_tensor(device: str) -> None:
    a = np.arange(3.0)
    x = tensor(np.ones(3), device)
    out = backend.to_device(a, device) + x
    assert isinstance(out, Tensor)
    check(out, a + 1)
    out = np.float64(2.0) * x
    assert isinstance(out, Tensor)
    check(out, 2 * np.ones(3))


# ---- reductions ----------------------------------------------------------------
@st.composite
def reduce_cases(draw: st.DrawFn, allow_empty_axis: bool) -> tuple[tuple[int, ...], Any, bool]:
    """(shape, axis, keepdims); with an empty leading axis only the other axes are reduced,
    unless ``allow_empty_axis`` (a sum over nothing is 0; a mean, max or var is not defined)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    empty = draw(empties)
    if empty:
        shape = (0, *shape)
    nd = len(shape)
    pick = range(nd) if allow_empty_axis or not empty else range(1, nd)
    single = st.sampled_from(pick).flatmap(lambda ax: st.sampled_from([ax, ax - nd]))
    axis = draw(
        st.one_of(
            st.none() if allow_empty_axis or not empty else st.nothing(),
            single,
            st.lists(single, min_size=1, max_size=nd, unique_by=lambda ax: ax % nd).map(tuple),
        )
    )
    return shape, axis, draw(st.booleans())


@pytest.mark.parametrize("name", ["sum", "mean", "var", "var_ddof1", "max"])
@given(data=st.data(), seed=seeds, layout=layouts)
def test_reductions(device: str, name: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape, axis, keepdims = data.draw(reduce_cases(allow_empty_axis=name == "sum"))
    rng = np.random.default_rng(seed)
    if name == "max":  # distinct values (0.37 apart): no ties, so the max is differentiable
        a = rng.permutation(math.prod(shape)).reshape(shape) * 0.37 - 1.0
    else:
        a = rng.uniform(-2, 2, shape)
    ddof = 1 if name == "var_ddof1" else 0
    if ddof:
        count = math.prod(shape[ax] for ax in (range(len(shape)) if axis is None else np.atleast_1d(axis)))
        assume(count > 1)
    fns = {
        "sum": (lambda t: t.sum(axis, keepdims), lambda v: np.sum(v, axis=axis, keepdims=keepdims)),
        "mean": (lambda t: t.mean(axis, keepdims), lambda v: np.mean(v, axis=axis, keepdims=keepdims)),
        "var": (lambda t: t.var(axis, keepdims), lambda v: np.var(v, axis=axis, keepdims=keepdims)),
        "var_ddof1": (
            lambda t: ops.var(t, axis, keepdims, ddof=1),
            lambda v: np.var(v, axis=axis, keepdims=keepdims, ddof=1),
        ),
        "max": (lambda t: t.max(axis, keepdims), lambda v: np.max(v, axis=axis, keepdims=keepdims)),
    }
    fn, ref = fns[name]
    x = tensor(lay(a, layout), device)
    check(fn(x), ref(a))
    gradcheck(fn, x)


def test_reduction_axis_may_be_a_numpy_integer(device: str) -> None:
    a = np.arange(6.0).reshape(2, 3)
    x = tensor(a, device)
    check(x.sum(axis=np.int64(1)), a.sum(axis=1))
    check(x.mean(axis=(np.int32(0), -1)), a.mean())


def test_max_ties_share_the_gradient(device: str) -> None:
    x = tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]], device)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(x.grad), [[0, 0.5, 0.5, 0], [0.25, 0.25, 0.25, 0.25]])


# ---- matmul --------------------------------------------------------------------
def _matmul_check(a: np.ndarray, b: np.ndarray, device: str, la: str = "contiguous", lb: str = "contiguous"):
    x, y = tensor(lay(a, la), device), tensor(lay(b, lb), device)
    check(x @ y, a @ b)
    gradcheck(operator.matmul, x, y)
    gradcheck(lambda t: t @ y.detach(), x)  # only one side needs grad
    gradcheck(lambda t: x.detach() @ t, y)


@given(
    found=hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=3),
    seed=seeds,
    la=layouts,
    lb=layouts,
)
def test_matmul(device: str, found: Any, seed: int, la: str, lb: str) -> None:
    """Batched and broadcasting matmul, with 1-D operands on either side."""
    rng = np.random.default_rng(seed)
    sa, sb = found.input_shapes
    _matmul_check(rng.uniform(-1, 1, sa), rng.uniform(-1, 1, sb), device, la, lb)


@pytest.mark.parametrize(
    ("sa", "sb"),
    [
        ((2, 3, 4), (4, 5)),  # a linear layer: 3-D @ 2-D
        ((2, 2, 3, 4), (4, 2)),
        ((0, 3, 4), (4, 5)),  # empty batch
        ((3, 4), (0, 4, 2)),
        ((2, 3, 4), (4,)),  # 3-D @ 1-D
        ((4,), (2, 4, 3)),  # 1-D @ 3-D
        ((4,), (4,)),  # inner product
        ((2, 1, 3, 4), (5, 4, 2)),  # broadcasting batch axes
        ((1, 3), (3, 1)),
        ((2, 3, 0), (0, 4)),  # an empty inner axis: the product is zeros
        ((2, 3, 4), (4, 0)),
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_matmul_cases(device: str, sa: tuple, sb: tuple, layout: str) -> None:
    rng = np.random.default_rng(1)
    _matmul_check(rng.uniform(-1, 1, sa), rng.uniform(-1, 1, sb), device, layout, layout)


def test_linear_and_mse(device: str) -> None:
    rng = np.random.default_rng(2)
    a, w, b, t = (
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal((5, 4)),
        rng.standard_normal(5),
        rng.standard_normal((2, 3, 5)),
    )
    x, W, B = tensor(a, device), tensor(w, device), tensor(b, device)
    check(F.linear(x, W, B), a @ w.T + b)
    gradcheck(F.linear, x, W, B)
    check(F.mse_loss(F.linear(x, W), backend.to_device(t, device)), np.mean((a @ w.T - t) ** 2))
    gradcheck(lambda p: F.mse_loss(p, backend.to_device(t, device)), tensor(a @ w.T, device))


# ---- shape ops -----------------------------------------------------------------
@st.composite
def reshape_targets(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape with the same size: the axes shuffled, some neighbours merged, 1s inserted, maybe a -1."""
    dims = list(draw(st.permutations(shape))) if shape else []
    merged: list[int] = []
    for n in dims:
        if merged and draw(st.booleans()):
            merged[-1] *= n
        else:
            merged.append(n)
    for _ in range(draw(st.integers(0, 2))):
        merged.insert(draw(st.integers(0, len(merged))), 1)
    if merged and math.prod(shape) > 0 and draw(st.booleans()):
        merged[draw(st.integers(0, len(merged) - 1))] = -1
    return tuple(merged)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_reshape(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes())
    target = data.draw(reshape_targets(shape))
    a = np.random.default_rng(seed).uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    check(x.reshape(target), a.reshape(target))
    check(x.reshape(*target), a.reshape(target))
    gradcheck(lambda t: t.reshape(target), x)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_transpose_permute_swapaxes(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes(min_dims=1))
    nd = len(shape)
    perm = tuple(data.draw(st.permutations(range(nd))))
    neg = tuple(ax - nd for ax in perm)
    i, j = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    a = np.random.default_rng(seed).uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    check(x.transpose(perm), a.transpose(perm))
    check(x.transpose(*neg), a.transpose(perm))
    check(x.permute(perm), a.transpose(perm))
    check(x.T, a.T)
    check(x.swapaxes(i, j), a.swapaxes(i, j))
    gradcheck(lambda t: ops.permute(t, perm), x)
    gradcheck(lambda t: t.T, x)
    gradcheck(lambda t: t.swapaxes(i, j), x)
    if nd >= 2:
        check(x.mT, np.swapaxes(a, -1, -2))
        gradcheck(lambda t: t.mT, x)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_expand(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    target = data.draw(shapes(min_dims=1))
    # the input: some axes of the target turned into 1, some leading axes dropped
    src = tuple(1 if data.draw(st.booleans()) else n for n in target)
    src = src[data.draw(st.integers(0, len(src))) :]
    a = np.random.default_rng(seed).uniform(-1, 1, src)
    x = tensor(lay(a, layout), device)
    check(x.expand(target), np.broadcast_to(a, target))
    check(x.expand(*target), np.broadcast_to(a, target))
    gradcheck(lambda t: t.expand(target), x)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_getitem_basic(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes(min_dims=1))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True))
    a = np.random.default_rng(seed).uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    check(x[index], a[index])
    gradcheck(lambda t: t[index], x)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_getitem_integer_arrays(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    """Gather by integer arrays (repeats likely): the backward must scatter-add."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    index = data.draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=0, max_dims=2)))
    a = np.random.default_rng(seed).uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    dev_index = tuple(backend.to_device(i, device) for i in index)
    check(x[dev_index], a[index])
    gradcheck(lambda t: t[dev_index], x)


def test_getitem_repeated_indices_accumulate(device: str) -> None:
    x = tensor(np.arange(4.0), device)
    idx = backend.to_device(np.array([0, 2, 0, 0, 3]), device)
    x[idx].sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(x.grad), [3, 0, 1, 1])
    y = tensor(np.arange(6.0).reshape(2, 3), device)
    (y[:, [1, 1, 2]] * 2).sum().backward()  # an integer list after a slice
    np.testing.assert_array_equal(backend.to_numpy(y.grad), [[0, 4, 2], [0, 4, 2]])
    z = tensor(np.arange(6.0).reshape(2, 3), device)
    z[Tensor(backend.to_device(np.array([1, 1]), device)), np.int64(2)].sum().backward()  # Tensor index
    np.testing.assert_array_equal(backend.to_numpy(z.grad), [[0, 0, 0], [0, 0, 2]])


@given(data=st.data(), seed=seeds, layout=layouts)
def test_getitem_boolean_mask(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes(min_dims=1))
    k = data.draw(st.integers(1, len(shape)))  # the mask covers the leading k axes
    rng = np.random.default_rng(seed)
    mask = rng.random(shape[:k]) < 0.5
    a = rng.uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    dev_mask = backend.to_device(mask, device)
    check(x[dev_mask], a[mask])
    check(x[Tensor(dev_mask)], a[mask])
    gradcheck(lambda t: t[dev_mask], x)
    if len(shape) >= 2:  # a mask after a slice
        m2 = rng.random(shape[1]) < 0.5
        idx = (slice(None), backend.to_device(m2, device))
        check(x[idx], a[:, m2])
        gradcheck(lambda t: t[idx], x)


@st.composite
def concat_cases(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], int]:
    base = draw(shapes(min_dims=1))
    nd = len(base)
    axis = draw(st.integers(-nd, nd - 1))
    lengths = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    out = [tuple(n if i == axis % nd else s for i, s in enumerate(base)) for n in lengths]
    return out, axis


@given(case=concat_cases(), seed=seeds, layout=layouts)
def test_concat(device: str, case: tuple, seed: int, layout: str) -> None:
    shape_list, axis = case
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, s) for s in shape_list]
    xs = [tensor(lay(a, layout), device) for a in arrays]
    check(wb.concat(xs, axis=axis), np.concatenate(arrays, axis=axis))
    gradcheck(lambda *ts: ops.concat(ts, axis=axis), *xs)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_stack(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes())
    n = data.draw(st.integers(1, 3))
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, shape) for _ in range(n)]
    xs = [tensor(lay(a, layout), device) for a in arrays]
    check(wb.stack(xs, axis=axis), np.stack(arrays, axis=axis))
    gradcheck(lambda *ts: ops.stack(ts, axis=axis), *xs)


@given(data=st.data(), seed=seeds, layout=layouts)
def test_split(device: str, data: st.DataObject, seed: int, layout: str) -> None:
    shape = data.draw(shapes(min_dims=1))
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    n = shape[axis]
    divisors = [k for k in range(1, 4) if n % k == 0]
    sections = data.draw(
        st.one_of(
            st.sampled_from(divisors),
            st.lists(st.integers(0, n), max_size=3).map(sorted),
        )
    )
    a = np.random.default_rng(seed).uniform(-1, 1, shape)
    x = tensor(lay(a, layout), device)
    pieces = ops.split(x, sections, axis=axis)
    expected = np.split(a, sections, axis=axis)
    assert len(pieces) == len(expected)
    for p, e in zip(pieces, expected, strict=True):
        check(p, e)
    # each piece scaled differently, so a gradient routed to the wrong piece shows
    gradcheck(
        lambda t: ops.concat(
            [p * (i + 1) for i, p in enumerate(ops.split(t, sections, axis=axis))], axis=axis
        ),
        x,
    )


@pytest.mark.parametrize("sections", [1, 2, 3, [0, 0]])
def test_split_empty_axis(device: str, sections: Any) -> None:
    x = tensor(np.zeros((0, 2)), device)
    pieces = ops.split(x, sections, axis=0)
    assert [p.shape for p in pieces] == [e.shape for e in np.split(np.zeros((0, 2)), sections, axis=0)]
    gradcheck(lambda t: ops.concat(ops.split(t, sections, axis=0), axis=0), x)


# ---- fused ops -----------------------------------------------------------------
@st.composite
def axis_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], int]:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    nd = len(shape)
    axis = draw(st.integers(-nd, nd - 1))
    if draw(empties) and nd >= 1:  # an empty axis other than the softmax one
        shape = (0, *shape)
        axis = axis if axis < 0 else axis + 1
    return shape, axis


@given(case=axis_cases(), seed=seeds, layout=layouts)
def test_softmax_family(device: str, case: tuple, seed: int, layout: str) -> None:
    shape, axis = case
    a = np.random.default_rng(seed).uniform(-3, 3, shape)
    x = tensor(lay(a, layout), device)
    check(F.softmax(x, axis=axis), scipy.special.softmax(a, axis=axis))
    check(F.log_softmax(x, axis=axis), scipy.special.log_softmax(a, axis=axis))
    check(F.logsumexp(x, axis=axis), scipy.special.logsumexp(a, axis=axis))
    check(ops.logsumexp(x, axis=axis, keepdims=True), scipy.special.logsumexp(a, axis=axis, keepdims=True))
    gradcheck(lambda t: F.softmax(t, axis=axis), x)
    gradcheck(lambda t: F.log_softmax(t, axis=axis), x)
    gradcheck(lambda t: F.logsumexp(t, axis=axis), x)
    gradcheck(lambda t: ops.logsumexp(t, axis=axis, keepdims=True), x)


def test_softmax_is_stable_for_large_logits(device: str) -> None:
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]])
    x = tensor(a, device)
    check(F.softmax(x), scipy.special.softmax(a, axis=-1))
    check(F.log_softmax(x), scipy.special.log_softmax(a, axis=-1))
    check(F.logsumexp(x), scipy.special.logsumexp(a, axis=-1))


def _layer_norm_ref(a: np.ndarray, w: Any, b: Any, eps: float = 1e-5) -> np.ndarray:
    out = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + eps)
    out = out * w if w is not None else out
    return out + b if b is not None else out


@given(
    shape=shapes(min_dims=1),
    seed=seeds,
    layout=layouts,
    use_weight=st.booleans(),
    use_bias=st.booleans(),
)
def test_layer_norm(
    device: str, *, shape: tuple, seed: int, layout: str, use_weight: bool, use_bias: bool
) -> None:
    assume(shape[-1] >= 2)
    rng = np.random.default_rng(seed)
    d = shape[-1]
    a = rng.uniform(-2, 2, shape)
    w = rng.uniform(0.5, 1.5, d) if use_weight else None
    b = rng.uniform(-1, 1, d) if use_bias else None
    x = tensor(lay(a, layout), device)
    W = tensor(w, device) if use_weight else None
    B = tensor(b, device) if use_bias else None
    check(F.layer_norm(x, W, B), _layer_norm_ref(a, w, b))
    params = [t for t in (W, B) if t is not None]

    def fn(t: Tensor, *ps: Tensor) -> Tensor:
        it = iter(ps)
        return F.layer_norm(t, next(it) if use_weight else None, next(it) if use_bias else None)

    gradcheck(fn, x, *params)


def _cross_entropy_ref(
    logits: np.ndarray, t: np.ndarray, s: float, ignore: Any, reduction: str
) -> np.ndarray:
    C = logits.shape[-1]
    logp = scipy.special.log_softmax(logits, axis=-1)
    valid = np.ones(t.shape, bool) if ignore is None else t != ignore
    onehot = np.eye(C)[np.where(valid, t, 0)]
    q = (1 - s) * onehot + s / C
    loss = -(q * logp).sum(-1) * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(valid.sum(), 1)


@given(
    batch=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3),
    classes=st.integers(1, 4),
    seed=seeds,
    smoothing=st.sampled_from([0.0, 0.1, 0.3]),
    ignore=st.sampled_from([None, -100, 0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    layout=layouts,
)
def test_cross_entropy(
    device: str,
    *,
    batch: tuple,
    classes: int,
    seed: int,
    smoothing: float,
    ignore: Any,
    reduction: str,
    layout: str,
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-3, 3, (*batch, classes))
    t = rng.integers(0, classes, batch)
    if ignore == -100:
        t = np.where(rng.random(batch) < 0.3, -100, t)
    x = tensor(lay(a, layout), device)
    targets = backend.to_device(t, device)
    kw = {"label_smoothing": smoothing, "ignore_index": ignore, "reduction": reduction}
    check(F.cross_entropy(x, targets, **kw), _cross_entropy_ref(a, t, smoothing, ignore, reduction))
    check(F.cross_entropy(x, Tensor(targets), **kw), _cross_entropy_ref(a, t, smoothing, ignore, reduction))
    check(F.cross_entropy(x, t, **kw), _cross_entropy_ref(a, t, smoothing, ignore, reduction))  # host targets
    gradcheck(lambda z: F.cross_entropy(z, targets, **kw), x)


def test_cross_entropy_matches_torch(device: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 5, 6))
    t = rng.integers(0, 6, (4, 5))
    t[0, :2] = -100
    for reduction in ("mean", "sum", "none"):
        for s in (0.0, 0.2):
            ours = F.cross_entropy(
                tensor(a, device, False),
                t.tolist(),  # a nested list works too
                label_smoothing=s,
                ignore_index=-100,
                reduction=reduction,
            )
            ref = torch.nn.functional.cross_entropy(
                torch.tensor(a).reshape(-1, 6),
                torch.tensor(t).reshape(-1),
                label_smoothing=s,
                ignore_index=-100,
                reduction=reduction,
            )
            np.testing.assert_allclose(ours.numpy().reshape(-1), ref.numpy().reshape(-1), rtol=1e-10)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(device: str, p: float) -> None:
    wb.manual_seed(0)
    a = np.random.default_rng(0).uniform(1, 2, (200, 500)).astype(np.float32)
    x = tensor(a, device)
    out = F.dropout(x, p)
    o = out.numpy()
    kept = o != 0
    # 100,000 draws: the kept fraction's standard deviation is below 0.0016
    assert abs(kept.mean() - (1 - p)) < 0.01
    np.testing.assert_allclose(o[kept], a[kept] / (1 - p), rtol=1e-6)
    assert abs(o.mean() - a.mean()) < 0.02 * a.mean()  # inverted dropout keeps the expectation
    out.sum().backward()
    np.testing.assert_allclose(backend.to_numpy(x.grad), kept / (1 - p), rtol=1e-6)


def test_dropout_eval_identity_and_seed(device: str) -> None:
    x = tensor(np.random.default_rng(0).uniform(1, 2, (50, 40)), device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    wb.manual_seed(123)
    first = F.dropout(x, 0.5).numpy()
    wb.manual_seed(123)
    again = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    after = F.dropout(x, 0.5).numpy()  # the stream moves on
    assert not np.array_equal(first, after)
    wb.manual_seed(124)
    assert not np.array_equal(first, F.dropout(x, 0.5).numpy())


def test_dropout_gradcheck(device: str) -> None:
    """With the seed reset before each call the mask is fixed, so dropout is linear in x."""

    def fn(t: Tensor) -> Tensor:
        wb.manual_seed(7)
        return F.dropout(t, 0.4)

    gradcheck(fn, tensor(np.random.default_rng(1).uniform(-1, 1, (3, 5)), device))


@given(
    vocab=st.integers(1, 5),
    dim=st.integers(1, 3),
    ids_shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
    seed=seeds,
    layout=layouts,
)
def test_embedding(device: str, *, vocab: int, dim: int, ids_shape: tuple, seed: int, layout: str) -> None:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (vocab, dim))
    ids = rng.integers(0, vocab, ids_shape)  # repeats are likely: scatter-add backward
    W = tensor(lay(w, layout), device)
    dev_ids = backend.to_device(ids, device)
    check(F.embedding(dev_ids, W), w[ids])
    check(F.embedding(Tensor(dev_ids), W), w[ids])
    gradcheck(lambda t: F.embedding(dev_ids, t), W)


def test_embedding_counts_repeats(device: str) -> None:
    W = tensor(np.zeros((4, 2)), device)
    F.embedding([[1, 1], [3, 1]], W).sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(W.grad), [[0, 0], [3, 3], [0, 0], [1, 1]])


# ---- linear algebra ------------------------------------------------------------
def _spd(rng: np.random.Generator, batch: tuple[int, ...], n: int) -> np.ndarray:
    B = rng.uniform(-1, 1, (*batch, n, n))
    return B @ np.swapaxes(B, -1, -2) + n * np.eye(n)


def _sym(t: Tensor) -> Tensor:
    """(A + A^T) / 2: finite differences then move A[i, j] and A[j, i] together."""
    return (t + t.mT) * 0.5


spd_cases = st.tuples(st.sampled_from([(), (2,), (0,), (2, 1)]), st.integers(1, 4))


@given(case=spd_cases, seed=seeds, layout=layouts)
def test_cholesky(device: str, case: tuple, seed: int, layout: str) -> None:
    batch, n = case
    a = _spd(np.random.default_rng(seed), batch, n)
    x = tensor(lay(a, layout), device)
    L = F.cholesky(x)
    check(L, np.linalg.cholesky(a))
    check(L @ L.mT, a)
    gradcheck(lambda t: F.cholesky(_sym(t)), x, atol=1e-5)


@given(case=spd_cases, seed=seeds, layout=layouts)
def test_logdet(device: str, case: tuple, seed: int, layout: str) -> None:
    batch, n = case
    a = _spd(np.random.default_rng(seed), batch, n)
    x = tensor(lay(a, layout), device)
    sign, expected = np.linalg.slogdet(a)
    assert np.all(sign > 0)
    check(F.logdet(x), expected)
    gradcheck(lambda t: F.logdet(_sym(t)), x, atol=1e-5)


@given(
    batches=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=2),
    n=st.integers(1, 3),
    k=st.integers(1, 3),
    seed=seeds,
    layout=layouts,
)
def test_solve(device: str, *, batches: Any, n: int, k: int, seed: int, layout: str) -> None:
    ba, bb = batches.input_shapes
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (*ba, n, n)) + 2 * n * np.eye(n)  # diagonally dominant: well conditioned
    b = rng.uniform(-1, 1, (*bb, n, k))
    A, B = tensor(lay(a, layout), device), tensor(lay(b, layout), device)
    X = F.solve(A, B)
    check(X, np.linalg.solve(a, b))
    gradcheck(F.solve, A, B, atol=1e-5)


# ---- casts and moves -----------------------------------------------------------
def test_astype_and_to(device: str) -> None:
    x = tensor(np.array([1.0, 2.0, 3.0]), device)
    assert x.to(device) is x
    assert x.astype(np.float64) is x
    y = x.astype(np.float32)
    assert y.dtype == np.float32
    (y * y).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(backend.to_numpy(x.grad), [2, 4, 6])
    if device == "cuda":
        z = tensor(np.array([1.0, 2.0]), "cpu")
        w = z.to("cuda")
        assert w.device == "cuda"
        (w * 3).sum().backward()
        assert z.grad is not None and backend.device_of(z.grad) == "cpu"
        np.testing.assert_allclose(z.grad, [3, 3])
