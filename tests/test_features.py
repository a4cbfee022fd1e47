"""Frozen-feature probes (whitebox.features) on what a masked autoencoder gives them: the cases
tests/test_dino.py does not cover (reproducibility, each bad input, a MAE encoder's features)."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox as wb
from whitebox.crate import CRATEMAE
from whitebox.data import DataLoader, ImageDataset
from whitebox.features import embed_dataset, knn_accuracy, knn_predict, linear_probe


def _unit(angle_deg: float, r: float = 1.0) -> list[float]:
    a = np.deg2rad(angle_deg)
    return [r * np.cos(a), r * np.sin(a)]


def test_knn_vote_by_hand_ignores_lengths() -> None:
    """Test point at 0 degrees; neighbours: class 0 at 0 deg (cosine 1), class 1 at +-60 deg
    (cosine 0.5), class 0 at 180 deg (cosine -1). T = 0.07, k = 3: e^14.3 > 2 e^7.1, class 0;
    T = 10: e^0.1 = 1.105 < 2 e^0.05 = 2.103, class 1. k = 4, T = 100: the two class-1 votes
    (cosines 0.5, 0.5) outweigh class 0's (1 and -1)."""
    train = np.array([_unit(0, 3.0), _unit(60, 0.5), _unit(-60, 7.0), _unit(180)])
    labels = np.array([0, 1, 1, 0])
    test = np.array([_unit(0, 2.0)])
    assert knn_predict(train, labels, test, k=3, temperature=0.07).tolist() == [0]
    assert knn_predict(train, labels, test, k=3, temperature=10.0).tolist() == [1]
    assert knn_predict(train, labels, np.array([_unit(55)]), k=1).tolist() == [1]
    assert knn_predict(train, labels, test, k=4, temperature=100.0).tolist() == [1]


def _clusters(n: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((4, 12)) * 3
    y = rng.integers(0, 4, n)
    return centers[y] + spread * rng.standard_normal((n, 12)), y


def test_knn_accuracy_separates_clusters_and_not_shuffled_labels() -> None:
    x, y = _clusters(500, 0)
    assert knn_accuracy(x[:400], y[:400], x[400:], y[400:]) > 0.95
    shuffled = np.random.default_rng(1).permutation(y)
    assert knn_accuracy(x[:400], shuffled[:400], x[400:], shuffled[400:]) < 0.45  # chance = 0.25


def test_linear_probe_is_reproducible_and_learns_more_with_more_epochs() -> None:
    x, y = _clusters(600, 2, spread=2.0)
    a = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=30, seed=3)
    b = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=30, seed=3)
    assert a == b
    assert a["test_acc"] > 0.9 and a["train_acc"] > 0.9
    short = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=1, lr=1e-3, seed=3)
    assert short["loss"] > a["loss"]


def test_bad_input_gets_one_clear_error() -> None:
    x, y = _clusters(50, 0)
    with pytest.raises(ValueError, match=r"temperature must be positive"):
        knn_predict(x[:40], y[:40], x[40:], temperature=0.0)
    with pytest.raises(ValueError, match=r"train labels must have shape \(40,\)"):
        knn_accuracy(x[:40], y[:39], x[40:], y[40:])
    with pytest.raises(ValueError, match="train features have 12 dims, test features 11"):
        linear_probe(x[:40], y[:40], x[40:, :11], y[40:])
    with pytest.raises(ValueError, match=r"train features must be a non-empty \(N, D\) array"):
        knn_accuracy(x[:40, None], y[:40], x[40:], y[40:])
    bad = x[40:].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="test features contain NaN"):
        knn_accuracy(x[:40], y[:40], bad, y[40:])
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        linear_probe(x[:40], y[:40], x[40:], y[40:], epochs=0)


def test_embed_dataset_of_mae_features_in_batches_equals_one_pass() -> None:
    """What the mae task's probes read: ``model.features`` of the normalized images, in order."""
    wb.manual_seed(0)
    m = CRATEMAE(image_size=8, patch_size=4, channels=1, dim=8, depth=1, heads=2)
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    data = ImageDataset(images, np.arange(5) % 2, 2, "toy", ["a", "b"], (0.5,), (0.25,), False)
    whole = next(iter(DataLoader(data, 5, shuffle=False)))[0]
    with m.evaluating():
        for pool in ("cls", "mean"):
            feats, labels = embed_dataset(lambda x, pool=pool: m.features(x, pool=pool), data, batch_size=2)
            np.testing.assert_allclose(feats, m.features(whole, pool=pool).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(labels, data.labels)
    assert m.training
