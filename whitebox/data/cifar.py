"""Reader for CIFAR-10's "python version" batches, without running arbitrary pickles.

The archive ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with
``data_batch_1`` ... ``data_batch_5`` (train), ``test_batch`` and
``batches.meta``. Each batch is a (Python 2) pickle of a dict with
``b"data"``, an (N, 3072) uint8 array whose rows are the 1024 red, then green,
then blue pixels of a 32x32 image, and ``b"labels"``, a list of N ints;
``batches.meta`` has ``b"label_names"``.

A pickle can name any importable callable and the unpickler will call it, so
``pickle.load`` on a downloaded file is code execution. ``SafeUnpickler``
resolves only the few globals a pickled NumPy array needs and refuses all else.
The archive is read in place with ``tarfile`` (nothing is extracted to disk).
"""

from __future__ import annotations

import codecs
import os
import pickle
import tarfile
from typing import Any, BinaryIO

import numpy as np

#: The function NumPy pickles arrays with (numpy.core or numpy._core, by version).
_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]

#: (module, name) -> object: everything a batch pickle may reference.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocol 2.
    ("_codecs", "encode"): codecs.encode,
}
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
_FOLDER = "cifar-10-batches-py"
_PIXELS = 3 * 32 * 32


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside ``ALLOWED_GLOBALS``."""


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only ``ALLOWED_GLOBALS`` and raises on any other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(
                f"refusing to load global {module}.{name}: not a NumPy array part"
            ) from None


def safe_load(source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> Any:
    """Unpickle a CIFAR batch file (path or binary file object) with ``SafeUnpickler``.

    Python 2 strings load as bytes (``encoding="bytes"``), as the batches need.
    """
    label = _label(source, name)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return safe_load(f, label)
    try:
        return SafeUnpickler(source, encoding="bytes").load()
    except ForbiddenGlobalError as exc:
        raise ForbiddenGlobalError(f"{label}: {exc}") from None
    except Exception as exc:  # whatever a damaged stream makes the unpickler raise
        raise ValueError(f"{label}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from exc


def _label(source: str | os.PathLike[str] | BinaryIO, name: str | None) -> str:
    """How errors name the data: ``name``, else the path, else the stream's name."""
    if name:
        return name
    if isinstance(source, str | os.PathLike):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


def read_batch(
    source: str | os.PathLike[str] | BinaryIO, name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One data batch as (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    label = _label(source, name)
    batch = safe_load(source, label)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{label}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (_PIXELS,):
        raise ValueError(f"{label}: b'data' must be a uint8 array of shape (N, {_PIXELS})")
    if labels.shape != (len(data),):
        raise ValueError(f"{label}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_meta(source: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> list[str]:
    """Class names from ``batches.meta``."""
    label = _label(source, name)
    meta = safe_load(source, label)
    if not isinstance(meta, dict) or b"label_names" not in meta:
        raise ValueError(f"{label}: expected a dict with b'label_names'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]


def read_cifar10(archive: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, class_names) of one split ("train" or "test") from the .tar.gz."""
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    with tarfile.open(archive, "r:gz") as tar:

        def member(name: str) -> BinaryIO:
            path = f"{_FOLDER}/{name}"
            try:
                f = tar.extractfile(path)
            except KeyError:
                f = None
            if f is None:
                raise ValueError(f"{archive}: no file {path} in the archive")
            return f

        class_names = read_meta(member("batches.meta"), f"{archive}:batches.meta")
        parts = [read_batch(member(n), f"{archive}:{n}") for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, class_names
