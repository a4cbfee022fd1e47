"""Shared test setup: the ``device``, ``threads`` and ``load_benchmark`` fixtures and the
hypothesis profile."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import fake_cupy
import pytest
from hypothesis import HealthCheck, settings

from whitebox import backend, host_threads

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# `device` is function-scoped (the fake CuPy is installed per test); it holds no per-example state.
settings.register_profile(
    "whitebox",
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("whitebox")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda), "fake-cuda"])
def device(request: pytest.FixtureRequest) -> str:
    """Each core test runs on the CPU, on CUDA when CuPy sees a GPU, and on 'fake-cuda':
    whitebox's 'cuda' device backed by the strict CuPy double of tests/fake_cupy.py."""
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("cuda: CuPy or a GPU is not available")
    if request.param == "fake-cuda":
        fake_cupy.install(request.getfixturevalue("monkeypatch"))
        return "cuda"
    return request.param


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """``host_threads.set_num_threads``, with even small arrays split (MIN_BLOCK = 1); the thread
    count is restored afterwards."""
    monkeypatch.setattr(host_threads, "MIN_BLOCK", 1)
    before = host_threads.num_threads()
    yield host_threads.set_num_threads
    host_threads.set_num_threads(before)


@pytest.fixture
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of ``benchmarks/`` by name (they are scripts, not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
