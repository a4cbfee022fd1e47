"""whitebox.segment: thresholding, upsampling, IoU, baselines and the normalized cut on hand-made
arrays; predict_masks on tiny untrained CRATE and ViT models (shapes and errors only)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from whitebox import backend
from whitebox.crate import CRATE, CRATEAlpha, ToST, ViT
from whitebox.segment import (
    attention_masks,
    best_patch_masks,
    centered_box,
    cls_attention_maps,
    head_ious,
    iou,
    mass_threshold,
    normalized_cut,
    patch_coverage,
    predict_masks,
    upsample,
)


def test_mass_threshold_keeps_the_top_share():
    maps = np.array([[0.1, 0.5], [0.1, 0.3]])
    # ranked 0.5, 0.3, 0.1, 0.1: 0.5 < 0.6, 0.5 + 0.3 >= 0.6 -> the two largest
    np.testing.assert_array_equal(mass_threshold(maps, 0.6), [[False, True], [False, True]])
    # exactly half the mass: the largest alone reaches it
    np.testing.assert_array_equal(mass_threshold(maps, 0.5), [[False, True], [False, False]])
    np.testing.assert_array_equal(mass_threshold(maps, 1.0), np.ones((2, 2), bool))
    # unnormalized and batched: the rule is relative to each map's total
    batch = np.stack([maps * 7, maps.T * 0.01])
    np.testing.assert_array_equal(mass_threshold(batch, 0.6)[0], [[False, True], [False, True]])
    np.testing.assert_array_equal(mass_threshold(batch, 0.6)[1], [[False, False], [True, True]])


def test_mass_threshold_errors():
    with pytest.raises(ValueError, match="keep must be in"):
        mass_threshold(np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="nonnegative"):
        mass_threshold(-np.ones((2, 2)))


def test_upsample_and_cls_maps():
    m = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(upsample(m, (2, 1)), [[1, 2], [1, 2], [3, 4], [3, 4]])
    attn = np.zeros((1, 2, 5, 5))
    attn[0, 0, 0] = [0.2, 0.1, 0.2, 0.3, 0.2]
    attn[0, 1, 0] = [0.0, 0.7, 0.1, 0.1, 0.1]
    maps = cls_attention_maps(attn, (2, 2))
    np.testing.assert_allclose(maps[0, 0], [[0.1, 0.2], [0.3, 0.2]])
    heads, average = attention_masks(attn, (2, 2), (3, 3), keep=0.6)
    assert heads.shape == (1, 2, 6, 6) and average.shape == (1, 6, 6)
    # head 1 alone: 0.7 of 1.0 -> the top-left patch only
    np.testing.assert_array_equal(heads[0, 1], upsample(np.array([[1, 0], [0, 0]], bool), (3, 3)))
    # average [[0.4, 0.15], [0.2, 0.15]] of 0.9: 0.4 < 0.54 <= 0.6 -> top-left and bottom-left
    np.testing.assert_array_equal(average[0], upsample(np.array([[1, 0], [1, 0]], bool), (3, 3)))
    with pytest.raises(ValueError, match=r"N = 1 \+ 3\*3"):
        cls_attention_maps(attn, (3, 3))


def test_iou_by_hand():
    pred = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]]], bool)
    truth = np.array([[[1, 0], [1, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 1]]], bool)
    np.testing.assert_allclose(iou(pred, truth), [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(iou(truth, truth), 1.0)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        iou(pred, truth[:, :1])
    with pytest.raises(ValueError, match="boolean"):
        iou(pred.astype(int), truth)


def test_head_ious():
    truth = np.zeros((2, 2, 2), bool)
    truth[:, 0] = True  # the top row
    heads = np.zeros((2, 3, 2, 2), bool)
    heads[:, 0, 0] = True  # head 0 is exact
    heads[:, 1] = True  # head 1 covers everything: 2 / 4
    heads[0, 2, 1, 1] = True  # head 2 misses in image 0, matches one pixel of two in image 1
    heads[1, 2, 0, 0] = True
    np.testing.assert_allclose(head_ious(heads, truth), [[1, 0.5, 0], [1, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"\(B, heads, H, W\)"):
        head_ious(heads[0], truth)


def test_centered_box_has_the_mean_size():
    truth = np.zeros((2, 8, 8), bool)
    truth[0, 0:2, 0:4] = True  # 2 x 4 in a corner
    truth[1, 4:8, 5:7] = True  # 4 x 2 elsewhere
    box = centered_box(truth)  # mean 3 x 3, centred: rows 2..4, cols 2..4
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(box[0], expected)
    np.testing.assert_array_equal(box[1], expected)
    np.testing.assert_allclose(iou(box, truth), [0.0, 0.0])


def test_patch_coverage():
    truth = np.zeros((1, 4, 4), bool)
    truth[0, 0, 0:2] = True  # half of the top-left 2x2 patch
    truth[0, 2, 2] = True  # a quarter of the bottom-right one
    np.testing.assert_allclose(patch_coverage(truth, (2, 2))[0], [[0.5, 0], [0, 0.25]])
    with pytest.raises(ValueError, match="not divisible"):
        patch_coverage(truth, (3, 3))


def test_best_patch_masks_is_the_best_of_all_patch_sets():
    rng = np.random.default_rng(0)
    truth = rng.random((6, 6, 6)) < np.array([0.1, 0.3, 0.5, 0.7, 0.2, 0.05])[:, None, None]
    best = best_patch_masks(truth, (2, 2))
    np.testing.assert_array_equal(best, upsample(best[:, ::2, ::2], (2, 2)))  # whole patches
    subsets = np.array(list(itertools.product([False, True], repeat=9))).reshape(-1, 3, 3)
    for b in range(len(truth)):  # all 512 sets of the 3x3 patches
        every = iou(upsample(subsets, (2, 2)), np.broadcast_to(truth[b], (512, 6, 6)))
        np.testing.assert_allclose(iou(best[b : b + 1], truth[b : b + 1])[0], every.max())


def test_normalized_cut_separates_two_clusters():
    rng = np.random.default_rng(0)
    # patches 0-3 along e1, patches 4-9 along e2 (plus noise): two cliques under cos >= 0.15
    feats = np.concatenate([np.tile([1.0, 0, 0], (4, 1)), np.tile([0, 1.0, 0], (6, 1))])
    feats = feats + 0.05 * rng.standard_normal(feats.shape)
    small_side = np.arange(10) < 4
    weights = np.where(small_side, 0.2, 0.02)  # the attention sits on the small cluster
    out = normalized_cut(feats[None], weights[None])
    np.testing.assert_array_equal(out[0], small_side)
    out = normalized_cut(feats[None], np.where(small_side, 0.0, 0.1)[None])
    np.testing.assert_array_equal(out[0], ~small_side)
    with pytest.raises(ValueError, match=r"weights \(B, n\)"):
        normalized_cut(feats[None], weights)


@pytest.mark.parametrize("cls", [CRATE, ViT])
def test_predict_masks_shapes_and_errors(cls):
    backend.manual_seed(0)
    model = cls(image_size=12, patch_size=4, num_classes=3, dim=16, depth=2, heads=2, channels=1).eval()
    images = np.random.default_rng(0).standard_normal((3, 1, 12, 12)).astype(np.float32)
    for method in ("attention", "maskcut"):
        for layer in (0, -1):
            pred = predict_masks(model, images, method=method, layer=layer)
            assert pred.shape == (3, 12, 12) and pred.dtype == np.bool_
            assert pred.any(axis=(1, 2)).all()
            # constant on each 4x4 patch
            np.testing.assert_array_equal(pred, upsample(pred[:, ::4, ::4], (4, 4)))
    with pytest.raises(ValueError, match="layer 2 is out of range for a model of 2 layers"):
        predict_masks(model, images, layer=2)
    with pytest.raises(ValueError, match="unknown method 'cut'"):
        predict_masks(model, images, method="cut")
    model.cls_token = None
    with pytest.raises(ValueError, match="has no cls token"):
        predict_masks(model, images)


def test_crate_alpha_segments_and_tost_is_refused():
    images = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    sizes = {
        "image_size": 12,
        "patch_size": 4,
        "num_classes": 3,
        "dim": 16,
        "depth": 2,
        "heads": 2,
        "channels": 1,
    }
    backend.manual_seed(0)
    pred = predict_masks(CRATEAlpha(**sizes).eval(), images, method="maskcut")
    assert pred.shape == (2, 12, 12) and pred.dtype == np.bool_
    with pytest.raises(ValueError, match=r"ToST records no \(B, heads, N, N\) attention"):
        predict_masks(ToST(**sizes).eval(), images)
