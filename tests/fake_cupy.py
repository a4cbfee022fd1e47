"""A strict, NumPy-backed test double of CuPy: the 'fake-cuda' device of the test suite.

Its arrays (``FakeArray``) are their own type, not ``np.ndarray`` subclasses, and behave
the way CuPy's documentation says ``cupy.ndarray`` does where that differs from NumPy:

* no implicit conversion to a host array: ``np.asarray(a)`` raises ``TypeError`` (as
  ``cupy.ndarray.__array__`` does); ``a.get()`` or ``fake.asnumpy(a)`` is the way out;
* a host ``np.ndarray`` mixed into an operation raises ``TypeError`` ("Unsupported type");
  NumPy and Python scalars are accepted; indices and values written with ``a[i] = v`` may
  be host arrays (CuPy copies them over);
* reductions return 0-d arrays, never NumPy scalars;
* NumPy's ufuncs and functions applied to a fake array dispatch to the fake module
  (NEP 13 / NEP 18, as CuPy implements them) only where the fake offers that function;
  anything else (``np.add.at``, ``scipy.special.erf``, ...) raises ``TypeError``;
* ``linalg.cholesky`` and ``linalg.solve`` do not raise on a matrix that is not positive
  definite / singular: they return NaN (CuPy's default ``linalg='ignore'`` error state);
* the module offers only the functions whitebox uses (``FUNCTIONS``, ``UFUNCS``,
  ``METHODS``): a call to anything else fails with ``AttributeError``, as it would on a
  CuPy that lacked it.

``install(monkeypatch)`` makes it whitebox's CuPy for one test (``backend._cupy`` and the
``cupyx`` modules backend imports lazily), with no change to whitebox itself.
"""

from __future__ import annotations

import operator
import sys
import types
from typing import Any

import numpy as np
import pytest
import scipy.special

# What whitebox calls on the array module (xp.<name>), on arrays, and as ufuncs.
FUNCTIONS = (
    "arange", "argsort", "asarray", "ascontiguousarray", "broadcast_to", "clip", "concatenate", "copyto",
    "diagonal", "einsum", "empty", "empty_like", "expand_dims", "eye", "full", "isfinite", "isnan", "matmul",
    "max", "ones", "ones_like", "split", "stack", "take", "tril", "triu", "where", "zeros",
    "zeros_like", "sum", "mean", "result_type", "array",
    "shape", "ndim",  # np.shape / np.ndim on device ids and state dicts (CuPy has both)
)  # fmt: skip
UFUNCS = (
    "abs", "absolute", "add", "subtract", "multiply", "divide", "true_divide", "power", "negative",
    "exp", "log", "sqrt", "tanh", "sign", "maximum", "minimum", "greater", "greater_equal",
    "less", "less_equal", "equal", "not_equal", "logical_and", "logical_or", "logical_not",
    "bitwise_and", "bitwise_or", "invert", "square", "floor_divide", "remainder", "reciprocal",
)  # fmt: skip
METHODS = (
    "all", "any", "argmax", "argmin", "astype", "clip", "copy", "cumsum", "fill", "flatten",
    "item", "max", "mean", "min", "prod", "ravel", "repeat", "reshape", "squeeze", "std", "sum",
    "swapaxes", "take", "tolist", "transpose", "var", "T", "dtype", "shape", "ndim", "size",
    "strides", "nbytes", "itemsize", "flags",
)  # fmt: skip
CONSTANTS = ("inf", "nan", "pi", "newaxis", "float16", "float32", "float64", "int8", "int32", "int64",
             "uint8", "bool_", "integer", "floating", "dtype")  # fmt: skip


class FakeArray:
    """A 'device' array: a NumPy array kept out of reach of implicit host conversion."""

    __slots__ = ("_a",)
    __array_priority__ = 100  # below whitebox.Tensor's, so fake + Tensor defers to Tensor

    def __init__(self, a: np.ndarray) -> None:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"FakeArray wraps an np.ndarray, got {type(a).__name__}")
        self._a = a

    # ---- the ways in and out ----------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly. (fake cupy)"
        )

    def get(self) -> np.ndarray:
        return self._a.copy()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        iface = self._a.__array_interface__
        return {
            "shape": self._a.shape,
            "typestr": self._a.dtype.str,
            "data": iface["data"],
            "strides": iface["strides"],
            "version": 3,
        }

    def __repr__(self) -> str:
        return f"fake_cupy.{self._a!r}"

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS:
            raise AttributeError(f"fake cupy.ndarray has no attribute {name!r} (not in fake_cupy.METHODS)")
        value = getattr(self._a, name)
        if callable(value) and not isinstance(value, np.dtype):
            return _wrapped(value, f"ndarray.{name}")
        return _wrap(value)

    # ---- indexing ----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap_key(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, FakeArray):
            value = value._a
        self._a[_unwrap_key(key)] = value

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(self._a[i]) for i in range(len(self._a)))

    # Size-1 arrays convert to Python scalars (an implicit device synchronize in CuPy).
    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    # ---- NumPy's protocols: dispatch to this module, or refuse -----------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__" or ufunc.__name__ not in UFUNCS:
            return NotImplemented
        return _wrapped(ufunc, ufunc.__name__)(*inputs, **kwargs)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        name = func.__name__
        if name not in FUNCTIONS and f"linalg.{name}" not in _LINALG:
            return NotImplemented
        impl = _LINALG.get(f"linalg.{name}") if func.__module__.endswith("linalg") else getattr(module, name)
        return impl(*args, **kwargs)


def _unwrap(x: Any, where: str) -> Any:
    if isinstance(x, FakeArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} (fake cupy: a host array passed to {where})")
    if isinstance(x, list | tuple):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _unwrap_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(k._a if isinstance(k, FakeArray) else k for k in key)
    return key._a if isinstance(key, FakeArray) else key


def _wrap(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return FakeArray(x)
    if isinstance(x, np.generic):  # CuPy reductions give 0-d arrays, not scalars
        return FakeArray(np.asarray(x))
    if isinstance(x, list | tuple) and any(isinstance(v, np.ndarray) for v in x):
        return type(x)(_wrap(v) for v in x)
    return x


def _wrapped(fn: Any, where: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(a, where) for a in args)
        kwargs = {k: _unwrap(v, where) for k, v in kwargs.items()}
        if "out" in kwargs:  # in-place result: write into the caller's array
            out = kwargs["out"]
            fn(*args, **kwargs)
            return _wrap(out[0] if isinstance(out, tuple) and len(out) == 1 else out)
        return _wrap(fn(*args, **kwargs))

    call.__name__ = where
    return call


def _binary(op: Any, reflected: bool = False) -> Any:
    def method(self: FakeArray, other: Any) -> Any:
        if getattr(other, "__array_priority__", 0) > self.__array_priority__ and not isinstance(
            other, FakeArray
        ):
            return NotImplemented
        b = _unwrap(other, f"operator {op.__name__}")
        return _wrap(op(b, self._a) if reflected else op(self._a, b))

    return method


def _unary(op: Any) -> Any:
    return lambda self: _wrap(op(self._a))


def _inplace(op: Any) -> Any:
    def method(self: FakeArray, other: Any) -> FakeArray:
        op(self._a, _unwrap(other, f"operator {op.__name__}"))
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor"):
    _op = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(FakeArray, f"__{_name}__", _binary(_op))
    setattr(FakeArray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(FakeArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(FakeArray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(FakeArray, f"__{_name}__", _unary(getattr(operator, _name)))
FakeArray.__hash__ = None  # type: ignore[assignment]


# ---- the module ----------------------------------------------------------------------------


def asarray(a: Any, dtype: Any = None, order: Any = None) -> FakeArray:
    """Host data (arrays, lists, scalars) is copied to the 'device'; device data is kept."""
    if isinstance(a, FakeArray):
        return a if dtype is None or a._a.dtype == dtype else FakeArray(a._a.astype(dtype))
    return FakeArray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a: Any, dtype: Any = None, copy: bool = True) -> FakeArray:
    return FakeArray(np.array(a._a if isinstance(a, FakeArray) else a, dtype=dtype, copy=True))


def asnumpy(a: Any) -> np.ndarray:
    return a.get() if isinstance(a, FakeArray) else np.asarray(a)


def get_array_module(*args: Any) -> types.ModuleType:
    return module if any(isinstance(a, FakeArray) for a in args) else np


def _nan_on_failure(fn: Any) -> Any:
    """CuPy's linalg does not raise on a failed factorization (by default): the result is NaN."""

    def call(a: FakeArray, *args: Any) -> FakeArray:
        x = _unwrap(a, fn.__name__)
        rest = tuple(_unwrap(b, fn.__name__) for b in args)
        try:
            return _wrap(fn(x, *rest))
        except np.linalg.LinAlgError:
            shape = np.broadcast_shapes(x.shape[:-2], *(b.shape[:-2] for b in rest)) + (
                rest[0].shape[-2:] if rest else x.shape[-2:]
            )
            return FakeArray(np.full(shape, np.nan, dtype=x.dtype))

    call.__name__ = fn.__name__
    return call


_LINALG = {
    "linalg.cholesky": _nan_on_failure(np.linalg.cholesky),
    "linalg.solve": _nan_on_failure(np.linalg.solve),
}


class _Generator:
    """cupy.random.Generator: the methods whitebox draws with, on 'device' arrays."""

    def __init__(self, seed: Any) -> None:
        self._rng = np.random.default_rng(seed)

    def random(self, size: Any = None, dtype: Any = np.float64) -> FakeArray:
        return FakeArray(np.asarray(self._rng.random(size, dtype=dtype)))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> FakeArray:
        return FakeArray(np.asarray(self._rng.standard_normal(size, dtype=dtype)))

    def integers(
        self, low: int, high: int | None = None, size: Any = None, dtype: Any = np.int64
    ) -> FakeArray:
        return FakeArray(np.asarray(self._rng.integers(low, high, size, dtype=dtype)))


def _build_module() -> types.ModuleType:
    mod = types.ModuleType("fake_cupy", "A strict NumPy-backed stand-in for cupy (tests/fake_cupy.py).")
    for name in FUNCTIONS:
        setattr(mod, name, _wrapped(getattr(np, name), name))
    for name in UFUNCS:
        setattr(mod, name, _wrapped(getattr(np, name), name))
    for name in CONSTANTS:
        setattr(mod, name, getattr(np, name))
    mod.ndarray = FakeArray
    mod.asarray = asarray
    mod.array = array
    mod.asnumpy = asnumpy
    mod.get_array_module = get_array_module
    mod.linalg = types.SimpleNamespace(**{k.split(".")[1]: v for k, v in _LINALG.items()})
    mod.random = types.SimpleNamespace(default_rng=_Generator)
    pool = types.SimpleNamespace(total_bytes=lambda: 0, used_bytes=lambda: 0)  # the benchmarks read it
    mod.get_default_memory_pool = lambda: pool
    device = types.SimpleNamespace(synchronize=lambda: None)
    mod.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=lambda index=0: device,
    )
    return mod


module = _build_module()


def _scatter_add(target: FakeArray, index: Any, values: Any) -> None:
    """cupyx.scatter_add: ``target[index] += values``, repeated indices accumulated."""
    if not isinstance(target, FakeArray):
        raise TypeError(f"cupyx.scatter_add: target must be a device array, got {type(target).__name__}")
    np.add.at(target._a, _unwrap_key(index), _unwrap(values, "cupyx.scatter_add"))


cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = _scatter_add
cupyx.scipy = types.ModuleType("cupyx.scipy")
cupyx.scipy.special = types.ModuleType("cupyx.scipy.special")
cupyx.scipy.special.erf = _wrapped(scipy.special.erf, "cupyx.scipy.special.erf")


def install(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Make the fake whitebox's CuPy (and cupyx) until the test ends; returns the fake module."""
    from whitebox import backend

    monkeypatch.setattr(backend, "_cupy", module)
    monkeypatch.setattr(backend, "_device_rngs", {})
    monkeypatch.setattr(backend, "_default_device", backend.default_device())
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.scipy", cupyx.scipy)
    monkeypatch.setitem(sys.modules, "cupyx.scipy.special", cupyx.scipy.special)
    return module
