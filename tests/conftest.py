"""Shared test setup: the ``device`` fixture and the hypothesis profile."""

from __future__ import annotations

import fake_cupy
import pytest
from hypothesis import HealthCheck, settings

from whitebox import backend

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
