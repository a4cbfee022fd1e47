"""Your own images as ``ImageDataset`` splits: an ``.npz`` file of arrays or a folder of image files.

``load_image_data(path, image_size=None, val_fraction=0.1, seed=0)`` reads either source:

* an ``.npz`` file holding ``images`` of shape (N, H, W), (N, H, W, C) or (N, C, H, W), with
  C in {1, 3, 4}, as uint8 (0..255) or float in [0, 1], and integer ``labels`` (N,) numbering the
  classes 0..K-1; optionally ``class_names`` (K,) strings, ``masks`` (N, H, W) integers (one
  segment id per pixel, for the segmentation evaluation) and a test split ``test_images`` /
  ``test_labels`` (with ``test_masks``). Without ``class_names``, K = max(label) + 1 and every
  class 0..K-1 needs a training image (this catches labels counted from 1).
* a folder ``ROOT/<class name>/<image files>`` (PNG and JPEG, read with Pillow): the class names,
  sorted, give the label ids 0..K-1. If every image is grayscale the images get C = 1, otherwise
  all are converted to RGB (C = 3; an alpha channel is dropped); 16-bit grayscale is scaled to
  8 bits (v / 257).

``image_size`` = S resizes every image to S x S (bilinear; masks nearest-neighbour); without it
all images must have one size. Where the source has no test split, a fraction ``val_fraction`` of
each class is held out as the test split, drawn with ``seed`` (``stratified_split``). The
per-channel mean and std, in [0, 1] pixel units, come from the training split alone
(``channel_stats``; a channel of zero spread gets std 1), as for the built-in datasets.
``ImageData.spec()`` is what a run saves to read the same data the same way again: the
source's SHA-256, the reading settings, the class names and the statistics.

Every problem with the input is one ``ValueError`` that names the file and what is wrong; nothing
is written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from whitebox.data.datasets import ImageDataset, channel_stats, stratified_split

CHANNELS = (1, 3, 4)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_KEYS = ("images", "labels", "class_names", "masks", "test_images", "test_labels", "test_masks")
#: Pillow modes read as one grayscale channel; every other mode is read as RGB.
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L")


@dataclass
class ImageData:
    """The train and test splits of one source, their masks (or None), and how they were read."""

    train: ImageDataset
    test: ImageDataset
    train_masks: np.ndarray | None
    test_masks: np.ndarray | None
    path: Path
    sha256: str  # of the .npz file's bytes, or of the folder's (relative name, file SHA-256) list
    image_size: int | None
    val_fraction: float
    seed: int
    held_out: bool  # True when the test split was drawn from the data by val_fraction

    def spec(self) -> dict[str, Any]:
        """A JSON-ready record of the source, the reading settings, classes and statistics."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "image_size": self.image_size,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "held_out": self.held_out,
            "image_shape": list(self.train.image_shape),
            "class_names": list(self.train.class_names),
            "mean": list(self.train.mean),
            "std": list(self.train.std),
        }


def _to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels of an integer (0..255) or float ([0, 1]) array; ``what`` names it in errors."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{what} holds NaN or infinite values")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(
                f"{what} is {a.dtype} with values in [{a.min():g}, {a.max():g}]; float images must be "
                "in [0, 1] (or save them as uint8 0..255)"
            )
        return np.rint(a * 255).astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{what} is {a.dtype} with values in [{a.min()}, {a.max()}]; expected 0..255")
        return a.astype(np.uint8)
    raise ValueError(f"{what} has dtype {a.dtype}; expected uint8 (0..255) or float in [0, 1]")


def _to_nchw(a: np.ndarray, what: str) -> np.ndarray:
    """(N, C, H, W) of (N, H, W), (N, H, W, C) or (N, C, H, W) images, C in ``CHANNELS``."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{what} has shape {a.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    first, last = a.shape[1] in CHANNELS, a.shape[3] in CHANNELS
    if first and last:  # both readings possible: take the one that gives square images, if only one does
        first, last = a.shape[2] == a.shape[3], a.shape[1] == a.shape[2]
    if last and not first:
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    if first and not last:
        return a
    raise ValueError(
        f"{what} has shape {a.shape}: cannot tell which axis holds the channels; expected (N, H, W, C) "
        f"or (N, C, H, W) with C in {CHANNELS}"
    )


def _to_labels(a: np.ndarray, n: int, what: str) -> np.ndarray:
    """int64 labels (n,) from an integer array (or a float one holding whole numbers)."""
    if a.shape != (n,):
        raise ValueError(f"{what} has shape {a.shape}; expected ({n},), one label per image")
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} has dtype {a.dtype}; expected integer class ids 0..K-1")
    return a.astype(np.int64)


def _to_masks(a: np.ndarray, images: np.ndarray, what: str) -> np.ndarray:
    """int64 masks (N, H, W) matching ``images`` (N, C, H, W)."""
    N, _, H, W = images.shape
    if a.shape != (N, H, W):
        raise ValueError(f"{what} has shape {a.shape}; expected ({N}, {H}, {W}), one id per image pixel")
    if a.dtype.kind not in "biu":
        raise ValueError(f"{what} has dtype {a.dtype}; expected integer segment ids")
    if a.size and a.min() < 0:
        raise ValueError(f"{what} holds negative ids (min {a.min()}); expected ids >= 0")
    return a.astype(np.int64)


def _check_range(labels: np.ndarray, k: int, what: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{what}: {bad.size} labels out of range 0..{k - 1} (the first: index {i}, label {labels[i]})"
        )


def _resize(images: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(N, C, S, S) uint8 images or (N, S, S) masks resized with Pillow (bilinear or nearest)."""
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if nearest:  # masks: one int32 ("I" mode) image each
        return np.stack(
            [np.asarray(Image.fromarray(m.astype(np.int32)).resize((size, size), method)) for m in images]
        ).astype(np.int64)
    channels = [  # each channel resized as its own 8-bit image
        [np.asarray(Image.fromarray(plane).resize((size, size), method)) for plane in image]
        for image in images
    ]
    return np.asarray(channels, dtype=np.uint8).reshape(len(images), images.shape[1], size, size)


class _Split(NamedTuple):
    """One split as read: uint8 images (N, C, H, W), int64 labels (N,), int64 masks (N, H, W) or None."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None

    def take(self, idx: np.ndarray) -> _Split:
        return _Split(self.images[idx], self.labels[idx], None if self.masks is None else self.masks[idx])

    def resized(self, size: int) -> _Split:
        """Images (bilinear) and masks (nearest) at size x size; unchanged where they are already."""
        same = self.images.shape[2:] == (size, size)
        return _Split(
            self.images if same else _resize(self.images, size),
            self.labels,
            None if self.masks is None or same else _resize(self.masks, size, nearest=True),
        )


def _class_names(path: Path, names: list[str] | None, train: _Split, test: _Split | None) -> list[str]:
    """The class names (given, or "0".."K-1" with K = max label + 1), every label checked against them."""
    if names is None:
        k = max(int(max(s.labels.max() for s in (train, test) if s is not None)) + 1, 1)
        _check_range(train.labels, k, f"{path}: labels")
        missing = np.setdiff1d(np.arange(k), train.labels)
        if missing.size:
            raise ValueError(
                f"{path}: labels use 0..{k - 1} but no training image has label "
                f"{', '.join(map(str, missing[:5]))}; labels must number the classes 0..K-1 "
                "(or give class_names)"
            )
        names = [str(i) for i in range(k)]
    _check_range(train.labels, len(names), f"{path}: labels")
    if test is not None:
        _check_range(test.labels, len(names), f"{path}: test_labels")
    if len(names) < 2:
        raise ValueError(f"{path}: only one class; a classifier needs at least two")
    return list(names)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, refusing object arrays (they would need pickle) and unknown keys."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array (.npy), not an .npz archive with images and labels")
    arrays = {}
    with archive:
        unknown = sorted(set(archive.files) - set(NPZ_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown arrays {', '.join(unknown)}; expected {', '.join(NPZ_KEYS)}")
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # numpy refuses dtype=object without allow_pickle
                raise ValueError(
                    f"{path}: array {key!r} holds Python objects (dtype=object), which are not loaded "
                    "(they need pickle); save numeric arrays and class_names as a str array"
                ) from exc
    for key in ("images", "labels"):
        if key not in arrays:
            raise ValueError(f"{path}: no array {key!r}; expected {', '.join(NPZ_KEYS)}")
    if ("test_images" in arrays) != ("test_labels" in arrays):
        raise ValueError(f"{path}: test_images and test_labels come together; it has only one of them")
    if "test_masks" in arrays and "test_images" not in arrays:
        raise ValueError(f"{path}: test_masks without test_images")
    return arrays


def _npz_source(path: Path) -> tuple[dict[str, Any], str]:
    """(images / labels / masks of each split present, class_names or None) and the file's SHA-256."""
    arrays = _read_npz(path)
    out: dict[str, Any] = {}
    for prefix in ("", "test_"):
        if f"{prefix}images" not in arrays:
            continue
        what = f"{path}: {prefix}images"
        images = _to_nchw(_to_uint8(arrays[f"{prefix}images"], what), what)
        if len(images) == 0:
            raise ValueError(f"{what} holds no images")
        labels = _to_labels(arrays[f"{prefix}labels"], len(images), f"{path}: {prefix}labels")
        masks = arrays.get(f"{prefix}masks")
        if masks is not None:
            masks = _to_masks(masks, images, f"{path}: {prefix}masks")
        out[prefix or "train_"] = _Split(images, labels, masks)
    if "test_" in out and out["test_"][0].shape[1:] != out["train_"][0].shape[1:]:
        raise ValueError(
            f"{path}: test_images are {out['test_'][0].shape[1:]} (C, H, W) but images are "
            f"{out['train_'][0].shape[1:]}"
        )
    names = arrays.get("class_names")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ValueError(f"{path}: class_names must be a 1-D str array, got {names.dtype}{names.shape}")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: class_names repeat a name: {names}")
    out["class_names"] = names
    return out, hashlib.sha256(path.read_bytes()).hexdigest()


def _decode(file: Path, data: bytes) -> Image.Image:
    """The Pillow image of ``data`` (the bytes of ``file``), fully decoded."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{file}: not a readable image ({exc})") from exc
    return image


def _pixels(image: Image.Image, image_size: int | None) -> np.ndarray:
    """uint8 (1, H, W) of a grayscale image or (3, H, W) of any other, resized to ``image_size``."""
    gray = image.mode in GRAY_MODES
    if image.mode in WIDE_GRAY_MODES:  # 16-bit grayscale (PNG): 0..65535 -> 0..255
        wide = np.asarray(image, dtype=np.float64) / 257
        image = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))
    image = image.convert("L" if gray else "RGB")
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    a = np.asarray(image, dtype=np.uint8)
    return a[None] if gray else a.transpose(2, 0, 1)


def _folder_source(root: Path, image_size: int | None) -> tuple[dict[str, Any], str]:
    """Images and labels of ``ROOT/<class>/<files>``, and a SHA-256 over the files' names and bytes."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {
        c: sorted(
            p
            for p in (root / c).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        for c in classes
    }
    found = [c for c in classes if files[c]]
    if not found:
        raise ValueError(
            f"{root}: no PNG or JPEG images in class folders; expected the layout ROOT/<class name>/<images>"
        )
    empty = [c for c in classes if not files[c]]
    if empty:
        raise ValueError(f"{root}: class folders without PNG or JPEG images: {', '.join(empty)}")
    if len(classes) < 2:
        raise ValueError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two folders")
    digest = hashlib.sha256()
    arrays, labels, sizes = [], [], {}
    for label, c in enumerate(classes):
        for file in files[c]:
            data = file.read_bytes()
            digest.update(
                f"{file.relative_to(root).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode()
            )
            with _decode(file, data) as image:
                sizes.setdefault(image.size, file)
                if image_size is None and len(sizes) > 1:
                    (a, fa), (b, fb) = list(sizes.items())[:2]
                    raise ValueError(
                        f"{root}: images of different sizes ({a[0]}x{a[1]} in {fa.relative_to(root)}, "
                        f"{b[0]}x{b[1]} in {fb.relative_to(root)}); give an image size (--image-size) to "
                        "resize them all"
                    )
                arrays.append(_pixels(image, image_size))  # resized at once: full-size images are not kept
            labels.append(label)
    if any(a.shape[0] == 3 for a in arrays):  # one colour image makes them all RGB (gray: R = G = B)
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    train = _Split(np.stack(arrays), np.asarray(labels, dtype=np.int64), None)
    return {"train_": train, "class_names": classes}, digest.hexdigest()


def load_image_data(
    path: str | Path,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    flip_ok: bool = False,
) -> ImageData:
    """Read an .npz file or an image folder into train and test splits (module docstring).

    ``flip_ok`` says whether a horizontal flip keeps an image in its class (it enables the flip
    augmentation); it is not known from the files, so it is yours to say.
    """
    path = Path(path).expanduser()
    if image_size is not None and (
        isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    image_size = None if image_size is None else int(image_size)
    if path.is_dir():
        source, sha = _folder_source(path, image_size)
    elif path.is_file():
        source, sha = _npz_source(path)
    else:
        raise ValueError(f"{path}: no such file or folder")
    train, given_test = source["train_"], source.get("test_")
    names = _class_names(path, source["class_names"], train, given_test)
    if given_test is not None:
        test = given_test
    else:
        train_idx, test_idx = stratified_split(train.labels, val_fraction, seed)
        if len(test_idx) == 0 or len(train_idx) == 0:
            raise ValueError(
                f"{path}: val_fraction {val_fraction} of {len(train.labels)} images leaves "
                f"{len(train_idx)} for training and {len(test_idx)} held out; both need at least one"
            )
        train, test = train.take(train_idx), train.take(test_idx)
    if image_size is not None:  # .npz arrays (the folder reader resized already)
        train, test = train.resized(image_size), test.resized(image_size)
    mean, std = channel_stats(train.images)
    std = tuple(s if s > 0 else 1.0 for s in std)
    base = ImageDataset(train.images, train.labels, len(names), path.name, names, mean, std, flip_ok)
    return ImageData(
        train=base,
        test=replace(base, images=test.images, labels=test.labels),
        train_masks=train.masks,
        test_masks=test.masks,
        path=path,
        sha256=sha,
        image_size=image_size,
        val_fraction=float(val_fraction),
        seed=int(seed),
        held_out=given_test is None,
    )
