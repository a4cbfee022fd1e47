"""k-NN and linear probes on frozen features (whitebox.probe)."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox as wb
from whitebox.crate import CRATEMAE
from whitebox.probe import extract_features, knn_accuracy, knn_predict, linear_probe


def _unit(angle_deg: float, r: float = 1.0) -> list[float]:
    a = np.deg2rad(angle_deg)
    return [r * np.cos(a), r * np.sin(a)]


def test_knn_vote_by_hand() -> None:
    """Test point at 0 degrees; neighbours: one of class 0 at 0 deg (cosine 1), two of class 1 at
    +-60 deg (cosine 0.5), one of class 0 at 180 deg (outside k = 3). Weights exp(s / T):
    T = 0.07: e^14.3 > 2 e^7.1, class 0 wins; T = 10: e^0.1 = 1.105 < 2 e^0.05 = 2.103, class 1 wins.
    Lengths do not matter (cosine similarity)."""
    train = np.array([_unit(0, 3.0), _unit(60, 0.5), _unit(-60, 7.0), _unit(180)])
    labels = np.array([0, 1, 1, 0])
    test = np.array([_unit(0, 2.0)])
    assert knn_predict(train, labels, test, k=3, temperature=0.07).tolist() == [0]
    assert knn_predict(train, labels, test, k=3, temperature=10.0).tolist() == [1]
    # k = 1: the nearest alone
    assert knn_predict(train, labels, np.array([_unit(55)]), k=1).tolist() == [1]
    # k = 4 with a large T: two votes each, class 1's are nearer (cos 0.5 > cos 1 + cos 180 = 0 on average)
    assert knn_predict(train, labels, test, k=4, temperature=100.0).tolist() == [1]


def _clusters(n: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((4, 12)) * 3
    y = rng.integers(0, 4, n)
    return centers[y] + spread * rng.standard_normal((n, 12)), y


def test_knn_accuracy_separates_clusters_and_not_noise() -> None:
    x, y = _clusters(500, 0)
    assert knn_accuracy(x[:400], y[:400], x[400:], y[400:]) > 0.95
    shuffled = np.random.default_rng(1).permutation(y)
    assert knn_accuracy(x[:400], shuffled[:400], x[400:], shuffled[400:]) < 0.45  # chance = 0.25


def test_linear_probe_learns_and_is_reproducible() -> None:
    x, y = _clusters(600, 2, spread=2.0)
    a = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=30, seed=3)
    b = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=30, seed=3)
    assert a["test_acc"] > 0.9 and a["train_acc"] > 0.9
    np.testing.assert_array_equal(a["probe"].weight.numpy(), b["probe"].weight.numpy())
    # the returned probe, applied to standardized features, makes the predictions scored
    logits = ((x[500:] - a["mean"]) / a["std"]) @ a["probe"].weight.numpy().T + a["probe"].bias.numpy()
    assert (logits.argmax(1) == y[500:]).mean() == a["test_acc"]
    # one epoch learns less than thirty
    short = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=1, lr=1e-3, seed=3)
    assert short["loss"] > a["loss"]


def test_bad_input_gets_one_clear_error() -> None:
    x, y = _clusters(50, 0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 40\]"):
        knn_predict(x[:40], y[:40], x[40:], k=41)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_predict(x[:40], y[:40], x[40:], temperature=0.0)
    with pytest.raises(ValueError, match=r"labels must be 40 integers"):
        knn_accuracy(x[:40], y[:39], x[40:], y[40:])
    with pytest.raises(ValueError, match="train features have width 12, test features 11"):
        linear_probe(x[:40], y[:40], x[40:, :11], y[40:])
    with pytest.raises(ValueError, match=r"features must be a 2-D array"):
        knn_accuracy(x[:40, None], y[:40], x[40:], y[40:])
    with pytest.raises(ValueError, match="need epochs >= 1"):
        linear_probe(x[:40], y[:40], x[40:], y[40:], epochs=0)


def test_extract_features_in_chunks_equals_one_pass() -> None:
    wb.manual_seed(0)
    m = CRATEMAE(image_size=8, patch_size=4, channels=1, dim=8, depth=1, heads=2).to(dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    for pool in ("cls", "mean"):
        np.testing.assert_allclose(
            extract_features(m, x, pool=pool, batch_size=2), m.features(x, pool=pool).numpy(), rtol=1e-12
        )
    assert m.training
