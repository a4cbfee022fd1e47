"""The tutorials' exercise checks accept the reference solutions and reject wrong answers.

tutorials/exercises.py holds one checker per exercise and tutorials/solutions.py
the reference answers; each wrong answer below is a plausible slip, and its
checker must say so (return False), or the check would be worthless.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
sys.path.insert(0, str(TUTORIALS))

import exercises  # noqa: E402
import solutions as S  # noqa: E402

import whitebox.functional as F  # noqa: E402
from whitebox import nn  # noqa: E402
from whitebox.tensor import make  # noqa: E402


class Renamed(S.TwoLayer):
    """The right computation, but the layers under other names."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        nn.Module.__init__(self)
        self.first = nn.Linear(d_in, d_hidden)
        self.second = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.second(F.relu(self.first(x)))


class NoReLU(S.TwoLayer):
    def forward(self, x):
        return self.out(self.hidden(x))


def _per_tensor_clip(grads, max_norm):
    clipped = [g * min(1.0, max_norm / (np.linalg.norm(g) + 1e-6)) for g in grads]
    return clipped, math.sqrt(sum(float((g * g).sum()) for g in grads))


WRONG = {
    "00.1": [lambda t: make(np.exp(t.data), (t,), lambda g: (g,))],  # VJP without e^x
    "00.2": [lambda x, w, y: x.T @ (x @ w - y) / len(y)],  # the 2 forgotten
    "00.3": [lambda g, shape: g.sum(axis=tuple(range(g.ndim - len(shape))))],  # size-1 axes not summed
    "00b.1": [Renamed, NoReLU],
    "00b.2": [lambda p, g, buf, lr, mu: (p - lr * g, mu * buf + g)],  # momentum buffer unused
    "00b.3": [_per_tensor_clip],
    "00b.4": [lambda t, T, W, lr: lr * 0.5 * (1 + math.cos(math.pi * min(t / T, 1)))],  # no warmup
    "01.1": [lambda Z, eps: 0.5 * np.linalg.slogdet(np.eye(Z.shape[1]) + Z.T @ Z / (len(Z) * eps**2))[1]],
    "01.2": [lambda z, N, eps: 0.5 * math.log1p(float(z @ z) / eps**2)],  # the factor d forgotten
    "01.3": [lambda d, r, eps: d / 2 * math.log1p(1 / eps**2)],  # the isotropic formula
    "02.1": [
        lambda Z, U, eps: sum(S.coding_rate(Z @ Uk, eps * math.sqrt(U.shape[1] / U.shape[2])) for Uk in U)
    ],
    "02.2": [
        lambda Z, y, eps: S.coding_rate(Z, eps) - sum(S.coding_rate(Z[y == j], eps) for j in np.unique(y))
    ],
    "02.3": [lambda Z, U, eps, lam: S.sparse_rate_reduction(Z, U, eps, -lam)],  # sign of the penalty
    "03.1": [
        lambda Z, Uk: S.ssa(Z / Uk.shape[1] ** 0.25, Uk) * Uk.shape[1] ** 0.25
    ],  # a 1/sqrt(p) in the softmax
    "03.2": [lambda Z, U, eps: sum(S.ssa(Z, Uk) @ Uk.T for Uk in U)],  # alpha forgotten
    "03.3": [lambda Z, U, eps: sum(U.shape[2] / (len(Z) * eps**2) * Z @ Uk @ Uk.T for Uk in U)],  # no inverse
    "04.1": [lambda Z, D, eta, lam, Zh: Z + eta * (Zh - Z @ D.T) @ D - eta * lam],  # no ReLU
    "04.2": [
        lambda Zh, D, eta: S.lam_all_zero(Zh, D, eta) * eta,
        lambda Zh, D, eta: 10 * S.lam_all_zero(Zh, D, eta),
    ],
    "04.3": [
        lambda Z, Zh, D, lam: float(max((-Z).max(), (-((Z @ D.T - Zh) @ D + lam)).max()))
    ],  # Z * G dropped
}


def _not_attempted(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("key", list(exercises.EXERCISES))
def test_solution_passes(key: str, capsys: pytest.CaptureFixture[str]):
    assert exercises.check(key, getattr(S, exercises.EXERCISES[key].solution)) is True
    assert capsys.readouterr().out == f"{key}: correct.\n"


@pytest.mark.parametrize("key", list(exercises.EXERCISES))
def test_wrong_answers_are_rejected(key: str, capsys: pytest.CaptureFixture[str]):
    assert WRONG[key], f"no wrong answer tested for {key}"
    for wrong in WRONG[key]:
        assert exercises.check(key, wrong) is False
        assert capsys.readouterr().out.startswith(f"{key}: not right yet. ")


@pytest.mark.parametrize("key", list(exercises.EXERCISES))
def test_unanswered_exercise_is_reported_not_raised(key: str, capsys: pytest.CaptureFixture[str]):
    answer = type("Stub", (), {"__init__": _not_attempted}) if key == "00b.1" else _not_attempted
    assert exercises.check(key, answer) is None
    assert "not attempted" in capsys.readouterr().out


def test_answer_that_crashes_is_wrong(capsys: pytest.CaptureFixture[str]):
    assert exercises.check("01.1", lambda Z, eps: Z @ Z) is False  # a shape error, not a crash of the check
    assert "raised ValueError" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise"):
        exercises.check("99.9", None)


def test_solution_prints_the_reference(capsys: pytest.CaptureFixture[str]):
    source = exercises.solution("03.1")
    assert source.startswith("def ssa(") and source in capsys.readouterr().out


def _keys_in(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.findall(r"check\(\"([0-9a-z.]+)\"", code)


@pytest.mark.parametrize("prefix", sorted({k.split(".")[0] for k in exercises.EXERCISES}))
def test_each_tutorial_poses_its_exercises_once(prefix: str):
    (notebook,) = TUTORIALS.glob(f"{prefix}_*.ipynb")
    keys = [k for k in exercises.EXERCISES if k.split(".")[0] == prefix]
    assert 3 <= len(keys) <= 5
    assert _keys_in(notebook) == keys
