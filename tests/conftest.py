"""Shared test setup: the ``device`` fixture and the hypothesis profile."""

from __future__ import annotations

import pytest
from hypothesis import settings

from whitebox import backend

settings.register_profile("whitebox", deadline=None, max_examples=25, print_blob=True)
settings.load_profile("whitebox")


@pytest.fixture(scope="session", params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """Each core test runs on the CPU and, when CuPy sees a GPU, on CUDA."""
    if request.param == "cuda" and not backend.cuda_available():
        pytest.skip("cuda: CuPy or a GPU is not available")
    return request.param
