"""Errors say what went wrong, naming the shapes, axes, values or devices involved."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox as wb
import whitebox.functional as F
from whitebox import backend, ops
from whitebox.tensor import Tensor


def tensor(a: object, device: str, requires_grad: bool = False) -> Tensor:
    return Tensor(backend.to_device(np.asarray(a, dtype=np.float64), device), requires_grad=requires_grad)


def zeros(shape: tuple[int, ...], device: str, requires_grad: bool = False) -> Tensor:
    return tensor(np.zeros(shape), device, requires_grad)


def test_matmul_shape_mismatch_names_both_shapes(device: str) -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        zeros((2, 3), device) @ zeros((4, 5), device)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(3, 4, 5\).*broadcast"):
        zeros((2, 3, 4), device) @ zeros((3, 4, 5), device)
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        zeros((3,), device) @ zeros((4,), device)
    with pytest.raises(ValueError, match=r"at least 1 dimension.*\(\) and \(3,\)"):
        ops.matmul(zeros((), device), zeros((3,), device))
    with pytest.raises(ValueError, match=r"linear: input has 3 features"):
        F.linear(zeros((2, 3), device), zeros((5, 4), device))


def test_backward_on_non_scalar_needs_grad(device: str) -> None:
    y = zeros((2, 3), device, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(2, 3\) needs grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), the tensor \(2, 3\)"):
        y.backward(np.ones(3))


def test_backward_without_grad_says_so(device: str) -> None:
    with pytest.raises(RuntimeError, match="does not require grad"):
        (zeros((1,), device) * 2).backward()


def test_mixing_devices_names_both(device: str) -> None:
    if device != "cuda":
        pytest.skip("mixing devices needs a GPU next to the CPU")
    a, b = zeros((2, 2), "cpu"), zeros((2, 2), "cuda")
    for op, fn in (("add", lambda: a + b), ("mul", lambda: b * a), ("matmul", lambda: a @ b)):
        with pytest.raises(
            RuntimeError, match=rf"{op}: operands are on different devices \((cpu and cuda|cuda and cpu)\)"
        ):
            fn()
    with pytest.raises(RuntimeError, match="different devices"):
        F.solve(a + tensor(np.eye(2), "cpu"), b)


def test_bad_device_name() -> None:
    with pytest.raises(ValueError, match=r"device must be one of \('cpu', 'cuda'\), got 'tpu'"):
        Tensor([1.0], device="tpu")


@pytest.mark.parametrize("name", ["sum", "mean", "max", "var"])
def test_reduction_bad_axis(device: str, name: str) -> None:
    x = zeros((2, 3), device)
    with pytest.raises(ValueError, match="axis 2 is out of range for a tensor with 2 dimensions"):
        getattr(x, name)(axis=2)
    with pytest.raises(ValueError, match="axis -3 is out of range for a tensor with 2 dimensions"):
        getattr(x, name)(axis=(0, -3))


def test_shape_ops_bad_axis(device: str) -> None:
    x = zeros((2, 3, 4), device)
    with pytest.raises(ValueError, match=r"transpose: axes \(0, 1, 5\) are out of range for a tensor with 3"):
        x.transpose(0, 1, 5)
    with pytest.raises(ValueError, match=r"not a permutation of 3 axes"):
        x.transpose(0, 1, 1)
    with pytest.raises(ValueError, match="axis"):
        x.swapaxes(0, 3)
    with pytest.raises(ValueError, match="axis"):
        F.softmax(x, axis=3)
    with pytest.raises(ValueError, match="axis"):
        wb.concat([x, x], axis=3)
    with pytest.raises(ValueError, match="split: an axis of length 3 does not split into 2 equal parts"):
        ops.split(x, 2, axis=1)


def test_reshape_incompatible(device: str) -> None:
    x = zeros((2, 3), device)
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) into \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) into \(4, -1\)"):
        x.reshape((4, -1))


def test_expand_incompatible(device: str) -> None:
    with pytest.raises(ValueError, match="broadcast"):
        zeros((2, 3), device).expand(4, 3)


def test_cross_entropy_errors(device: str) -> None:
    logits = zeros((2, 3), device, requires_grad=True)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*\[3\]"):
        F.cross_entropy(logits, backend.to_device(np.array([0, 3]), device))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*\[-1\]"):
        F.cross_entropy(logits, backend.to_device(np.array([-1, 0]), device))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        F.cross_entropy(logits, backend.to_device(np.array([-100, 7]), device), ignore_index=-100)
    with pytest.raises(TypeError, match="integer class indices, got dtype float64"):
        F.cross_entropy(logits, backend.to_device(np.array([0.0, 1.0]), device))
    with pytest.raises(ValueError, match=r"targets have shape \(3,\); logits \(2, 3\) need \(2,\)"):
        F.cross_entropy(logits, backend.to_device(np.array([0, 1, 2]), device))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.cross_entropy(logits, backend.to_device(np.array([0, 1]), device), reduction="avg")


def test_linalg_errors(device: str) -> None:
    not_pd = tensor([[1.0, 2.0], [2.0, 1.0]], device)  # eigenvalues 3 and -1
    with pytest.raises(
        ValueError, match=r"logdet: a matrix of shape \(2, 2\) is not symmetric positive-definite"
    ):
        F.logdet(not_pd)
    with pytest.raises(ValueError, match=r"cholesky: .* not symmetric positive-definite"):
        F.cholesky(not_pd)
    with pytest.raises(
        ValueError, match=r"logdet: expected square matrices of shape \(\.\.\., n, n\), got \(2, 3\)"
    ):
        F.logdet(zeros((2, 3), device))
    with pytest.raises(
        ValueError, match=r"solve: B must have shape \(\.\.\., 2, k\) for A of shape \(2, 2\), got \(3, 1\)"
    ):
        F.solve(tensor(np.eye(2), device), zeros((3, 1), device))


def test_other_argument_errors(device: str) -> None:
    x = zeros((2, 3), device)
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\), got 1.0"):
        F.dropout(x, 1.0)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(x, approximate="erf")
    with pytest.raises(
        ValueError, match=r"layer_norm: weight must have shape \(3,\) for input \(2, 3\), got \(2,\)"
    ):
        F.layer_norm(x, zeros((2,), device))
    with pytest.raises(ValueError, match=r"embedding: ids must lie in \[0, 2\), got values in \[0, 5\]"):
        F.embedding([0, 5], x)
    with pytest.raises(TypeError, match="embedding: ids must be integers, got dtype float64"):
        F.embedding(np.array([0.0]), x)
