"""whitebox.save / whitebox.load checkpoints."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import whitebox
from whitebox import nn
from whitebox.optim import AdamW
from whitebox.serialization import checkpoint_arch_check
from whitebox.tensor import Tensor


def _nested() -> dict:
    rng = np.random.default_rng(0)
    return {
        "model": {
            "blocks.0.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "blocks.0.bias": rng.standard_normal(4),  # float64
            "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
            "mask": np.array([True, False]),
            "scalar": np.array(2.5, dtype=np.float32),
        },
        "meta": {
            "epoch": 7,
            "lr": 1e-3,
            "name": "crate-tiny",
            "done": False,
            "note": None,
            "history": [1.5, 0.75, float("inf")],
            "shape": [[2, 3], ["a", None]],
            "empty": {},
        },
        "step": 42,
    }


def test_round_trip(tmp_path: Path) -> None:
    obj = _nested()
    path = tmp_path / "ckpt.npz"
    whitebox.save(path, obj)
    back = whitebox.load(path)
    assert back.keys() == obj.keys() and back["model"].keys() == obj["model"].keys()
    for key, arr in obj["model"].items():
        assert isinstance(back["model"][key], np.ndarray)
        assert back["model"][key].dtype == arr.dtype and back["model"][key].shape == arr.shape
        np.testing.assert_array_equal(back["model"][key], arr)
    assert back["meta"] == obj["meta"] and back["step"] == 42
    # A plain .npz: NumPy reads it with pickling disabled; arrays sit under '/'-joined keys.
    with np.load(path, allow_pickle=False) as npz:
        assert "model/blocks.0.weight" in npz.files and "__whitebox__" in npz.files


def test_path_is_used_as_given_and_tuples_become_lists(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.bin"  # no '.npz' appended
    whitebox.save(str(path), {"patch": (16, 16), "x": np.float64(1.5)})
    assert path.exists() and not (tmp_path / "ckpt.bin.npz").exists()
    back = whitebox.load(str(path))
    assert back["patch"] == [16, 16] and back["x"] == 1.5


@pytest.mark.parametrize(
    ("obj", "err", "match"),
    [
        ({"a/b": np.zeros(1)}, ValueError, "a/b"),
        ({"outer": {"x/y": 1}}, ValueError, "x/y"),
        ({"outer": {3: 1}}, ValueError, "3"),
        ({"__whitebox__": 1}, ValueError, "reserved"),
        ({"obj": np.array([{}, 1], dtype=object)}, TypeError, "obj"),
        ({"t": Tensor(np.zeros(2))}, TypeError, r"\.data"),
        ({"deep": {"s": {1, 2}}}, TypeError, "deep/s"),
        ({"deep": {"l": [np.float32(1)]}}, TypeError, "deep/l"),
    ],
)
def test_bad_objects_rejected(tmp_path: Path, obj: dict, err: type, match: str) -> None:
    path = tmp_path / "bad.npz"
    with pytest.raises(err, match=match):
        whitebox.save(path, obj)
    assert not path.exists()


def test_not_a_checkpoint_raises_value_error_naming_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"plain\.npz.*not a whitebox checkpoint.*__whitebox__"):
        whitebox.load(plain)

    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"noise\.bin.*not a zip"):
        whitebox.load(noise)

    good = tmp_path / "good.npz"
    whitebox.save(good, _nested())
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.npz"):
        whitebox.load(truncated)

    corrupted = tmp_path / "corrupted.npz"
    with zipfile.ZipFile(good) as zf:
        offset = zf.getinfo("model/ids.npy").header_offset + 100
    corrupted.write_bytes(
        data[:offset] + bytes(b ^ 0xFF for b in data[offset : offset + 8]) + data[offset + 8 :]
    )
    with pytest.raises(ValueError, match=r"corrupted\.npz"):
        whitebox.load(corrupted)

    with pytest.raises(FileNotFoundError, match="missing"):
        whitebox.load(tmp_path / "missing.npz")


def _mlp(seed: int) -> nn.Module:
    whitebox.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 3))


def _train(model: nn.Module, opt: AdamW, steps: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = Tensor(rng.standard_normal((16, 4)).astype(np.float32))
        y = rng.integers(0, 3, 16)
        opt.zero_grad()
        whitebox.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_model_and_optimizer_checkpoint_restores_training(tmp_path: Path) -> None:
    config = {"dims": (4, 8, 3), "norm": "layer"}
    model = _mlp(0)
    opt = AdamW(model.parameters(), lr=0.01)
    _train(model, opt, 3)
    path = tmp_path / "run.npz"
    whitebox.save(path, {"config": config, "model": model.state_dict(), "optimizer": opt.state_dict()})

    ckpt = whitebox.load(path)
    checkpoint_arch_check(ckpt["config"], config)  # lists vs tuples compare equal
    restored = _mlp(1)
    restored.load_state_dict(ckpt["model"])
    for (name, a), (_, b) in zip(model.named_parameters(), restored.named_parameters(), strict=True):
        assert b.dtype == np.float32, name
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    restored_opt = AdamW(restored.parameters())
    restored_opt.load_state_dict(ckpt["optimizer"])
    assert restored_opt.lr == 0.01

    _train(model, opt, 2)
    _train(restored, restored_opt, 2)
    for a, b in zip(model.parameters(), restored.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_arch_check_lists_differing_fields() -> None:
    saved = {"dim": 384, "depth": 12, "patch": [16, 16], "epochs": 100}
    checkpoint_arch_check(saved, {"dim": 384, "patch": (16, 16)})
    with pytest.raises(ValueError, match="different architecture") as err:
        checkpoint_arch_check(saved, {"dim": 192, "depth": 12, "heads": 3}, source="run.npz")
    msg = str(err.value)
    assert "dim: run.npz 384 vs model 192" in msg and "heads: absent" in msg and "depth" not in msg


@pytest.mark.skipif(not whitebox.cuda_available(), reason="needs a GPU and CuPy")
def test_cupy_arrays_are_stored_as_numpy(tmp_path: Path) -> None:
    import cupy as cp

    whitebox.save(tmp_path / "gpu.npz", {"w": cp.arange(4, dtype=cp.float32)})
    back = whitebox.load(tmp_path / "gpu.npz")["w"]
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, np.arange(4))
