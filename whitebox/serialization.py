"""Checkpoints: ``save(path, obj)`` and ``load(path)`` for nested dicts of arrays and metadata.

A checkpoint is one ``.npz`` archive (a zip of ``.npy`` files, the layout
``np.savez`` writes), readable with ``np.load(path, allow_pickle=False)``:

* every array leaf is one entry, named by its '/'-joined key path
  (``model/blocks.0.attn.qkv.weight``); CuPy arrays are copied to the host;
* ``__whitebox_tree__`` holds, as UTF-8 JSON, the dict structure (key order,
  empty dicts) and every non-array leaf: numbers, strings, booleans, None and
  lists of those (tuples come back as lists);
* ``__whitebox__`` holds the format version and marks the file as a checkpoint.

Nothing is pickled, so loading a checkpoint cannot execute code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.tensor import Tensor

FORMAT_VERSION = 1
MARKER = "__whitebox__"
TREE = "__whitebox_tree__"

# The JSON tree is a list of [key, kind, value] triples per dict, kind being one of:
_DICT, _ARRAY, _VALUE = "dict", "array", "value"


def save(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """Write ``obj`` (a nested dict with str keys) to ``path`` as a whitebox checkpoint.

    Keys must be non-empty strings without '/'. The file is written to a
    temporary file of its own in the same folder and renamed, so an interrupted
    save never leaves a half checkpoint under ``path``, two saves never share a
    temporary file, and a failed save (a full disk) leaves no temporary behind.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"whitebox.save: expected a dict, got {type(obj).__name__}")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, "", arrays)
    entries = {
        MARKER: np.array(FORMAT_VERSION),
        TREE: np.frombuffer(json.dumps(tree).encode("utf-8"), dtype=np.uint8),
        **arrays,
    }
    path = os.fspath(path)

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w") as zf:
            for name, arr in entries.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    atomic_write(path, write)


def atomic_write(path: str | os.PathLike[str], write: Any, mode: str = "wb") -> None:
    """Call ``write(file)`` on a fresh temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the new one, never a half-written one; on any
    failure the temporary file is removed and the error re-raised.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path) or "."
    )
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by ``save``: the nested dict, with NumPy arrays.

    Raises ValueError, naming the file, when it is not a whitebox checkpoint
    (not a zip/.npz archive, truncated or corrupted, or an .npz without the
    ``__whitebox__`` marker), and FileNotFoundError when it does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"whitebox.load: no such file: {path}")
    entries = _read_npz(path)
    if MARKER not in entries:
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(
            f"whitebox.load: {path} is not a whitebox checkpoint: it is an .npz archive without the "
            f"{MARKER!r} marker entry (its entries: {shown or 'none'}); write checkpoints with whitebox.save"
        )
    version = int(entries.pop(MARKER))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"whitebox.load: {path} has checkpoint format {version}, this whitebox reads up to "
            f"{FORMAT_VERSION}; upgrade whitebox"
        )
    try:
        tree = json.loads(bytes(entries.pop(TREE)).decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"whitebox.load: {path}: the {TREE!r} entry is missing or corrupted ({exc})"
        ) from exc
    return _decode(tree, "", entries, path)


def checkpoint_arch_check(
    saved_config: Mapping[str, Any], expected: Mapping[str, Any], source: str = "checkpoint"
) -> None:
    """Raise ValueError listing every field of ``expected`` that ``saved_config`` lacks or sets differently.

    ``expected`` holds the architecture fields of the model about to receive the
    weights; extra fields of the saved config (training settings) are ignored.
    Tuples and lists compare equal, as a config read back from JSON has lists.
    """
    diffs = []
    for key, want in expected.items():
        if key not in saved_config:
            diffs.append(f"{key}: absent from the {source} (model: {want!r})")
        elif _plain(saved_config[key]) != _plain(want):
            diffs.append(f"{key}: {source} {saved_config[key]!r} vs model {want!r}")
    if diffs:
        raise ValueError(
            f"{source} was saved for a different architecture; differing config fields: " + "; ".join(diffs)
        )


# ---- encoding -------------------------------------------------------------------


def _encode(node: Mapping[str, Any], prefix: str, arrays: dict[str, np.ndarray]) -> list[list[Any]]:
    out = []
    for key, value in node.items():
        path = _join(prefix, key)
        if isinstance(value, Mapping):
            out.append([key, _DICT, _encode(value, path, arrays)])
        elif isinstance(value, np.ndarray | np.generic) or hasattr(value, "__cuda_array_interface__"):
            arr = np.asarray(backend.to_numpy(value))
            if arr.dtype.hasobject:
                raise TypeError(f"whitebox.save: array {path!r} has dtype object, which needs pickle")
            arrays[path] = arr
            out.append([key, _ARRAY, None])
        elif isinstance(value, Tensor):
            raise TypeError(f"whitebox.save: {path!r} is a Tensor; save its array (.data) instead")
        elif value is None or isinstance(value, bool | int | float | str | list | tuple):
            try:
                json.dumps(value)
            except TypeError as exc:
                raise TypeError(f"whitebox.save: {path!r} is not JSON-serializable: {exc}") from exc
            out.append([key, _VALUE, value])
        else:
            raise TypeError(
                f"whitebox.save: {path!r} is a {type(value).__name__}; leaves must be arrays, numbers, "
                "strings, booleans, None or lists of those"
            )
    return out


def _join(prefix: str, key: Any) -> str:
    if not isinstance(key, str) or not key or "/" in key:
        raise ValueError(
            f"whitebox.save: key {key!r} under {prefix or 'the top level'!r} is not allowed; "
            "keys must be non-empty strings without '/'"
        )
    if not prefix and key.startswith("__whitebox"):
        raise ValueError(f"whitebox.save: top-level key {key!r} is reserved for the checkpoint format")
    return f"{prefix}/{key}" if prefix else key


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively (JSON's view of it)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---- decoding -------------------------------------------------------------------


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Every entry of the archive, read eagerly; any failure becomes a ValueError naming the file."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"whitebox.load: {path} is not a whitebox checkpoint: not a zip/.npz archive "
            "(another format, or a truncated file)"
        )
    try:
        _check_declared_sizes(path)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, MemoryError, zlib.error) as exc:
        raise ValueError(
            f"whitebox.load: {path} is corrupted or not a whitebox checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def _check_declared_sizes(path: str) -> None:
    """Refuse an entry whose .npy header declares more data than the archive holds (no huge allocation)."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                fmt = np.lib.format
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read_header(f)
                declared = math.prod(shape) * dtype.itemsize
                if declared > info.file_size:
                    raise ValueError(
                        f"entry {info.filename!r} declares {declared} bytes of data "
                        f"but holds {info.file_size}"
                    )


def _decode(tree: list[list[Any]], prefix: str, arrays: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, kind, value in tree:
        full = f"{prefix}/{key}" if prefix else key
        if kind == _DICT:
            out[key] = _decode(value, full, arrays, path)
        elif kind == _ARRAY:
            if full not in arrays:
                raise ValueError(
                    f"whitebox.load: {path} lacks the array entry {full!r} (corrupted checkpoint)"
                )
            out[key] = arrays[full]
        else:
            out[key] = value
    return out
