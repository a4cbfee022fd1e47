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

import json
import os
import zipfile
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
    temporary name and renamed, so an interrupted save never leaves a half
    checkpoint under ``path``.
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
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, arr in entries.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    os.replace(tmp, path)


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
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ValueError(
            f"whitebox.load: {path} is corrupted or not a whitebox checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


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
