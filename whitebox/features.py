"""Evaluating frozen features: a weighted k-nearest-neighbour vote and a linear probe.

A trained backbone is judged by how well its features separate classes without being
trained further (DINO's protocol, Caron et al. 2021):

* **k-NN**: features are L2-normalized, so s_ij = <f_i, f_j> is the cosine similarity. A test
  image's k most similar training images vote for their labels with weights exp(s / T):

      score_c(x) = sum_{j in top-k(x)} exp(s_xj / T) [y_j = c],    prediction argmax_c score_c.

* **Linear probe**: a linear classifier y = W f + b on standardized features
  ((f - mean) / std, the training split's statistics), trained by AdamW on the cross-entropy
  with the backbone frozen; the score is its test accuracy.

Both take feature arrays; ``embed_dataset`` computes them with any ``embed(images) -> (B, D)``
(``ImageFeatures(model)`` for the image classifiers: the final cls token after the head's norm).
Compare with the same evaluation of a randomly initialized backbone of the same shape to see
what training added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend, ops
from whitebox.data import DataLoader, ImageDataset
from whitebox.nn import Module, Parameter
from whitebox.optim import AdamW
from whitebox.tensor import Tensor, no_grad

Embed = Callable[[Tensor], Tensor]


class ImageFeatures(Module):
    """f(x) = LayerNorm(pool(tokens)), the tokens of ``model.forward_features`` (a CRATE or ViT
    classifier), pooled as the cls token (``pool="cls"``, what the classifier's head reads) or
    the mean of the patch tokens (``"mean"``); the LayerNorm is the head's (``mlp_head[0]``).
    A backbone for self-supervised training and for the probes; ``dim`` features."""

    def __init__(self, model: Module, pool: str = "cls") -> None:
        super().__init__()
        if not hasattr(model, "forward_features") or not hasattr(model, "mlp_head"):
            raise TypeError(
                "ImageFeatures needs an image model with forward_features and mlp_head, "
                f"got {type(model).__name__}"
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"ImageFeatures: pool must be 'cls' or 'mean', got {pool!r}")
        self.model, self.pool, self.dim = model, pool, model.dim

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.model.forward_features(images)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(axis=1)
        return self.model.mlp_head[0](pooled)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


def embed_dataset(
    embed: Embed, dataset: ImageDataset, batch_size: int = 256, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float32, labels (N,)) of every image of ``dataset``, in order, without
    augmentation or gradient (put the model in eval mode first)."""
    feats, labels = [], []
    with no_grad():
        for images, y in DataLoader(dataset, batch_size, shuffle=False, device=device):
            f = embed(images)
            if f.ndim != 2 or f.shape[0] != images.shape[0]:
                raise ValueError(f"embed must map (B, ...) images to (B, D) features, got {f.shape}")
            feats.append(backend.to_numpy(f.data).astype(np.float32))
            labels.append(backend.to_numpy(y))
    return np.concatenate(feats), np.concatenate(labels)


def _check_features(x: np.ndarray, y: np.ndarray | None, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} features must be a non-empty (N, D) array, got shape {x.shape}")
    if y is not None and np.shape(y) != (len(x),):
        raise ValueError(f"{name} labels must have shape ({len(x)},), got {np.shape(y)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or inf")
    return x


def knn_predict(  # noqa: PLR0917
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> np.ndarray:
    """Labels of ``test_x`` by the exp(cosine / T)-weighted vote of their ``k`` nearest training
    features (cosine similarity); ``chunk`` test rows at a time bound the memory."""
    train_x = _check_features(train_x, train_y, "train")
    test_x = _check_features(test_x, None, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have {train_x.shape[1]} dims, test features {test_x.shape[1]}")
    if int(k) != k or not 1 <= k <= len(train_x):
        raise ValueError(f"k must be an integer in [1, {len(train_x)}] (the training set size), got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    train_y = np.asarray(train_y).astype(np.int64)
    num_classes = int(train_y.max()) + 1

    def unit(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    bank, out = unit(train_x), np.empty(len(test_x), dtype=np.int64)
    for start in range(0, len(test_x), chunk):
        sim = unit(test_x[start : start + chunk]) @ bank.T  # (n, N)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # the k most similar, in any order
        weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
        votes = np.zeros((len(sim), num_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_y[top]), weights)
        out[start : start + chunk] = votes.argmax(axis=1)
    return out


def knn_accuracy(  # noqa: PLR0917
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Fraction of ``test_y`` that ``knn_predict`` gets right."""
    _check_features(test_x, test_y, "test")
    return float((knn_predict(train_x, train_y, test_x, k, temperature) == np.asarray(test_y)).mean())


def linear_probe(  # noqa: PLR0917
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    epochs: int = 50,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Train y = W f + b on standardized frozen features; {"train_acc", "test_acc", "loss"}.

    Minibatch AdamW on the cross-entropy from W = 0, b = 0; the order of the minibatches comes
    from ``seed`` alone (the global RNG is left untouched).
    """
    train_x = _check_features(train_x, train_y, "train")
    test_x = _check_features(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have {train_x.shape[1]} dims, test features {test_x.shape[1]}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"linear_probe: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    train_y = np.asarray(train_y).astype(np.int64)
    num_classes = int(max(train_y.max(), np.max(test_y))) + 1
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    xs_train = ((train_x - mean) / std).astype(np.float32)
    xs_test = ((test_x - mean) / std).astype(np.float32)
    # zero initialization: the problem is convex, and no random number is drawn
    weight = Parameter(np.zeros((num_classes, train_x.shape[1]), dtype=np.float32))
    bias = Parameter(np.zeros(num_classes, dtype=np.float32))

    def probe(x: Tensor) -> Tensor:
        return F.linear(x, weight, bias)

    opt = AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(xs_train))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out = ops.cross_entropy(probe(Tensor(xs_train[idx])), train_y[idx])
            opt.zero_grad()
            out.backward()
            opt.step()
            loss = out.item()

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        with no_grad():
            pred = probe(Tensor(x)).numpy().argmax(axis=1)
        return float((pred == np.asarray(y)).mean())

    return {"train_acc": accuracy(xs_train, train_y), "test_acc": accuracy(xs_test, test_y), "loss": loss}
