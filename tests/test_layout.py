"""The package's shape: the import graph reads bottom-up, has no loop but tensor <-> ops, and no
module is much over 400 lines. Imports are read from the source with ast (nothing is imported),
including those inside functions: a lazy import is still a dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "whitebox"

# Layer of each top-level part of the package, bottom-up: a module may import its own layer
# or lower ones, never a higher one.
LAYERS: dict[str, int] = {
    "backend": 0,
    "host_threads": 0,  # elementwise work of fused ops split over the host's cores (issue 16)
    "tensor": 1,
    "ops": 1,
    "functional": 1,
    "gradcheck": 1,
    "serialization": 1,
    "nn": 2,
    "optim": 2,
    "rate": 3,
    "torch_reference": 3,  # the official PyTorch code, for cross-checks; imports no whitebox module
    "crate": 4,
    "selfsup": 4,  # DINO's head, EMA teacher, loss and collapse watch (issue 13)
    "interop": 5,
    "distributed": 5,  # data-parallel gradients and sampling (on main since issue 18)
    "data": 6,
    "features": 7,  # k-NN and linear probe on frozen features (issue 13)
    "train": 7,
    "measure": 7,
    "invertibility": 7,  # an autoencoder's encoder and decoder measured in mirrored order
    "viz": 7,
    "segment": 7,  # segmentation from attention and its IoU (issue 12)
    "viz_scenes": 7,
    "report": 8,  # measurements and figures of a run, for the CLI and the benchmarks
    "cli_args": 9,
    "cli": 9,
    "__main__": 10,
}
# The one loop the design has: a Tensor's operators call whitebox.ops, and the ops make Tensors.
ALLOWED_LOOP = "tensor <-> ops"
MAX_LINES = 400
# The guide says "about 400": tensor.py holds the Tensor class with all its operator methods,
# which a split would only scatter.
TOLERATED_LINES = {"tensor.py": 425}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The whitebox modules ``path`` imports (``from whitebox import ops`` counts as whitebox.ops)."""
    me = _module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, me, path.name == "__init__.py")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for imported in names:
            name = imported
            while name and name not in modules:  # `from whitebox.crate.probe import x` -> the module
                name = name.rpartition(".")[0]
            if name.startswith("whitebox.") and name != me:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _part(module: str) -> str:
    return module.split(".")[1]


def _loops(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    graph = _graph()
    assert "whitebox.crate.mssa" in graph["whitebox.crate.__init__".removesuffix(".__init__")]
    assert {"whitebox.crate.attention", "whitebox.ops.attention"} <= graph["whitebox.crate.mssa"]
    assert "whitebox.ops" in graph["whitebox.tensor"]  # the allowed loop is seen ...
    assert "whitebox.tensor" in graph["whitebox.ops.elementwise"]
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in _graph() if m != "whitebox"}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_import_loop_but_tensor_and_ops() -> None:
    for component in _loops(_graph()):
        parts = {_part(m) for m in component}
        assert parts <= {"tensor", "ops"}, (
            f"import loop ({ALLOWED_LOOP} is the only one allowed): {sorted(component)}"
        )


def test_lower_layers_never_import_higher_ones() -> None:
    upward = [
        f"{src} (layer {LAYERS[_part(src)]}) imports {dst} (layer {LAYERS[_part(dst)]})"
        for src, targets in _graph().items()
        if src != "whitebox"
        for dst in sorted(targets)
        if LAYERS.get(_part(dst), -1) > LAYERS.get(_part(src), -1)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines(path: Path) -> None:
    limit = TOLERATED_LINES.get(str(path.relative_to(ROOT)), MAX_LINES)
    lines = len(path.read_text().splitlines())
    assert lines <= limit, f"{path.relative_to(ROOT.parent)} has {lines} lines (at most {limit})"


def test_importing_whitebox_leaves_malloc_alone() -> None:
    """No process-wide side effect on import: mallopt is called only by backend.tune_malloc()."""
    probe = (
        "import ctypes\n"
        "calls = []\n"
        "class Spy:\n"
        "    def __init__(self, *a, **k): pass\n"
        "    def mallopt(self, *a): calls.append(a); return 1\n"
        "ctypes.CDLL = Spy\n"
        "import whitebox, whitebox.crate, whitebox.nn, whitebox.optim\n"
        "assert calls == [], calls\n"
        "import os; os.environ.pop('WHITEBOX_KEEP_HOST_MEMORY', None)\n"
        "import sys\n"
        "expected = sys.platform.startswith('linux')\n"
        "assert whitebox.backend.tune_malloc() is expected\n"
        "assert calls == ([(-3, 1 << 30), (-1, 1 << 30)] if expected else []), calls\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT.parent, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
