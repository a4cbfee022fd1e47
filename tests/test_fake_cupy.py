"""The strict CuPy double (tests/fake_cupy.py): that it is strict, that it catches the
mistakes it exists to catch, and whitebox's device paths end to end on it."""

from __future__ import annotations

from pathlib import Path

import fake_cupy
import numpy as np
import pytest
import scipy.special

import whitebox
import whitebox.functional as F
from whitebox import backend
from whitebox.crate import CRATE
from whitebox.data import DataLoader
from whitebox.optim import SGD, AdamW, Lion, clip_grad_norm_
from whitebox.tensor import Tensor


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> object:
    return fake_cupy.install(monkeypatch)


# ---- the double is strict where CuPy is -------------------------------------------------------


def test_fake_arrays_refuse_implicit_host_conversion(fake: object) -> None:
    a = fake.arange(3.0)
    assert not isinstance(a, np.ndarray) and hasattr(a, "__cuda_array_interface__")
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([a, a])
    np.testing.assert_array_equal(a.get(), [0.0, 1.0, 2.0])


def test_fake_arrays_refuse_host_operands_but_take_scalars(fake: object) -> None:
    a = fake.ones(3, dtype=np.float32)
    for bad in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: fake.where(a > 0, np.ones(3), a)):
        with pytest.raises(TypeError):
            bad()
    b = a * np.float32(2) + 1.5
    assert isinstance(b, fake.ndarray) and b.dtype == np.float32
    assert isinstance(a.sum(), fake.ndarray) and a.sum().shape == ()  # 0-d arrays, not scalars


def test_numpy_functions_dispatch_only_to_what_the_fake_offers(fake: object) -> None:
    a = fake.arange(4.0)
    assert isinstance(np.exp(a), fake.ndarray) and isinstance(np.concatenate([a, a]), fake.ndarray)
    with pytest.raises(TypeError):
        np.add.at(a, [0, 0], 1.0)  # np.ufunc.at: not something CuPy's __array_ufunc__ serves
    with pytest.raises(TypeError):
        scipy.special.erf(a)
    with pytest.raises(TypeError):
        np.unique(a)
    with pytest.raises(AttributeError):
        fake.unique(a)  # not in the allowlist: whitebox does not use it on device data


def test_linalg_gives_nan_instead_of_raising(fake: object) -> None:
    L = fake.linalg.cholesky(fake.asarray(-np.eye(2)))
    assert L.shape == (2, 2) and bool(fake.isnan(L).all())
    with pytest.raises(ValueError, match="not symmetric positive-definite"):
        F.cholesky(Tensor(-np.eye(2), device="cuda"))  # whitebox turns the NaN into its error


# ---- it catches the mistakes it is for (each broken on purpose) -------------------------------


def test_catches_np_asarray_of_a_device_array(fake: object, monkeypatch: pytest.MonkeyPatch) -> None:
    x = Tensor([1.0, 2.0], device="cuda")
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    monkeypatch.setattr(backend, "to_numpy", np.asarray)  # the broken version
    with pytest.raises(TypeError, match="Implicit conversion"):
        x.numpy()


def test_catches_a_host_array_in_a_device_op(fake: object, monkeypatch: pytest.MonkeyPatch) -> None:
    x = Tensor(np.ones((4, 5)), device="cuda")
    assert F.dropout(x, 0.5).device == "cuda"
    monkeypatch.setattr(backend, "device_rng", lambda device: np.random.default_rng(0))  # mask on host
    with pytest.raises(TypeError, match="host array"):
        F.dropout(x, 0.5)


def test_catches_a_numpy_only_function_on_device_data(fake: object, monkeypatch: pytest.MonkeyPatch) -> None:
    w = Tensor(np.ones((5, 3)), device="cuda", requires_grad=True)
    F.embedding(np.array([0, 0, 4]), w).sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(w.grad)[:, 0], [2, 0, 0, 0, 1])
    monkeypatch.setattr(backend, "scatter_add", np.add.at)  # the host-only version
    w.grad = None
    with pytest.raises(TypeError):
        F.embedding(np.array([0, 0, 4]), w).sum().backward()


# ---- whitebox's device paths, end to end ------------------------------------------------------

CFG = {"image_size": 8, "patch_size": 4, "num_classes": 3, "dim": 8, "depth": 2, "heads": 2, "channels": 1}


def _losses(device: str, opt_cls: type, steps: int = 3) -> tuple[list[float], CRATE, object]:
    whitebox.manual_seed(0)
    model = CRATE(**CFG, dropout=0.1).to(device)
    opt = opt_cls(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32), device=device)
    y = rng.integers(0, 3, 6)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses, model, opt


@pytest.mark.parametrize("opt_cls", [AdamW, SGD, Lion])
def test_training_steps_match_the_cpu(fake: object, opt_cls: type) -> None:
    """Dropout draws differ between devices (each has its own RNG), so compare without it."""
    cpu, _, _ = _losses("cpu", opt_cls)
    backend.manual_seed(0)
    dev, model, _ = _losses("cuda", opt_cls)
    assert all(p.device == "cuda" and isinstance(p.grad, fake.ndarray) for p in model.parameters())
    np.testing.assert_allclose(dev[0], cpu[0], rtol=0.05)  # only dropout masks differ
    assert np.isfinite(dev).all()


def test_checkpoint_round_trip_through_the_device(fake: object, tmp_path: Path) -> None:
    _, model, opt = _losses("cuda", AdamW, steps=1)
    whitebox.save(tmp_path / "ck.npz", {"model": model.state_dict(), "opt": opt.state_dict()})
    back = whitebox.load(tmp_path / "ck.npz")
    fresh = CRATE(**CFG).to("cuda")
    fresh.load_state_dict(back["model"])
    fresh_opt = AdamW(fresh.parameters(), lr=1e-2)
    fresh_opt.load_state_dict(back["opt"])
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert q.device == "cuda"
        np.testing.assert_array_equal(backend.to_numpy(p.data), backend.to_numpy(q.data))
    model.to("cpu")
    assert all(p.device == "cpu" for p in model.parameters())


def test_loader_batches_land_on_the_device(fake: object) -> None:
    from whitebox.data.datasets import ImageDataset, channel_stats

    images = np.random.default_rng(0).integers(0, 256, (10, 1, 8, 8), dtype=np.uint8)
    mean, std = channel_stats(images)
    data = ImageDataset(images, np.arange(10) % 3, 3, "toy", list("abc"), mean, std, True)
    x, y = next(iter(DataLoader(data, 4, shuffle=True, device="cuda")))
    assert x.device == "cuda" and isinstance(y, fake.ndarray) and y.dtype == np.int64


def test_state_dicts_and_labels_can_stay_on_the_device(fake: object) -> None:
    _, model, _ = _losses("cuda", SGD, steps=1)
    twin = CRATE(**CFG).to("cuda")
    twin.load_state_dict(model.state_dict())  # device arrays straight from another model
    twin.load_state_dict({k: Tensor(v) for k, v in model.state_dict().items()})
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.data), backend.to_numpy(q.data))
    from whitebox import rate

    Z = Tensor(np.random.default_rng(0).standard_normal((5, 4)), device="cuda")
    labels = np.arange(5) % 2
    want = rate.mcr2(Tensor(backend.to_numpy(Z.data)), labels, 0.5).item()
    for given in (labels, backend.to_device(labels, "cuda"), Tensor(labels, device="cuda")):
        assert rate.mcr2(Z, given, 0.5).item() == pytest.approx(want, rel=1e-6)
