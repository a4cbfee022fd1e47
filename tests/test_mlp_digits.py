"""The examples/mlp_digits.py walkthrough reaches its advertised accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from mlp_digits import train_mlp_digits


def test_mlp_digits_reaches_95_percent() -> None:
    assert train_mlp_digits(seed=0) >= 0.95
