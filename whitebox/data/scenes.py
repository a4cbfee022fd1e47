"""Scenes with known object masks: one object pasted on a cluttered background.

``make_scenes(objects, labels, n, size, seed)`` builds ``n`` grayscale scenes of ``size`` x
``size`` pixels. Scene i holds the object ``objects[i % len(objects)]`` (a 28x28 digit or
Fashion-MNIST item), rescaled to a side s drawn uniformly from ``SCALE_RANGE`` times the
object's side and placed with its top-left corner uniform over [0, size - s]^2, so the object
lies anywhere in the frame, wholly inside it. With o in [0, 1] the rescaled object and b the
background, the pixels are

    x = o                    where the mask m is true (the object is opaque),
    x = b + o (1 - b)        elsewhere (its faint anti-aliased rim brightens the background),

and m = [o > MASK_LEVEL], with enclosed holes filled when ``fill_holes`` (clothing items;
not for digits, whose loops are background).

The background is a sum of a random grating a (1 + sin(2 pi f <u, p> + phi)) / 2, smooth noise
(a coarse random grid upsampled), pixel noise, and 2-4 fragments (small crops) of randomly
chosen objects of any class, clipped to [0, 1]. Every background comes from its own random
stream (``render_backgrounds``, seeded by ``seed`` alone): it is drawn independently of the
scene's object and label, so the background cannot give the class away.

Registered datasets (``whitebox.data.load_dataset``): ``scenes-mnist`` (48x48 scenes of the
mnist5k digits, always available offline) and ``scenes-fashion`` (of Fashion-MNIST items);
each split's scenes use only that split's objects, also for the fragments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_fill_holes

#: Object pixels brighter than this (in [0, 1]) belong to the mask.
MASK_LEVEL = 0.3
#: Range of the object's scale factor (new side / original side).
SCALE_RANGE = (0.7, 1.3)
#: Side range (pixels) of the object fragments in the clutter, and how many a scene gets.
FRAGMENT_SIDE = (6, 10)
FRAGMENTS = (2, 4)


@dataclass
class Scenes:
    """``images`` uint8 (n, 1, size, size), ``masks`` bool (n, size, size), ``labels`` int64 (n,),
    ``boxes`` int64 (n, 3) = (top, left, side) of each pasted object."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear resampling matrix mapping pixel centers onto pixel centers."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = pos - lo
    M = np.zeros((n_out, n_in))
    M[np.arange(n_out), lo] += 1 - w
    M[np.arange(n_out), hi] += w
    return M


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of a square 2-D array to ``side`` x ``side``: R image R^T."""
    R = _interp_matrix(side, image.shape[0])
    return R @ image @ R.T


def _check_objects(objects: np.ndarray, labels: np.ndarray) -> np.ndarray:
    objects = np.asarray(objects)
    if objects.ndim == 4 and objects.shape[1] == 1:
        objects = objects[:, 0]
    if objects.ndim != 3 or objects.shape[1] != objects.shape[2] or objects.dtype != np.uint8:
        raise ValueError(
            f"objects must be uint8 (N, s, s) or (N, 1, s, s), got {objects.dtype}{objects.shape}"
        )
    if np.shape(labels) != (len(objects),):
        raise ValueError(f"{len(objects)} objects but labels of shape {np.shape(labels)}")
    if len(objects) == 0:
        raise ValueError("objects is empty")
    return objects


def render_backgrounds(objects: np.ndarray, n: int, size: int, seed: int) -> np.ndarray:
    """``n`` cluttered backgrounds, float (n, size, size) in [0, 1], from a stream seeded by ``seed``
    alone; fragments are crops of ``objects`` (uint8 (N, s, s)) picked without regard to any label."""
    rng = np.random.default_rng([seed, 1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = objects.shape[1]
    out = np.empty((n, size, size))
    for i in range(n):
        theta, phi = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        freq, amp = rng.uniform(1 / 16, 1 / 4), rng.uniform(0.1, 0.35)
        bg = amp * (1 + np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phi)) / 2
        coarse = rng.uniform(0, rng.uniform(0.1, 0.3), size=(6, 6))
        bg += resize(coarse, size)
        bg += rng.normal(0, rng.uniform(0.02, 0.08), size=(size, size))
        for _ in range(rng.integers(FRAGMENTS[0], FRAGMENTS[1] + 1)):
            side = int(rng.integers(FRAGMENT_SIDE[0], FRAGMENT_SIDE[1] + 1))
            src = objects[rng.integers(len(objects))] / 255.0
            r, c = np.clip(rng.integers(s // 4, s - s // 4, size=2) - side // 2, 0, s - side)
            frag = src[r : r + side, c : c + side] * rng.uniform(0.5, 0.9)
            top, left = rng.integers(0, size - side + 1, size=2)
            window = bg[top : top + side, left : left + side]
            np.maximum(window, frag, out=window)
        out[i] = np.clip(bg, 0, 1)
    return out


def make_scenes(  # noqa: PLR0917
    objects: np.ndarray,
    labels: np.ndarray,
    n: int,
    size: int = 48,
    seed: int = 0,
    fill_holes: bool = False,
) -> Scenes:
    """``n`` scenes of ``size`` px (module docstring), deterministic in ``seed``.

    ``objects`` uint8 (N, s, s) or (N, 1, s, s) with ``labels`` (N,); scene i shows object
    i mod N (so every object appears n // N or n // N + 1 times) and carries its label.
    """
    objects = _check_objects(objects, labels)
    s = objects.shape[1]
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < int(np.ceil(SCALE_RANGE[1] * s)):
        raise ValueError(f"size {size} is too small for objects of side {s} scaled up to {SCALE_RANGE[1]}x")
    backgrounds = render_backgrounds(objects, n, size, seed)
    rng = np.random.default_rng([seed, 0])
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    boxes = np.empty((n, 3), dtype=np.int64)
    index = np.arange(n) % len(objects)
    for i, j in enumerate(index):
        side = round(s * rng.uniform(*SCALE_RANGE))
        top, left = rng.integers(0, size - side + 1, size=2)
        o = np.clip(resize(objects[j] / 255.0, side), 0, 1)
        m = o > MASK_LEVEL
        if fill_holes:
            m = binary_fill_holes(m)
        x = backgrounds[i]
        window = x[top : top + side, left : left + side]
        window[...] = np.where(m, o, window + o * (1 - window))
        masks[i, top : top + side, left : left + side] = m
        images[i, 0] = np.rint(x * 255).astype(np.uint8)
        boxes[i] = top, left, side
    return Scenes(images, masks, np.asarray(labels, dtype=np.int64)[index], boxes)


#: Scene seed of each split (different, so test scenes are not train scenes).
SPLIT_SEEDS = {"train": 0, "test": 1}

Source = Callable[[str, Path, bool], tuple[np.ndarray, np.ndarray, list[str]]]


def scenes_loader(
    source: Source, source_name: str, per_object: int, fill_holes: bool, size: int = 48
) -> Callable[[str, Path, bool], tuple[np.ndarray, np.ndarray, list[str], np.ndarray]]:
    """A dataset-registry loader: ``per_object`` scenes of each object of ``source``'s split.

    ``source`` is the registry loader of the object dataset ``source_name``, read from its own
    folder next to the scenes' (``directory.parent / source_name``). Returns (images, labels,
    class_names, masks): copies of the scenes, generated once per process and split (seconds)
    and kept for the next call.
    """

    @functools.lru_cache(maxsize=2)
    def generate(split: str, directory: Path, download: bool) -> tuple[Scenes, list[str]]:
        objects, labels, class_names = source(split, directory.parent / source_name, download)
        scenes = make_scenes(objects, labels, per_object * len(objects), size, SPLIT_SEEDS[split], fill_holes)
        return scenes, class_names

    def load(split: str, directory: Path, download: bool) -> tuple[np.ndarray, ...]:
        scenes, class_names = generate(split, directory, download)
        return scenes.images.copy(), scenes.labels.copy(), list(class_names), scenes.masks.copy()

    return load
