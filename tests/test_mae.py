"""Masked autoencoders: patches, masking, the loss, CRATE-MAE and its ViT-MAE twin."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import whitebox as wb
from whitebox.crate import CRATE, CRATEMAE, ViTMAE
from whitebox.crate.autoencoder import (
    masked_patch_loss,
    patchify,
    random_masking,
    sincos_pos_embed,
    unpatchify,
)
from whitebox.crate.crate_block import CRATEBlock
from whitebox.crate.mae import CRATEDecoderBlock
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor

F64 = np.float64
TINY = {"image_size": (4, 6), "patch_size": 2, "channels": 2, "dim": 8, "depth": 1, "heads": 2}


def _images(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# ---- patches, position code, masking, loss ---------------------------------------------------


def test_patchify_order_and_round_trip() -> None:
    x = _images(2, 3, 8, 12)
    P = patchify(x, 4)
    assert P.shape == (2, 6, 48)
    for b, i, j in [(0, 0, 0), (1, 1, 2), (0, 0, 1)]:  # patch t = i w + j, flattened as (p1, p2, C)
        np.testing.assert_array_equal(
            P[b, i * 3 + j], x[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].transpose(1, 2, 0).ravel()
        )
    np.testing.assert_array_equal(unpatchify(P, 4, (8, 12)), x)
    np.testing.assert_array_equal(patchify(Tensor(x), 4).numpy(), P)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(x, 5)


def test_sincos_position_code() -> None:
    E = sincos_pos_embed(16, (2, 3))
    assert E.shape == (7, 16)
    np.testing.assert_array_equal(E[0], 0)
    # patch (row 1, column 2) is token 1 + 1*3 + 2: first half codes the column, second half the row
    omega = 1.0 / 10000 ** (np.arange(4) / 4)
    code = lambda pos: np.concatenate([np.sin(pos * omega), np.cos(pos * omega)])  # noqa: E731
    np.testing.assert_allclose(E[1 + 5], np.concatenate([code(2), code(1)]), rtol=1e-15)
    assert len({tuple(r) for r in E.round(12)}) == 7  # all positions distinct
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed(10, (2, 2))


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
def test_random_masking_keeps_the_smallest_noise(ratio: float) -> None:
    noise = np.random.default_rng(3).random((4, 16))
    ids_keep, ids_restore, mask = random_masking(noise, ratio)
    keep = int(16 * (1 - ratio))
    assert ids_keep.shape == (4, keep) and mask.shape == (4, 16)
    assert np.all(mask.sum(axis=1) == 16 - keep)
    for b in range(4):
        smallest = set(np.argsort(noise[b])[:keep].tolist())
        assert set(ids_keep[b].tolist()) == smallest == set(np.flatnonzero(~mask[b]).tolist())
        np.testing.assert_array_equal(np.argsort(noise[b])[ids_restore[b]], np.arange(16))


def test_masked_patch_loss_by_hand_and_only_on_masked_patches() -> None:
    rng = np.random.default_rng(0)
    pred = Tensor(rng.standard_normal((2, 5, 6)), requires_grad=True)
    target = rng.standard_normal((2, 5, 6))
    mask = rng.random((2, 5)) < 0.5
    mask[:, 0] = True
    expected = (((pred.numpy() - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    loss = masked_patch_loss(pred, target, mask)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-14)
    loss.backward()
    assert np.all(pred.grad[~mask] == 0) and np.all(np.abs(pred.grad[mask]).sum(-1) > 0)
    changed = target.copy()
    changed[~mask] += 10.0  # the targets of visible patches do not enter the loss
    np.testing.assert_allclose(masked_patch_loss(pred, changed, mask).item(), expected, rtol=1e-14)
    t = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    expected = (((pred.numpy() - t) ** 2).mean(-1) * mask).sum() / mask.sum()
    np.testing.assert_allclose(
        masked_patch_loss(pred, target, mask, norm_pix_loss=True).item(), expected, rtol=1e-13
    )


# ---- the two models ----------------------------------------------------------------------------


MODELS = [pytest.param(CRATEMAE, id="crate"), pytest.param(ViTMAE, id="vit")]


@pytest.mark.parametrize("cls", MODELS)
def test_shapes_and_mask(cls: Any, device: str) -> None:
    wb.manual_seed(0)
    m = cls(image_size=(8, 12), patch_size=4, channels=3, dim=16, depth=2, heads=2).to(device)
    loss, pred, mask = m(_images(5, 3, 8, 12).astype(np.float32))
    assert loss.shape == () and pred.shape == (5, 6, 48) and mask.shape == (5, 6)
    assert pred.device == mask.device == device
    assert np.all(mask.numpy().sum(axis=1) == 6 - int(6 * 0.25))
    loss.backward()
    assert m.cls_token.grad is not None and m.mask_token.grad is not None
    assert m.encode(_images(2, 3, 8, 12).astype(np.float32)).shape == (2, 7, 16)


@pytest.mark.parametrize("cls", MODELS)
def test_masking_is_reproducible(cls: Any) -> None:
    m = cls(**TINY)
    x = _images(3, 2, 4, 6)
    wb.manual_seed(7)
    _, p1, m1 = m(x)
    wb.manual_seed(7)
    _, p2, m2 = m(x)
    np.testing.assert_array_equal(m1.numpy(), m2.numpy())
    np.testing.assert_array_equal(p1.numpy(), p2.numpy())
    masks = {tuple(m(x)[2].numpy().ravel()) for _ in range(5)}  # fresh noise draws differ
    assert len(masks) > 1
    noise = np.random.default_rng(1).random((3, 6))
    _, _, mask = m(x, noise=noise)
    np.testing.assert_array_equal(mask.numpy(), random_masking(noise, 0.75)[2])


@pytest.mark.parametrize("cls", MODELS)
def test_loss_is_the_masked_patch_error(cls: Any) -> None:
    m = cls(**TINY, norm_pix_loss=True).to(dtype=F64)
    x, noise = _images(3, 2, 4, 6), np.random.default_rng(2).random((3, 6))
    loss, pred, mask = m(x, noise=noise)
    target = patchify(x, 2)
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    per_patch = ((pred.numpy() - target) ** 2).mean(-1)
    np.testing.assert_allclose(loss.item(), (per_patch * mask.numpy()).sum() / mask.numpy().sum(), rtol=1e-13)


@pytest.mark.parametrize("cls", MODELS)
def test_removed_pixels_never_reach_the_prediction(cls: Any) -> None:
    """CRATE-MAE replaces removed patches by the mask token before the encoder; the twin drops them."""
    m = cls(**TINY).to(dtype=F64)
    x, noise = _images(2, 2, 4, 6), np.random.default_rng(4).random((2, 6))
    _, pred, mask = m(x, noise=noise)
    hidden = unpatchify(np.repeat(mask.numpy()[..., None], 8, axis=-1), 2, (4, 6)).astype(bool)
    changed = x + 5.0 * hidden
    np.testing.assert_array_equal(m(changed, noise=noise)[1].numpy(), pred.numpy())
    assert not np.allclose(m(x + 5.0 * ~hidden, noise=noise)[1].numpy(), pred.numpy())


@pytest.mark.parametrize("cls", MODELS)
def test_gradients_against_finite_differences(cls: Any) -> None:
    wb.manual_seed(1)
    m = cls(**TINY).to(dtype=F64)
    for p in m.parameters():  # non-trivial biases, LayerNorm affines and tokens
        p.data += 0.1 * np.random.default_rng(p.size).standard_normal(p.shape)
    x, noise = _images(2, 2, 4, 6, seed=3), np.random.default_rng(5).random((2, 6))
    gradcheck(lambda img: m(img, noise=noise)[1], Tensor(x, requires_grad=True))
    m.zero_grad()
    m(x, noise=noise)[0].backward()
    h, rng = 1e-6, np.random.default_rng(0)
    for name, p in m.named_parameters():  # up to 16 entries of every parameter
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, min(16, flat.size), replace=False):
            orig = flat[i]
            with wb.no_grad():
                flat[i] = orig + h
                plus = m(x, noise=noise)[0].item()
                flat[i] = orig - h
                minus = m(x, noise=noise)[0].item()
            flat[i] = orig
            got = 0.0 if p.grad is None else p.grad.reshape(-1)[i]
            assert abs(got - (plus - minus) / (2 * h)) <= 1e-6 + 1e-5 * abs(got), (name, i)


def test_decoder_layer_undoes_compression_to_first_order() -> None:
    """With the encoder's MSSA and norm, y - MSSA(LN y) inverts z + MSSA(LN z) up to O(|MSSA|^2)."""
    wb.manual_seed(2)
    enc, dec = CRATEBlock(8, heads=2).to(dtype=F64), CRATEDecoderBlock(8, heads=2).to(dtype=F64)
    tied = {"1." + k[2:]: v for k, v in enc.state_dict().items() if k.startswith("0.")}
    dec.load_state_dict({**dec.state_dict(), **tied})
    z = Tensor(_images(2, 5, 8, seed=6))
    compress, uncompress = enc[0], dec[1]
    W, b = enc[0].fn.to_out[0].weight.data.copy(), enc[0].fn.to_out[0].bias.data.copy()
    errors = []
    for scale in (0.1, 0.05, 0.025):
        for layer in (compress, uncompress):
            layer.fn.to_out[0].weight.data, layer.fn.to_out[0].bias.data = scale * W, scale * b
        step = compress(z)
        mid = z + step
        errors.append(np.abs((mid - uncompress(mid)).numpy() - z.numpy()).max() / np.abs(step.numpy()).max())
    # error relative to the step halves with the step: O(|step|^2) in absolute terms
    assert errors[0] < 0.2 and 1.7 < errors[0] / errors[1] < 2.3 and 1.7 < errors[1] / errors[2] < 2.3
    # control: an untied MSSA in the decoder does not undo the step, at any scale
    dec[1].fn.qkv.weight.data = dec[1].fn.qkv.weight.data[::-1].copy()
    step = compress(z)
    assert (
        np.abs((z + step - uncompress(z + step)).numpy() - z.numpy()).max() > 0.5 * np.abs(step.numpy()).max()
    )


# ---- construction, presets, checkpoints, bad input ------------------------------------------------


def test_official_initialization() -> None:
    wb.manual_seed(0)
    m = CRATEMAE(image_size=32, patch_size=4, channels=3, dim=64, depth=2, heads=4)
    for lin in (m.decoder_pred, m.decoder_embed, m.blocks[0].layers[0][0].fn.qkv):
        bound = np.sqrt(6 / (lin.in_features + lin.out_features))  # xavier-uniform, zero bias
        assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.weight.numpy()).max() > 0.9 * bound
        assert lin.bias is None or not lin.bias.numpy().any()
    w = m.patch_embed.proj.weight.numpy()
    assert w.shape == (64, 3, 4, 4) and np.abs(w).max() <= np.sqrt(6 / (48 + 64))
    assert 0.015 < m.mask_token.numpy().std() < 0.025 and 0.015 < m.cls_token.numpy().std() < 0.025
    assert m.blocks[0].layers[0][1].fn.lam == 0.5 and m.blocks[0].layers[0][1].fn.eta == 0.1
    assert m.norm.eps == m.decoder_norm.eps == 1e-6
    names = {n for n, _ in m.named_parameters()}
    assert "pos_embed" not in names and "decoder_pos_embed" not in names  # fixed: buffers, never trained
    np.testing.assert_allclose(m.decoder_pos_embed.numpy()[0], sincos_pos_embed(64, (8, 8)), atol=1e-6)


def test_presets() -> None:
    assert CRATEMAE.PRESETS["mae_crate_base"] == {
        "image_size": 224, "patch_size": 16, "channels": 3, "dim": 768, "depth": 12, "heads": 12
    }  # fmt: skip
    assert ViTMAE.PRESETS["mae_vit_base"]["decoder_depth"] == 8
    for name in ("mae_crate_mnist_tiny", "mae_crate_cifar_tiny"):
        m = CRATEMAE.from_preset(name, depth=1)
        twin = ViTMAE.from_preset(name.replace("crate", "vit"), depth=1)
        C, H = m.channels, m.image_size[0]
        assert (twin.channels, twin.image_size, twin.dim) == (C, m.image_size, m.dim)
        x = _images(2, C, H, H).astype(np.float32)
        assert m(x)[1].shape == twin(x)[1].shape == (2, m.num_patches, 16 * C)
    with pytest.raises(ValueError, match="unknown preset 'mae_crate_huge'"):
        CRATEMAE.from_preset("mae_crate_huge")


def test_bad_input_gets_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"image_size 30x30 must be a multiple of patch_size 4x4"):
        CRATEMAE(30, 4, 1, 16, 1, 2)
    for ratio in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
            CRATEMAE(8, 4, 1, 16, 1, 2, mask_ratio=ratio)
    m = CRATEMAE(8, 4, 1, 16, 1, 2)
    with pytest.raises(ValueError, match=r"noise must have shape \(B, L\) = \(2, 4\), got \(2, 5\)"):
        m(_images(2, 1, 8, 8), noise=np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\) = \(B, 1, 8, 8\)"):
        m(_images(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        CRATEMAE(8, 4, 1, 18, 1, 2)
    classifier = CRATE(image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, channels=1)
    with pytest.raises(
        ValueError, match=r"not a masked-autoencoder checkpoint.*patch_embed\.proj\.weight.*classifier"
    ):
        m.load_state_dict(classifier.state_dict())


def test_state_dict_round_trip() -> None:
    a, b = CRATEMAE(**TINY), CRATEMAE(**TINY)
    b.load_state_dict(a.state_dict())
    x, noise = _images(2, 2, 4, 6).astype(np.float32), np.random.default_rng(0).random((2, 6))
    np.testing.assert_array_equal(a(x, noise=noise)[1].numpy(), b(x, noise=noise)[1].numpy())


@pytest.mark.parametrize("cls", MODELS)
def test_a_few_steps_beat_the_mean_patch(cls: Any) -> None:
    """Trained for 100 steps on 512 mnist5k digits (half of the 7x7 patches hidden), the model
    predicts held-out masked patches better than the mean patch of the training images does."""
    from whitebox.data import load_dataset
    from whitebox.optim import AdamW

    data = load_dataset("mnist5k", "train")
    x = ((data.images[:640] / 255.0 - data.mean[0]) / data.std[0]).astype(np.float32)
    train, held = x[:512], x[512:]
    wb.manual_seed(0)
    m = cls(image_size=28, patch_size=7, channels=1, dim=32, depth=2, heads=2, mask_ratio=0.5)
    opt = AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        m.zero_grad()
        m(train[rng.choice(512, 64, replace=False)])[0].backward()
        opt.step()
    noise = np.random.default_rng(1).random((128, 16))
    with wb.no_grad():
        loss, _, mask = m(held, noise=noise)
    mean_patch = patchify(train, 7).mean(axis=(0, 1))
    baseline = masked_patch_loss(
        Tensor(np.broadcast_to(mean_patch, (128, 16, 49)).copy()), patchify(held, 7), mask.numpy()
    )
    assert loss.item() < 0.9 * baseline.item(), (loss.item(), baseline.item())


@pytest.mark.parametrize("cls", MODELS)
def test_features_and_reconstruction(cls: Any) -> None:
    m = cls(**TINY).to(dtype=F64)
    x, noise = _images(3, 2, 4, 6), np.random.default_rng(8).random((3, 6))
    tokens = m.encode(x).numpy()
    np.testing.assert_array_equal(m.features(x).numpy(), tokens[:, 0])
    np.testing.assert_allclose(m.features(x, pool="mean").numpy(), tokens[:, 1:].mean(axis=1), rtol=1e-14)
    with pytest.raises(ValueError, match="pool must be 'cls' or 'mean'"):
        m.features(x, pool="max")
    masked, filled, mask = m.reconstruct(x, noise=noise)
    _, pred, _ = m(x, noise=noise)
    removed = unpatchify(np.repeat(mask[..., None], 8, axis=-1), 2, (4, 6)).astype(bool)
    np.testing.assert_array_equal(masked, np.where(removed, 0.0, x))
    np.testing.assert_array_equal(filled, np.where(removed, unpatchify(pred.numpy(), 2, (4, 6)), x))
