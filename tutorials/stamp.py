"""Execute tutorials and stamp them, so that committed outputs older than the code are noticed.

    python tutorials/stamp.py execute tutorials/03_mssa_from_compression.ipynb   # run in place, stamp
    python tutorials/stamp.py check tutorials/*.ipynb                            # exit 1 if any is stale

``execute`` runs a notebook top to bottom in a fresh ``python3`` kernel whose
working directory is the notebook's folder, then asks the same kernel which
modules it loaded from this checkout (``whitebox/`` and helpers such as
``tutorials/exercises.py``, imports made inside functions included) and writes
into the notebook's metadata, under ``"whitebox"``: the SHA-256 of each such
source file, a hash of the code cells as executed, and the package version.

``check`` (and ``stale_reasons``, which tests/test_notebooks.py calls) says why a
committed notebook's outputs may no longer be what its code produces: it was
never stamped, it was executed in small mode, a code cell was edited after
execution, or one of the recorded source files changed or disappeared.
A change to a module the notebook never loaded cannot change its outputs and
is not reported. ``make notebooks`` runs ``execute`` at full size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

KEY = "whitebox"
ROOT = Path(__file__).resolve().parent.parent

# Run in the notebook's kernel after its last cell: the source files of loaded modules.
_PROBE = """
import json as _json, sys as _sys
print(_json.dumps(sorted({getattr(_m, "__file__", None) or "" for _m in list(_sys.modules.values())} - {""})))
"""


def file_hash(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, with CRLF read as LF so a checkout's line endings do not matter."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def cells_hash(nb: Any) -> str:
    """SHA-256 of the notebook's code cells' sources, in order (markdown edits do not count)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
            h.update(b"\0")
    return h.hexdigest()


def _installed(rel: str) -> bool:
    """True for a file of an environment (a ``.venv`` inside the checkout, site-packages): not a source.

    Such files depend on where the checkout lies (an editable install's finder holds its path), so
    they would make every clone's notebooks look stale.
    """
    parts = Path(rel).parts
    return ".venv" in parts or "site-packages" in parts


def _relative(path: str, folder: Path, root: Path) -> str | None:
    """``path`` relative to ``folder`` (POSIX), if it is a source .py file inside ``root``; else None."""
    p = Path(path).resolve()
    if p.suffix != ".py" or not p.is_relative_to(root) or _installed(str(p.relative_to(root))):
        return None
    return Path(os.path.relpath(p, folder)).as_posix()


def execute(path: Path, root: Path = ROOT, timeout: int = -1) -> dict[str, Any]:
    """Execute the notebook at ``path`` in place and stamp it; return the stamp.

    Raises ``RuntimeError`` if WHITEBOX_SMALL=1 (stamps record full-size runs only)
    or if the kernel imported ``whitebox`` from somewhere other than ``root``.
    """
    import nbclient
    import nbformat

    if os.environ.get("WHITEBOX_SMALL") == "1":
        raise RuntimeError("unset WHITEBOX_SMALL: committed outputs are full-size runs")
    path, root = Path(path).resolve(), Path(root).resolve()
    folder = path.parent
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop(KEY, None)
    code = cells_hash(nb)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    probe = nb.cells.pop()
    loaded = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream"))
    inits = [Path(f).resolve() for f in loaded if Path(f).name == "__init__.py"]
    outside = [f for f in inits if f.parent.name == "whitebox" and not f.is_relative_to(root)]
    if outside:
        raise RuntimeError(f"{path.name}: the kernel imported whitebox from {outside[0]}, not from {root}")
    files = sorted({r for f in loaded if (r := _relative(f, folder, root)) is not None})
    stamp = {
        "version": _version(root),
        "small": False,
        "cells": code,
        "sources": {r: file_hash(folder / r) for r in files},
    }
    nb.metadata[KEY] = stamp
    nbformat.write(nb, path)
    return stamp


def _version(root: Path) -> str:
    init = root / "whitebox" / "__init__.py"
    for line in init.read_text().splitlines() if init.exists() else []:
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def stale_reasons(path: Path) -> list[str]:
    """Why the committed outputs of the notebook at ``path`` may be out of date ([] if current)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get(KEY)
    if not stamp:
        return ["never stamped (executed without tutorials/stamp.py)"]
    reasons = []
    if stamp.get("small", True):
        reasons.append("executed in small mode")
    if stamp.get("cells") != cells_hash(nb):
        reasons.append("a code cell changed after execution")
    sources = stamp.get("sources", {})
    if not sources:
        reasons.append("the stamp records no source files")
    for rel, digest in sorted(sources.items()):
        if _installed(rel):  # recorded by an older stamp.py: not a source
            continue
        source = path.parent / rel
        if not source.exists():
            reasons.append(f"{rel} no longer exists")
        elif file_hash(source) != digest:
            reasons.append(f"{rel} changed")
    return reasons


def rerun_command(path: Path, root: Path = ROOT) -> str:
    """The command that refreshes one notebook's outputs and stamp."""
    return f"make notebooks NOTEBOOKS={Path(os.path.relpath(Path(path).resolve(), root)).as_posix()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["execute", "check"])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    stale = 0
    for nb in args.notebooks:
        if args.command == "execute":
            print(f"executing {nb}", flush=True)
            execute(nb)
        elif reasons := stale_reasons(nb):
            stale += 1
            print(f"{nb}: stale ({'; '.join(reasons)}); refresh with: {rerun_command(nb)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
