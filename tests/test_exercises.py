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


def _block(block, Z, affine=True, residual_ista=False):
    """A CRATE block by hand; with a flag set, one plausible slip (the defaults are right)."""

    def ln(x, norm):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + norm.eps)
        return x * norm.weight.numpy() + norm.bias.numpy() if affine else x

    attn, ista, p = block.attn, block.ista, block.attn.dim_head
    x, W = ln(Z, block[0].norm), attn.qkv.weight.numpy()
    ws = [x @ W[k * p : (k + 1) * p].T for k in range(attn.heads)]
    heads = np.concatenate([S._softmax_rows(w @ w.T / math.sqrt(p)) @ w for w in ws], axis=1)
    half = Z + heads @ attn.to_out[0].weight.numpy().T + attn.to_out[0].bias.numpy()
    y, D = ln(half, block[1].norm), ista.weight.numpy()
    out = np.maximum(y + ista.eta * (y - y @ D.T) @ D - ista.eta * ista.lam, 0)
    return out + half if residual_ista else out


def _channels_first_patches(images, P):
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // P) * (W // P), P * P * C)


def _cls_column(x, W, heads):
    p = W.shape[0] // heads
    ws = [x @ W[k * p : (k + 1) * p].T for k in range(heads)]
    return np.stack([S._softmax_rows(w @ w.T / math.sqrt(p))[:, 0] for w in ws])


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _greedy_first_position(model, prompt, n):
    ids = np.asarray(prompt, dtype=np.int64)
    for _ in range(n):
        ids = np.append(ids, int(np.argmax(model(ids[None, -model.block_size :]).numpy()[0, 0])))
    return ids


def _greedy_uncropped(model, prompt, n):
    ids = np.asarray(prompt, dtype=np.int64)
    for _ in range(n):
        ids = np.append(ids, int(np.argmax(model(ids[None]).numpy()[0, -1])))
    return ids


def _random_first(ids, chosen_u, kind_u, random_ids, p, mask_id):  # noqa: PLR0917
    chosen = chosen_u < p
    inputs = np.where(chosen & (kind_u < 0.1), random_ids, ids)
    inputs = np.where(chosen & (kind_u >= 0.1) & (kind_u < 0.9), mask_id, inputs)
    return inputs, np.where(chosen, ids, -100)


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
    "05.1": [
        lambda U, kappa, alpha: (
            U.transpose(0, 2, 1).reshape(-1, U.shape[1]),
            kappa * alpha * U.transpose(1, 0, 2).reshape(U.shape[1], -1),
        ),  # the p^(1/4) factors forgotten: the softmax sees scores 1/sqrt(p) too small
        lambda U, kappa, alpha: S.mssa_weights(U, 1.0, alpha),  # kappa forgotten
        lambda U, kappa, alpha: tuple(w.T for w in S.mssa_weights(U, kappa, alpha)),  # (in, out) layout
    ],
    "05.2": [
        lambda block, Z: _block(block, Z, affine=False),  # LayerNorm without its scale and shift
        lambda block, Z: _block(block, Z, residual_ista=True),  # a residual around ISTA too
    ],
    "05.3": [_channels_first_patches, lambda images, P: S.patchify(images.transpose(0, 1, 3, 2), P)],
    "05.4": [
        lambda i, P, C, n, d, L, h: S.crate_parameters(i, P, C, n, d, L, h) - ((i // P) ** 2 + 2) * d,
        lambda i, P, C, n, d, L, h: S.crate_parameters(i, P, C, n, d, L, h) - 5 * d * L,  # 3 d^2 only
    ],
    "06.1": [lambda C, s: 0.0, lambda C, s: -math.log(1 - s + s / C)],  # the true class's term only
    "06.2": [
        lambda Z, U, eps2: sum(S.coding_rate(Z @ Uk, math.sqrt(eps2)) for Uk in U),  # not normalized
        lambda Z, U, eps2: S.measured_compression(Z, U, eps2**2),  # eps^2 taken for eps
    ],
    "06.3": [
        lambda x, W, heads: S.cls_attention(x * (W.shape[0] // heads) ** 0.25, W, heads),  # no 1/sqrt(p)
        _cls_column,  # column 0 (what the patches put on cls) instead of row 0
    ],
    "07.1": [
        lambda w: S._softmax_rows(w @ w.T / math.sqrt(w.shape[1])) @ w,  # no mask
        lambda w: np.tril(S._softmax_rows(w @ w.T / math.sqrt(w.shape[1]))) @ w,  # masked after the softmax
    ],
    "07.2": [
        lambda z, ids: float(-np.take_along_axis(_log_softmax(z), ids[..., None], -1).mean()),  # no shift
        lambda z, ids: S.next_token_loss(z[:, ::-1], ids[:, ::-1]),  # shifted the wrong way
    ],
    "07.3": [
        lambda V, b, d, L, h: S.lm_parameters(V, b, d, L, h) + V * d,  # an untied output matrix
        lambda V, b, d, L, h: S.lm_parameters(V, b, d, L, h) - b * d,  # positions forgotten
    ],
    "07.4": [_greedy_first_position, _greedy_uncropped],
    "08.1": [
        lambda p, V: {"chosen": p, "mask": 0.8, "random": 0.1, "kept": 0.1},  # ignores random = original
        lambda p, V: {"chosen": p, "mask": 0.8 * p, "random": 0.1 * p, "kept": 0.1 * p},  # of all, not chosen
    ],
    "08.2": [
        lambda z, t: S.masked_loss_grad(z, t) * (t != -100).sum() / t.size,  # mean over all positions
        lambda z, t: (S._softmax_rows(z) - np.eye(z.shape[-1])[np.maximum(t, 0)]) / (t != -100).sum(),
    ],
    "08.3": [
        _random_first,
        lambda ids, cu, ku, r, p, m: (S.corrupt(ids, cu, ku, r, p, m)[0], ids),  # targets everywhere
    ],
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


def test_block_slips_come_from_a_right_block():
    """The 05.2 wrong answers differ from a right answer only by their slip."""
    assert exercises.check("05.2", _block) is True


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
