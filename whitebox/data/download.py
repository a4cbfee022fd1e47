"""Downloading and verifying dataset files.

Files live under the cache directory (``$WHITEBOX_DATA``, else
``~/.cache/whitebox``), one folder per dataset. ``fetch`` downloads a URL with a
progress bar into a temporary file next to the destination, checks its
checksum (or, for a file published without one, its size and first line), and only
then renames it into place, so an interrupted or corrupted
download never looks like a good file. ``obtain`` is what the dataset loaders
call: it verifies a cached file on every load, and downloads only when asked.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's bytes do not have the checksum they should."""


def cache_dir() -> Path:
    """Root of the dataset cache: ``$WHITEBOX_DATA`` or ``~/.cache/whitebox``."""
    env = os.environ.get("WHITEBOX_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "whitebox"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name, mirrors, and the published checksum of its bytes.

    Exactly one of ``sha256`` / ``md5`` is given (md5 only where the dataset's
    authors publish no SHA-256).
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None

    @property
    def checksum(self) -> tuple[str, str]:
        """(algorithm, expected hex digest)."""
        return _expected(self.sha256, self.md5)


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str]:
    if sha256 is not None and md5 is None:
        return "sha256", sha256.lower()
    if md5 is not None and sha256 is None:
        return "md5", md5.lower()
    raise ValueError("give exactly one of sha256= or md5=")


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(
    path: str | os.PathLike[str], algorithm: str, expected: str, hint: str = "", name: str | None = None
) -> None:
    """Raise ``ChecksumError`` (naming the file, or ``name``, both digests and ``hint``) on a mismatch."""
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{name or path}: {algorithm} mismatch: expected {expected}, got {actual}"
            + (f"; {hint}" if hint else "")
        )


def _urlopen(url: str) -> Any:
    return urllib.request.urlopen(url, timeout=60)


def _problems(
    path: Path, sha256: str | None, md5: str | None, size: int | None, first_line: str | None
) -> list[str]:
    """What is wrong with the file at ``path`` against the checks given (empty: it passes)."""
    problems = []
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and (actual := file_digest(path, algorithm)) != expected.lower():
            problems.append(f"{algorithm} mismatch: expected {expected.lower()}, got {actual}")
    if size is not None and (actual_size := path.stat().st_size) != size:
        problems.append(f"size {actual_size} bytes != expected {size}")
    if first_line is not None:
        with open(path, "rb") as f:
            got = f.readline().rstrip(b"\n").decode("utf-8", errors="replace")
        if got != first_line:
            problems.append(f"first line {got!r} != expected {first_line!r}")
    return problems


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    md5: str | None = None,
    size: int | None = None,
    first_line: str | None = None,
    opener: Callable[[str], Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless a file that passes the checks is already there.

    The checks are what is given of ``sha256`` / ``md5`` (hex digests), ``size`` (bytes) and
    ``first_line`` (the text before the first newline; for files whose publisher gives no
    digest); at least one is required. The bytes go to a temporary file in ``dest``'s folder,
    are verified, then renamed over ``dest`` (atomic on one filesystem). A failed check raises
    ``ChecksumError`` naming every mismatch and leaves nothing behind. ``opener(url)`` returns
    a readable response (a context manager); ``urllib.request.urlopen`` by default.
    """
    if sha256 is None and md5 is None and size is None and first_line is None:
        raise ValueError("fetch: give at least one of sha256=, md5=, size=, first_line=")
    dest = Path(dest)
    if dest.is_file() and not _problems(dest, sha256, md5, size, first_line):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, (opener or _urlopen)(url) as response:
            headers = getattr(response, "headers", None) or {}
            total = int(headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        problems = _problems(tmp, sha256, md5, size, first_line)
        if problems:
            served = f"{dest}: downloaded from {url}, which served other bytes: "
            raise ChecksumError(served + "; ".join(problems))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def obtain(remote: RemoteFile, directory: Path, download: bool, hint: str) -> Path:
    """Path of ``remote`` in ``directory``, verified; downloaded first when ``download``.

    Without ``download`` a missing file raises ``FileNotFoundError`` that says
    what was expected and how to fetch it (``hint``). With it, mirrors are
    tried in order until one serves the right bytes.
    """
    path = directory / remote.name
    algorithm, expected = remote.checksum
    if not download:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected {algorithm} {expected}); {hint}")
        verify_file(
            path, algorithm, expected, f"the file is damaged or not the published one: delete it and {hint}"
        )
        return path
    errors = []
    for url in remote.urls:
        try:
            return fetch(url, path, **{algorithm: expected})
        except (OSError, ChecksumError) as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
    raise RuntimeError(f"could not download {remote.name} from any mirror: " + "; ".join(errors))
