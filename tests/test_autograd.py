"""The autograd engine: accumulation, no_grad, shared subgraphs, depth, masking, dtypes, aliasing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import whitebox as wb
import whitebox.functional as F
from whitebox import backend, ops
from whitebox.tensor import Tensor, is_grad_enabled, no_grad


def tensor(a: object, device: str, requires_grad: bool = True, dtype: object = np.float64) -> Tensor:
    return Tensor(backend.to_device(np.asarray(a, dtype=dtype), device), requires_grad=requires_grad)


def grad_of(t: Tensor) -> np.ndarray:
    assert t.grad is not None
    return backend.to_numpy(t.grad)


def test_gradients_accumulate_and_zero(device: str) -> None:
    x = tensor([1.0, 2.0, 3.0], device)
    (x * 3).sum().backward()
    np.testing.assert_array_equal(grad_of(x), [3, 3, 3])
    (x * x).sum().backward()  # a second graph adds to .grad
    np.testing.assert_array_equal(grad_of(x), [5, 7, 9])
    x.zero_grad()
    assert x.grad is None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(grad_of(x), [3, 3, 3])


def test_no_grad_context_records_nothing(device: str) -> None:
    x = tensor([1.0, 2.0], device)
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2).exp().sum()
        with no_grad():  # nesting restores the outer state, not True
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.requires_grad and y._parents == () and y._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    with pytest.raises(KeyError), no_grad():  # an exception inside still restores the state
        raise KeyError
    assert is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_decorator(device: str) -> None:
    x = tensor([1.0, 2.0], device)

    @no_grad()
    def f(t: Tensor) -> Tensor:
        assert not is_grad_enabled()
        return t * t + 1

    y = f(x)
    assert is_grad_enabled()
    assert not y.requires_grad and y._parents == ()
    np.testing.assert_array_equal(y.numpy(), [2, 5])


def test_no_grad_decorated_recursion_restores_state(device: str) -> None:
    """The decorator re-enters one instance on recursion; the outer exit must still restore True."""

    @no_grad()
    def depth(t: Tensor, n: int) -> Tensor:
        assert not is_grad_enabled()
        return t if n == 0 else depth(t * 2, n - 1)

    out = depth(tensor([1.0], device), 3)
    assert is_grad_enabled()
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [8.0])


def test_reused_tensor_sums_its_gradients(device: str) -> None:
    """x*x + x: the classic bug is overwriting instead of summing the gradient paths."""
    a = np.array([-1.5, 0.5, 2.0])
    x = tensor(a, device)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(grad_of(x), 2 * a + 1)

    x = tensor(a, device)
    (x + x + x).sum().backward()
    np.testing.assert_allclose(grad_of(x), [3, 3, 3])

    # a diamond: y feeds two branches that meet again
    x = tensor(a, device)
    y = x * 2
    (y * y + y.exp()).sum().backward()
    np.testing.assert_allclose(grad_of(x), 8 * a + 2 * np.exp(2 * a))


def test_deep_chain_has_no_recursion_error(device: str) -> None:
    x = tensor([1.0], device)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(grad_of(x), [1.0001**10_000], rtol=1e-9)
    # and one as deep with a mix of ops and a reuse at every step
    x = tensor([0.5], device)
    y = x
    for _ in range(5_000):
        y = (y + x * 1e-4).tanh()
    y.sum().backward()
    assert np.isfinite(grad_of(x)).all()


MASKED = np.array([[-np.inf, -np.inf, -np.inf], [0.5, -np.inf, 1.5], [1.0, 2.0, 3.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_fully_masked_row_gives_no_nan(device: str, name: str, dtype: type) -> None:
    fn: Callable[[Tensor], Tensor] = getattr(F, name)
    for axis, data in ((-1, MASKED), (0, MASKED.T)):
        x = tensor(data, device, dtype=dtype)
        out = fn(x, axis=axis)
        values = out.numpy()
        assert not np.isnan(values).any(), values
        weights = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
        out.backward(backend.to_device(weights, device))
        g = grad_of(x)
        assert not np.isnan(g).any(), g
        row = values[0] if axis == -1 else values[..., 0]
        masked_grad = g[0] if axis == -1 else g[:, 0]
        if name == "softmax":
            np.testing.assert_array_equal(row, 0)
            np.testing.assert_array_equal(masked_grad, 0)
        elif name == "logsumexp":
            assert row == -np.inf
            np.testing.assert_array_equal(masked_grad, 0)
        # the partly masked row: -inf entries get probability 0 and gradient 0 (log_softmax: g)
        if name == "softmax":
            part = values[1] if axis == -1 else values[:, 1]
            assert part[1] == 0 and abs(part.sum() - 1) < 1e-6


def _float32_cases() -> dict[str, Callable[[Tensor], Tensor]]:
    rng = np.random.default_rng(0)
    w32 = rng.standard_normal((4, 3)).astype(np.float32)
    spd = (w32 @ w32.T + 4 * np.eye(4)).astype(np.float32)

    def with_device(fn: Callable[[Tensor, str], Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda x: fn(x, x.device)

    return {
        "mul_python_float": lambda x: x * 2.0,
        "rmul_python_float": lambda x: 2.0 * x,
        "add_python_int": lambda x: x + 1,
        "div_python_float": lambda x: x / 3.0,
        "rdiv": lambda x: 1.0 / (x.abs() + 1),
        "sub_numpy_float64_scalar": lambda x: x - np.float64(1.5),
        "div_numpy_sqrt": lambda x: x / np.sqrt(np.float64(4.0)),
        "pow_int": lambda x: x**2,
        "pow_float": lambda x: (x.abs() + 1) ** 0.5,
        "rpow": lambda x: 2.0**x,
        "neg": lambda x: -x,
        "exp": ops.exp,
        "log": lambda x: (x.abs() + 1).log(),
        "sqrt": lambda x: (x.abs() + 1).sqrt(),
        "tanh": ops.tanh,
        "sigmoid": ops.sigmoid,
        "relu": ops.relu,
        "gelu": ops.gelu,
        "gelu_tanh": lambda x: ops.gelu(x, "tanh"),
        "abs": ops.abs,
        "maximum": lambda x: ops.maximum(x, 0.1),
        "minimum": lambda x: ops.minimum(x, 0.1),
        "where": lambda x: wb.where(x > 0, x, 0.5),
        "clip": lambda x: x.clip(-0.5, 0.5),
        "soft_threshold": lambda x: ops.soft_threshold(x, 0.2),
        "soft_threshold_nonneg": lambda x: ops.soft_threshold(x, 0.2, nonnegative=True),
        "sum": lambda x: x.sum(),
        "mean": lambda x: x.mean(),
        "mean_axis": lambda x: x.mean(axis=0),
        "max": lambda x: x.max(axis=-1),
        "var": lambda x: x.var(axis=1, ddof=1),
        "matmul": with_device(lambda x, d: x @ backend.to_device(w32.T, d)),
        "reshape": lambda x: x.reshape(-1),
        "transpose": lambda x: x.T,
        "swapaxes": lambda x: x.swapaxes(0, 1),
        "expand": lambda x: x[None].expand(2, 4, 3),
        "getitem_slice": lambda x: x[1:, ::2],
        "getitem_gather": lambda x: x[[0, 0, 2]],
        "getitem_mask": lambda x: x[x > 0],
        "concat": lambda x: wb.concat([x, x * 2], axis=1),
        "stack": lambda x: wb.stack([x, x], axis=0),
        "split": lambda x: ops.split(x, [1], axis=0)[1],
        "softmax": F.softmax,
        "log_softmax": F.log_softmax,
        "logsumexp": F.logsumexp,
        "layer_norm": with_device(
            lambda x, d: F.layer_norm(
                x,
                Tensor(np.ones(3, np.float32), device=d, requires_grad=True),
                Tensor(np.zeros(3, np.float32), device=d, requires_grad=True),
            )
        ),
        "cross_entropy": with_device(
            lambda x, d: F.cross_entropy(x, backend.to_device(np.array([0, 2, 1, 1]), d))
        ),
        "cross_entropy_smooth": with_device(
            lambda x, d: F.cross_entropy(x, backend.to_device(np.array([0, 2, 1, 1]), d), label_smoothing=0.1)
        ),
        "dropout": lambda x: F.dropout(x, 0.3),
        "embedding": with_device(
            lambda x, d: F.embedding(backend.to_device(np.array([[0, 3], [1, 1]]), d), x)
        ),
        "cholesky": with_device(lambda x, d: F.cholesky(x @ x.T + Tensor(backend.to_device(spd, d)))),
        "logdet": with_device(lambda x, d: F.logdet(x @ x.T + Tensor(backend.to_device(spd, d)))),
        "solve": with_device(lambda x, d: F.solve(Tensor(backend.to_device(spd, d)), x)),
        "linear": with_device(lambda x, d: F.linear(x, Tensor(backend.to_device(w32, d)))),
        "mse_loss": lambda x: F.mse_loss(x, np.zeros((4, 3), np.float32)),
    }


FLOAT32_CASES = _float32_cases()


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_stays_float32(device: str, name: str) -> None:
    x = tensor(np.random.default_rng(1).uniform(-1, 1, (4, 3)), device, dtype=np.float32)
    out = FLOAT32_CASES[name](x)
    assert out.dtype == np.float32, f"{name}: forward gave {out.dtype}"
    out.backward(backend.to_device(np.ones(out.shape, np.float32), device))
    assert x.grad is not None and x.grad.dtype == np.float32, f"{name}: gradient {x.grad.dtype}"
    assert np.isfinite(grad_of(x)).all()


def test_python_scalars_become_float32(device: str) -> None:
    assert Tensor(1.5, device=device).dtype == np.float32
    assert Tensor([[1.0, 2.0]], device=device).dtype == np.float32
    assert Tensor(np.ones(2), device=device).dtype == np.float64  # an array keeps its dtype
    assert Tensor(np.ones(2), dtype=np.float32, device=device).dtype == np.float32
    assert Tensor(1.5, device=device).device == device


def test_leaf_gradients_are_not_aliased(device: str) -> None:
    a, b = tensor([1.0, 2.0], device), tensor([3.0, 4.0], device)
    (a + b).sum().backward()
    a.grad += 1  # in place
    np.testing.assert_array_equal(grad_of(b), [1, 1])
    np.testing.assert_array_equal(grad_of(a), [2, 2])
    # the same through a broadcast and an expand (read-only views inside the engine)
    c, d = tensor([[1.0, 2.0]], device), tensor([5.0], device)
    (c + d).expand(3, 2).sum().backward()
    c.grad *= 10
    d.grad *= 100
    np.testing.assert_array_equal(grad_of(c), [[30, 30]])
    np.testing.assert_array_equal(grad_of(d), [600])
    # a grad handed to backward() is copied, not kept
    e = tensor([1.0, 2.0], device)
    g = backend.to_device(np.array([1.0, 1.0]), device)
    e.backward(g)
    g[...] = 7
    np.testing.assert_array_equal(grad_of(e), [1, 1])


def test_retain_graph(device: str) -> None:
    x = tensor([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(grad_of(x), [4, 8])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()  # the second call freed the graph


def test_second_backward_through_a_freed_shared_trunk_raises(device: str) -> None:
    """Two losses on one trunk: the second backward() must not silently skip the trunk."""
    x = tensor([1.0, 2.0], device)
    trunk = x * 2
    first, second = trunk.sum(), (trunk * trunk).sum()
    first.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        second.backward()

    x = tensor([1.0, 2.0], device)
    trunk = x * 2
    first, second = trunk.sum(), (trunk * trunk).sum()
    first.backward(retain_graph=True)
    second.backward()
    np.testing.assert_allclose(grad_of(x), 2 + 8 * np.array([1.0, 2.0]))


def test_backward_frees_the_graph(device: str) -> None:
    x = tensor([1.0, 2.0], device)
    h = x.exp()
    loss = h.sum()
    loss.backward()
    assert h._parents == () and loss._parents == ()  # intermediates released
    np.testing.assert_allclose(grad_of(x), np.exp([1.0, 2.0]))


def test_backward_with_explicit_gradient(device: str) -> None:
    x = tensor([[1.0, 2.0], [3.0, 4.0]], device)
    y = x * x
    y.backward(backend.to_device(np.array([[1.0, 0.0], [2.0, 0.5]]), device))
    np.testing.assert_allclose(grad_of(x), [[2, 0], [12, 4]])


def test_only_tensors_that_need_grad_record(device: str) -> None:
    c = tensor([1.0, 2.0], device, requires_grad=False)
    x = tensor([3.0, 4.0], device)
    assert not (c * 2).requires_grad
    out = c * x
    assert out.requires_grad
    out.sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(grad_of(x), [1, 2])


def test_detach_cuts_the_graph(device: str) -> None:
    x = tensor([1.0, 2.0], device)
    y = (x * 3).detach()
    assert not y.requires_grad
    (x * y).sum().backward()
    np.testing.assert_array_equal(grad_of(x), [3, 6])  # y treated as a constant
