"""whitebox.measure on cases whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from whitebox import backend
from whitebox.crate import CRATE, ViT, intermediates
from whitebox.measure import (
    EPS2,
    compression,
    compression_per_head,
    layerwise_compression_sparsity,
    nonzero_fraction,
    subspace_bases,
)

# Two heads of p = 4 on d = 8: head k sees coordinates 4k .. 4k+3.
U_SPLIT = np.stack([np.eye(8)[:, :4], np.eye(8)[:, 4:]])


def test_orthonormal_tokens_per_head_reach_the_hand_value():
    """N = 4 tokens whose projections on each head are orthonormal: R = N/2 ln(1 + p/(N eps^2))."""
    Z = np.concatenate([np.eye(4), 3 * np.eye(4)], axis=1)  # z_i = e_i + 3 e_{4+i}
    per_head = compression_per_head(Z, U_SPLIT)
    np.testing.assert_allclose(per_head, [2 * math.log(1 + 4 / (4 * EPS2))] * 2, rtol=1e-10)
    np.testing.assert_allclose(compression(Z, U_SPLIT), 4 * math.log(101), rtol=1e-10)


def test_tokens_on_one_line_per_head_are_fully_compressed():
    """Every token of a head on one line (any scale): Gram = all ones, R = 1/2 ln(1 + p/eps^2)."""
    Z = np.outer([1.0, 2.0, 0.5, 7.0, 3.0], [1, -1, 0, 2, 0, 0, 5, 0])
    np.testing.assert_allclose(
        compression_per_head(Z, U_SPLIT), [0.5 * math.log(1 + 4 / EPS2)] * 2, rtol=1e-9
    )


def test_compression_is_scale_free_and_batched():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(3, 6, 8))
    batched = compression(Z, U_SPLIT)
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, [compression(z, U_SPLIT) for z in Z])
    np.testing.assert_allclose(compression(10 * Z, U_SPLIT), batched)
    lo, hi = 2 * 0.5 * math.log(1 + 4 / EPS2), 2 * 4 / 2 * math.log(1 + 4 / (4 * EPS2))
    assert np.all((lo < batched) & (batched < hi))


def test_nonzero_fraction():
    assert nonzero_fraction(np.array([[0.0, 1.0], [0.0, -2.0]])) == 0.5
    assert nonzero_fraction(np.zeros((3, 4))) == 0.0


def _crate(**kw) -> CRATE:
    backend.manual_seed(0)
    return CRATE(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, channels=1, **kw).eval()


def _images(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 1, 8, 8)).astype(np.float32)


def test_bases_are_the_heads_slices_of_the_projection():
    model = _crate()
    W = model.transformer.layers[0].attn.qkv.weight.numpy()
    U = subspace_bases(model.transformer.layers[0].attn)
    assert U.shape == (2, 8, 4)
    np.testing.assert_array_equal(U[1], W[4:8].T)
    vit = ViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2, channels=1)
    Wq = vit.transformer.layers[0].attn.to_qkv.weight.numpy()[:8]
    np.testing.assert_array_equal(subspace_bases(vit.transformer.layers[0].attn)[0], Wq[:4].T)


def test_ista_that_zeroes_everything_has_sparsity_zero():
    """With lam so large that eta lam exceeds every pre-activation, each ISTA output is 0."""
    rows = layerwise_compression_sparsity(_crate(lam=1e6), _images())
    assert [r["sparsity"] for r in rows] == [0.0, 0.0]


def test_identity_like_ista_and_hand_computed_compression():
    """D = 0, lam = 0: ISTA(x) = ReLU(x), so the sparsity is the fraction of positive LN outputs;
    R^c equals the one computed by hand from the recorded MSSA inputs and the qkv weights."""
    model = _crate(lam=0.0)
    for block in model.transformer.layers:
        block.ista.weight.data[...] = 0
    images = _images()
    rows = layerwise_compression_sparsity(model, images, batch_size=2)  # chunks of 2, 2, 1
    _, rec = intermediates(model, images)
    for layer, row in enumerate(rows):
        assert row["sparsity"] == pytest.approx(float((rec["ista_in"][layer] > 0).mean()))
        U = subspace_bases(model.transformer.layers[layer].attn)
        per_head = compression_per_head(rec["mssa_in"][layer], U).mean(axis=0)
        np.testing.assert_allclose(row["compression_per_head"], per_head, rtol=1e-5)
        assert row["compression"] == pytest.approx(per_head.sum(), rel=1e-5)


def test_vit_mlp_outputs_are_dense():
    backend.manual_seed(0)
    vit = ViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2, channels=1)
    rows = layerwise_compression_sparsity(vit, _images())
    assert [r["block"] for r in rows] == ["vit", "vit"]
    assert all(r["sparsity"] == 1.0 and r["compression"] > 0 for r in rows)
