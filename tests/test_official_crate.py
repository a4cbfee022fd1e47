"""The rest of the official CRATE model: one head without to_out, mean pooling, smaller images, the
official default dim_head, a non-default ISTA step size, and loading with the head skipped."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from whitebox import Tensor  # noqa: E402
from whitebox import functional as F  # noqa: E402
from whitebox.crate import CRATE, official_crate  # noqa: E402
from whitebox.interop import load_official_checkpoint  # noqa: E402
from whitebox.torch_reference import TorchCRATE  # noqa: E402

BASE = {"image_size": 16, "patch_size": 4, "num_classes": 5, "dim": 24, "depth": 2, "heads": 3, "channels": 3}


def _torch(seed: int = 0, **changes) -> TorchCRATE:
    torch.manual_seed(seed)
    model = TorchCRATE(**{**BASE, **changes})
    with torch.no_grad():  # LayerNorm affines away from 1 / 0, as after training
        for name, p in model.named_parameters():
            if "norm" in name or "mlp_head.0" in name or "embedding.1" in name or "embedding.3" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _images(size: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 3, size, size)).astype(np.float32)


def _assert_same(tm: TorchCRATE, wm, x: np.ndarray) -> None:
    """Logits and every parameter gradient agree (float32 rounding)."""
    y = np.arange(len(x)) % BASE["num_classes"]
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


def test_one_head_of_full_width_has_no_output_projection():
    changes = {"heads": 1, "dim_head": 24}
    tm = _torch(**changes)
    assert not any("to_out" in k for k in tm.state_dict())
    wm = load_official_checkpoint(tm.state_dict(), CRATE(**{**BASE, **changes}))
    assert list(wm.state_dict()) == list(tm.state_dict())
    _assert_same(tm, wm, _images())


def test_mean_pooling():
    tm = _torch(pool="mean")
    wm = load_official_checkpoint(tm.state_dict(), CRATE(**BASE, pool="mean"))
    _assert_same(tm, wm, _images())
    with pytest.raises(ValueError, match="pool"):
        CRATE(**BASE, pool="max")


def test_images_smaller_than_configured_use_the_first_positions():
    tm = _torch()
    wm = load_official_checkpoint(tm.state_dict(), CRATE(**BASE))
    _assert_same(tm, wm, _images(size=8))
    with pytest.raises(ValueError, match="16x16"):
        wm(Tensor(_images(size=20)))


def test_a_non_default_ista_step_size():
    tm = _torch(ista=0.37)
    wm = load_official_checkpoint(tm.state_dict(), CRATE(**BASE, eta=0.37))
    _assert_same(tm, wm, _images())
    default = load_official_checkpoint(tm.state_dict(), CRATE(**BASE))  # eta 0.1: another function
    assert np.abs(default(_images()).numpy() - wm(_images()).numpy()).max() > 1e-3


def test_the_official_default_dim_head_is_64():
    settings = {k: v for k, v in BASE.items() if k != "channels"}
    tm = _torch(dim_head=64)
    wm = official_crate(**settings, channels=3)
    assert wm.transformer.layers[0][0].fn.dim_head == 64
    load_official_checkpoint(tm.state_dict(), wm)
    _assert_same(tm, wm, _images())
    assert CRATE(**BASE).transformer.layers[0][0].fn.dim_head == 8  # whitebox's own default: dim // heads


def test_fine_tuning_skips_the_head_and_names_what_it_skipped():
    tm = _torch()
    other = CRATE(**{**BASE, "num_classes": 3})
    with pytest.raises(ValueError, match=r"mlp_head\.1\.weight"):
        load_official_checkpoint(tm.state_dict(), other)
    head = other.mlp_head[1].weight.numpy().copy()
    with pytest.warns(UserWarning, match=r"skipped mlp_head\.1\.weight, mlp_head\.1\.bias"):
        load_official_checkpoint(tm.state_dict(), other, skip_head=True)
    assert np.array_equal(other.mlp_head[1].weight.numpy(), head)  # left as initialized
    assert np.array_equal(other.cls_token.numpy(), tm.cls_token.detach().numpy())


def test_non_strict_loading_names_every_key_it_skipped():
    tm = _torch()
    deeper = CRATE(**{**BASE, "depth": 3, "num_classes": 3})
    with pytest.warns(UserWarning) as record:
        load_official_checkpoint(tm.state_dict(), deeper, strict=False)
    message = str(record[0].message)
    assert "mlp_head.1.weight" in message and "transformer.layers.2.0.norm.weight" in message
    assert np.array_equal(deeper.pos_embedding.numpy(), tm.pos_embedding.detach().numpy())
