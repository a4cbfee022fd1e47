"""whitebox CRATE against the official PyTorch CRATE: checkpoints, logits, gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from whitebox import Tensor  # noqa: E402
from whitebox import functional as F  # noqa: E402
from whitebox.crate import CRATE  # noqa: E402
from whitebox.interop import load_official_checkpoint, to_torch_state_dict  # noqa: E402
from whitebox.torch_reference import TorchCRATE  # noqa: E402

CFG = {"image_size": 16, "patch_size": 4, "num_classes": 7, "dim": 24, "depth": 2, "heads": 3, "channels": 3}


def _torch_model(seed: int = 0) -> TorchCRATE:
    torch.manual_seed(seed)
    model = TorchCRATE(**CFG)
    with torch.no_grad():  # make LayerNorm affines non-trivial, as after training
        for name, p in model.named_parameters():
            if "norm" in name or "mlp_head.0" in name or "embedding.1" in name or "embedding.3" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((5, 3, 16, 16)).astype(np.float32), rng.integers(0, 7, size=5)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[TorchCRATE, CRATE]:
    tm = _torch_model()
    path = tmp_path / "crate.pth"
    torch.save(tm.state_dict(), path)
    return tm, load_official_checkpoint(path, CRATE(**CFG))


def test_keys_match_the_official_model() -> None:
    assert list(CRATE(**CFG).state_dict()) == list(TorchCRATE(**CFG).state_dict())
    shapes = {k: tuple(v.shape) for k, v in TorchCRATE(**CFG).state_dict().items()}
    assert {k: v.shape for k, v in CRATE(**CFG).state_dict().items()} == shapes


def test_logits_and_gradients_match(pair: tuple[TorchCRATE, CRATE]) -> None:
    tm, wm = pair
    x, y = _batch()
    t_logits = tm(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(y)).backward()
    w_logits = wm(Tensor(x))
    F.cross_entropy(w_logits, y).backward()
    assert np.abs(w_logits.numpy() - t_logits.detach().numpy()).max() <= 1e-4
    t_grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    w_grads = {k: p.grad for k, p in wm.named_parameters()}
    assert set(t_grads) == set(w_grads)
    for k, g in t_grads.items():
        err = np.abs(w_grads[k] - g).max() / max(np.abs(g).max(), 1e-12)
        assert err <= 1e-4, (k, err)


def test_nested_and_prefixed_checkpoint(tmp_path: Path) -> None:
    tm = _torch_model(seed=3)
    path = tmp_path / "ckpt.pth"
    state = {"model": {"module." + k: v for k, v in tm.state_dict().items()}, "epoch": 3}
    torch.save(state, path)
    wm = load_official_checkpoint(path, CRATE(**CFG))
    x, _ = _batch()
    with torch.no_grad():
        expected = tm(torch.from_numpy(x)).numpy()
    assert np.abs(wm(x).numpy() - expected).max() <= 1e-4
    load_official_checkpoint({"state_dict": tm.state_dict()}, CRATE(**CFG))


def test_round_trip_to_torch_is_exact(pair: tuple[TorchCRATE, CRATE]) -> None:
    tm, wm = pair
    back = to_torch_state_dict(wm)
    assert list(back) == list(tm.state_dict())
    for k, v in tm.state_dict().items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    fresh = TorchCRATE(**CFG)
    fresh.load_state_dict(back)


def test_wrong_checkpoints_name_keys_and_shapes() -> None:
    state = _torch_model().state_dict()
    deeper = {**CFG, "depth": 3}
    with pytest.raises(ValueError, match=r"missing keys: transformer\.layers\.2\.0\.norm\.weight"):
        load_official_checkpoint(state, CRATE(**deeper))
    with pytest.raises(ValueError, match=r"missing keys: cls_token"):
        load_official_checkpoint({k: v for k, v in state.items() if k != "cls_token"}, CRATE(**CFG))
    with pytest.raises(
        ValueError, match=r"transformer\.layers\.0\.1\.fn\.weight: checkpoint \(24, 24\) vs model \(30, 30\)"
    ):
        load_official_checkpoint(state, CRATE(**{**CFG, "dim": 30}))
    with pytest.raises(ValueError, match=r"unexpected keys: transformer\.layers\.1"):
        load_official_checkpoint(state, CRATE(**{**CFG, "depth": 1}))


def test_without_torch_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'whitebox\[torch\]'"):
        to_torch_state_dict(CRATE(**CFG))
    with pytest.raises(ImportError, match=r"torch==2\.13\.0"):
        load_official_checkpoint("model.pth", CRATE(**CFG))
