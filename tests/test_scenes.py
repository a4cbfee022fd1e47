"""whitebox.data.scenes: deterministic scenes with true masks, backgrounds that do not give the
class away, objects spread over the frame; the scenes-mnist / scenes-fashion registry entries."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from whitebox.data import load_dataset
from whitebox.data.datasets import DATASETS, FASHION_SYSTEM_DIR
from whitebox.data.scenes import MASK_LEVEL, make_scenes, render_backgrounds, resize, scenes_loader
from whitebox.segment import centered_box, iou
from whitebox.viz_scenes import plot_layer_ious, plot_scenes, plot_segmentation


@pytest.fixture(scope="module")
def digits():
    """100 mnist5k digits of each class: (uint8 (1000, 1, 28, 28), labels (1000,))."""
    d = load_dataset("mnist5k", "train")
    idx = np.concatenate([np.flatnonzero(d.labels == c)[:100] for c in range(10)])
    return d.images[idx], d.labels[idx]


@pytest.fixture(scope="module")
def scenes(digits):
    return make_scenes(*digits, n=1000, size=48, seed=3)


def _pixels(x: np.ndarray) -> np.ndarray:
    """24x24 average-pooled pixels, one row per image."""
    return x.reshape(len(x), 24, 2, 24, 2).mean(axis=(2, 4)).reshape(len(x), -1)


def test_deterministic_and_well_formed(digits, scenes):
    again = make_scenes(*digits, n=1000, size=48, seed=3)
    for field in ("images", "masks", "labels", "boxes"):
        np.testing.assert_array_equal(getattr(scenes, field), getattr(again, field))
    other = make_scenes(*digits, n=1000, size=48, seed=4)
    assert (other.images != scenes.images).mean() > 0.5
    assert scenes.images.shape == (1000, 1, 48, 48) and scenes.images.dtype == np.uint8
    assert scenes.masks.shape == (1000, 48, 48) and scenes.masks.dtype == np.bool_
    np.testing.assert_array_equal(scenes.labels, digits[1])  # scene i shows object i
    assert scenes.masks.sum(axis=(1, 2)).min() >= 20
    # the mask lies inside the pasted box, and the object is opaque and bright there
    for (top, left, side), m, img in zip(scenes.boxes, scenes.masks, scenes.images[:, 0], strict=True):
        outside = m.copy()
        outside[top : top + side, left : left + side] = False
        assert not outside.any()
        assert img[m].min() >= np.floor(MASK_LEVEL * 255)


def test_backgrounds_do_not_give_the_class_away(digits, scenes):
    objects, labels = digits
    backgrounds = render_backgrounds(objects[:, 0], 1000, 48, seed=3)
    # the scenes are these backgrounds (made without the labels) outside the pasted boxes
    for (top, left, side), bg, img in zip(scenes.boxes, backgrounds, scenes.images[:, 0], strict=True):
        away = np.ones((48, 48), bool)
        away[top : top + side, left : left + side] = False
        np.testing.assert_array_equal(img[away], np.rint(bg[away] * 255))
    # a classifier on the background pixels is at chance (0.1); on the object's box it is not
    clf = LogisticRegression(max_iter=300)
    on_background = cross_val_score(clf, _pixels(backgrounds), labels, cv=3).mean()
    crops = [
        resize(img[t : t + s, u : u + s] / 255, 16)
        for (t, u, s), img in zip(scenes.boxes, scenes.images[:, 0], strict=True)
    ]
    on_objects = cross_val_score(clf, np.reshape(crops, (1000, -1)), labels, cv=3).mean()
    assert on_background < 0.16
    assert on_objects > 0.5


def test_objects_are_spread_over_the_frame(scenes):
    ys, xs = np.mgrid[0:48, 0:48]
    area = scenes.masks.sum(axis=(1, 2))
    cy = (scenes.masks * ys).sum(axis=(1, 2)) / area - 23.5
    cx = (scenes.masks * xs).sum(axis=(1, 2)) / area - 23.5
    assert abs(cy.mean()) < 1.5 and abs(cx.mean()) < 1.5
    assert cy.std() > 5 and cx.std() > 5
    assert (np.hypot(cy, cx) > 8).mean() > 0.3
    for up in (True, False):
        for left in (True, False):
            assert (((cy < 0) == up) & ((cx < 0) == left)).mean() > 0.18
    # objects touch every border somewhere, and a centred box is a poor guess
    top, left, side = scenes.boxes.T
    assert (top == 0).any() and (left == 0).any() and (top + side == 48).any() and (left + side == 48).any()
    assert iou(centered_box(scenes.masks), scenes.masks).mean() < 0.3


def test_fill_holes_and_resize():
    ring = np.zeros((1, 28, 28), np.uint8)
    ring[0, 6:22, 6:22] = 255
    ring[0, 10:18, 10:18] = 0
    hollow = make_scenes(ring, np.array([0]), n=1, seed=0)
    filled = make_scenes(ring, np.array([0]), n=1, seed=0, fill_holes=True)
    assert filled.masks.sum() > hollow.masks.sum()
    top, left, side = filled.boxes[0]
    inner = filled.masks[0, top + side // 2, left + side // 2]
    assert inner and not hollow.masks[0, top + side // 2, left + side // 2]
    np.testing.assert_allclose(resize(np.ones((5, 5)), 8), np.ones((8, 8)))
    ramp = np.arange(4.0)[None].repeat(4, 0)
    np.testing.assert_allclose(resize(ramp, 4), ramp)


def test_errors():
    with pytest.raises(ValueError, match=r"objects must be uint8 \(N, s, s\)"):
        make_scenes(np.zeros((2, 28, 27), np.uint8), np.zeros(2), 4)
    with pytest.raises(ValueError, match="2 objects but labels of shape"):
        make_scenes(np.zeros((2, 28, 28), np.uint8), np.zeros(3), 4)
    with pytest.raises(ValueError, match="size 32 is too small"):
        make_scenes(np.zeros((2, 28, 28), np.uint8), np.zeros(2), 4, size=32)


def test_registry_scenes_mnist():
    train, test = load_dataset("scenes-mnist", "train"), load_dataset("scenes-mnist", "test")
    assert (len(train), len(test)) == (8000, 2000) and train.image_shape == (1, 48, 48)
    assert train.masks.shape == (8000, 48, 48) and test.masks.shape == (2000, 48, 48)
    assert np.bincount(train.labels, minlength=10).min() > 0 and train.class_names[3] == "3"
    assert not np.array_equal(train.images[:2000], test.images)
    assert load_dataset("digits").masks is None


def test_scenes_loader_reads_its_source_folder(tmp_path):
    seen = []

    def source(split, directory, download):
        seen.append((split, directory))
        return np.full((3, 1, 28, 28), 200, np.uint8), np.array([0, 1, 2]), ["a", "b", "c"]

    load = scenes_loader(source, "objects", 2, True)
    images, labels, names, masks = load("test", tmp_path / "scenes", False)
    assert seen == [("test", tmp_path / "objects")]
    assert images.shape == (6, 1, 48, 48) and masks.shape == (6, 48, 48) and names == ["a", "b", "c"]
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2])


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_registry_scenes_fashion():
    test = load_dataset("scenes-fashion", "test")
    assert len(test) == 10000 and test.masks.shape == (10000, 48, 48)
    assert DATASETS["scenes-fashion"].flip_ok is False


def test_figures(tmp_path, scenes):
    path = plot_scenes(
        scenes.images[:4], scenes.masks[:4], tmp_path / "f" / "scenes.png", ["a", "b", "c", "d"]
    )
    assert path.stat().st_size > 1000
    maps = np.random.default_rng(0).random((4, 2, 48, 48))
    out = plot_segmentation(
        scenes.images[:4], scenes.masks[:4], ~scenes.masks[:4], maps, tmp_path / "seg.png", title="t"
    )
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match=r"masks must be \(B, H, W\)"):
        plot_scenes(scenes.images[:4], scenes.masks[:3], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="truth and pred must be"):
        plot_segmentation(scenes.images[:4], scenes.masks[:4], scenes.masks[:3], maps, tmp_path / "bad.png")
    rows = [
        {"layer": i, "average": 0.1 * i, "best": 0.2, "maskcut": 0.3, "heads": [0.1, 0.2]} for i in range(3)
    ]
    out = plot_layer_ious(
        {"A": rows, "B": rows[::-1]}, {"floor": 0.1, "ceiling": 0.5}, tmp_path / "l" / "iou.png"
    )
    assert out.stat().st_size > 1000
