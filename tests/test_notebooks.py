"""Every tutorial runs, top to bottom, in small mode, and saves its figure.

Each notebook is read into memory and executed there (the committed file is
never written), in a fresh ``python3`` kernel whose working directory is
tutorials/, with WHITEBOX_SMALL=1 and WHITEBOX_FIGURES pointing at a temporary
folder. The kernel inherits this process's environment, so the variables are
set in ``os.environ`` before it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
TIMEOUT = 600


def _execute(nb, figures: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WHITEBOX_SMALL", "1")
    monkeypatch.setenv("WHITEBOX_FIGURES", str(figures))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    return client.execute()


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_kernel_is_this_python(tmp_path, monkeypatch):
    """The 'python3' kernel runs this interpreter (the venv's), with our environment, in tutorials/."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import os, sys\n"
            "print(os.path.realpath(sys.executable))\n"
            "print(os.environ.get('WHITEBOX_SMALL'))\n"
            "print(os.path.realpath(os.getcwd()))"
        )
    )
    out = _execute(nb, tmp_path, monkeypatch)
    lines = _stream_text(out.cells[0]).split()
    assert lines == [os.path.realpath(sys.executable), "1", os.path.realpath(TUTORIALS)]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    figures = tmp_path / "figures"
    figures.mkdir()
    try:
        out = _execute(nb, figures, monkeypatch)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}")
    errors = [o for c in out.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    prefix = path.name[:2]
    made = sorted(p.name for p in figures.iterdir() if p.is_file() and p.name.startswith(prefix))
    assert made, f"{path.name} wrote no figure named {prefix}* into WHITEBOX_FIGURES"
    assert path.read_bytes() == before, f"{path.name} was modified by the test"
