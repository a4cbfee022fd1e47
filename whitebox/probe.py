"""How much a frozen encoder's features know: a weighted k-NN classifier and a linear probe.

Both read one feature vector per image (for example ``model.features(images)`` of a masked
autoencoder) and labels; neither changes the encoder.

* **k-NN** (as in Wu et al. 2018 and DINO): features are L2-normalized, the similarity of a
  test feature x to a training feature x_i is the cosine s_i = x^T x_i / (|x| |x_i|), and each
  of the k most similar training images votes for its label with weight exp(s_i / T):

      score_c(x) = sum_{i in top-k(x)} exp(s_i / T) [y_i = c],     prediction = argmax_c score_c(x).

  Defaults k = 20, T = 0.07.
* **Linear probe**: features standardized with the training set's mean and standard deviation,
  then a multinomial logistic regression W x + b trained with AdamW on the cross-entropy,

      min_{W, b} 1/n sum_i -log softmax(W x_i + b)_{y_i} + weight decay,

  from W = 0, b = 0 (the problem is convex: no random initialization needed). Mini-batches are
  drawn from ``numpy.random.default_rng(seed)``; nothing global is touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend, ops
from whitebox.nn import Linear, Module
from whitebox.optim import AdamW, warmup_cosine
from whitebox.tensor import Tensor, no_grad


def _features(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: features must be a 2-D array (n, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain non-finite values")
    return x


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be {n} integers (shape ({n},)), got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _check(train_x: Any, train_y: Any, test_x: Any, test_y: Any, name: str) -> tuple[np.ndarray, ...]:
    tx, ex = _features(train_x, name), _features(test_x, name)
    if tx.shape[1] != ex.shape[1]:
        raise ValueError(f"{name}: train features have width {tx.shape[1]}, test features {ex.shape[1]}")
    return tx, _labels(train_y, len(tx), name), ex, _labels(test_y, len(ex), name)


def extract_features(model: Module, images: Any, pool: str = "cls", batch_size: int = 256) -> np.ndarray:
    """``model.features(images, pool)`` for all ``images`` (an array or a Tensor), in eval mode
    without gradients, in chunks of ``batch_size``: a float64 host array (n, dim)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]  # an array or a Tensor: the model converts it
                out.append(model.features(chunk, pool=pool).numpy().astype(np.float64))
    finally:
        model.train(was_training)
    return np.concatenate(out)


def knn_predict(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    *,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Labels predicted for ``test_x`` (m, d) by the cosine-similarity, temperature-weighted
    k-NN vote of the module docstring over ``train_x`` (n, d) with labels ``train_y`` (n,)."""
    tx = _features(train_x, "knn_predict")
    ty = _labels(train_y, len(tx), "knn_predict")
    ex = _features(test_x, "knn_predict")
    if not 1 <= k <= len(tx):
        raise ValueError(f"knn_predict: k must be in [1, {len(tx)}] (the training set's size), got {k}")
    if not temperature > 0:
        raise ValueError(f"knn_predict: temperature must be > 0, got {temperature}")
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    tx, ex = unit(tx), unit(ex)
    classes = int(ty.max()) + 1
    pred = np.empty(len(ex), dtype=np.int64)
    for start in range(0, len(ex), batch_size):
        sim = ex[start : start + batch_size] @ tx.T  # (b, n)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
        scores = np.zeros((len(sim), classes))
        np.add.at(scores, (np.arange(len(sim))[:, None], ty[top]), weights)
        pred[start : start + len(sim)] = scores.argmax(axis=1)
    return pred


def knn_accuracy(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, k: int = 20, temperature: float = 0.07
) -> float:
    """The fraction of ``test_y`` that ``knn_predict`` gets right."""
    tx, ty, ex, ey = _check(train_x, train_y, test_x, test_y, "knn_accuracy")
    return float((knn_predict(tx, ty, ex, k=k, temperature=temperature) == ey).mean())


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the linear probe of the module docstring on (``train_x``, ``train_y``) for ``epochs``
    passes of mini-batches (learning rate cosine-decayed from ``lr``) and score it.

    Returns {"train_acc", "test_acc", "loss" (the last epoch's mean training loss), "probe"
    (the trained ``Linear``, float64, applied to standardized features), "mean", "std"}."""
    tx, ty, ex, ey = _check(train_x, train_y, test_x, test_y, "linear_probe")
    if epochs < 1 or batch_size < 1 or not lr > 0 or weight_decay < 0:
        raise ValueError(
            "linear_probe: need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; got "
            f"{epochs}, {batch_size}, {lr}, {weight_decay}"
        )
    mean, std = tx.mean(axis=0), tx.std(axis=0) + 1e-6
    tx, ex = (tx - mean) / std, (ex - mean) / std
    classes = int(max(ty.max(), ey.max())) + 1
    probe = Linear(tx.shape[1], classes, dtype=np.float64, device="cpu")
    probe.weight.data = np.zeros_like(probe.weight.data)
    probe.bias.data = np.zeros_like(probe.bias.data)
    opt = AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-len(tx) // batch_size)
    total, step, loss_sum = epochs * steps_per_epoch, 0, 0.0
    for _ in range(epochs):
        order, loss_sum = rng.permutation(len(tx)), 0.0
        for start in range(0, len(tx), batch_size):
            idx = order[start : start + batch_size]
            opt.lr = warmup_cosine(step, total, 0, lr)
            probe.zero_grad()
            loss = ops.cross_entropy(probe(Tensor(tx[idx])), ty[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step += 1

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        with no_grad():
            return float((backend.to_numpy(probe(Tensor(x)).data).argmax(axis=1) == y).mean())

    return {
        "train_acc": accuracy(tx, ty),
        "test_acc": accuracy(ex, ey),
        "loss": loss_sum / len(tx),
        "probe": probe,
        "mean": mean,
        "std": std,
    }
