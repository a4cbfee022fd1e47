"""Reader for the IDX format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (TT: element type code,
NN: number of dimensions), then NN big-endian uint32 sizes, then the elements
in C order, big-endian. The files are usually gzip-compressed; ``read_idx``
accepts either form, from a path or from bytes.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

#: IDX element type code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(source: str | os.PathLike[str] | bytes, name: str | None = None) -> np.ndarray:
    """Parse an IDX file (raw or gzip) into an array in native byte order.

    ``source`` is a path or the file's bytes; ``name`` labels the data in error
    messages (defaults to the path, or ``"<bytes>"``). Raises ``ValueError``
    naming the file when it is corrupt, truncated or has trailing bytes.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        raw, label = bytes(source), name or "<bytes>"
    else:
        raw, label = Path(source).read_bytes(), name or str(source)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{label}: corrupt or truncated gzip stream ({exc})") from exc
    return _parse(raw, label)


def _parse(raw: bytes, label: str) -> np.ndarray:
    """Decode an uncompressed IDX byte string."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{label}: not an IDX file (expected magic 00 00 TT NN, got {raw[:4].hex(' ')!r})")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{label}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{label}: truncated header: {ndim} dims need {header} bytes, got {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else "trailing bytes"
        raise ValueError(
            f"{label}: {problem}: shape {shape} of {dtype.name} needs {expected} data bytes, found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
