"""The tutorials' exercise checks accept the reference solutions and reject wrong answers.

tutorials/exercises.py holds one checker per exercise of tutorials 00-08 and
tutorials/solutions.py the reference answers (tutorials 09-14: exercises_successors.py
and solutions_successors.py); each wrong answer below is a plausible slip, and its
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
import exercises_successors  # noqa: E402
import solutions as S  # noqa: E402
import solutions_successors as SS  # noqa: E402

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


def _mass_up_to(maps, keep):
    """Keeps the entries whose running sum stays within keep: drops the one that crosses it."""
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    out = np.zeros(flat.shape, dtype=bool)
    for row, m in zip(out, flat, strict=True):
        order = np.argsort(-m)
        row[order] = np.cumsum(m[order]) <= keep * m.sum()
    return out.reshape(maps.shape)


def _shard_unpadded(n, r, W, seed, epoch):
    return np.random.default_rng([seed, epoch]).permutation(n)[r::W]


def _step_batch_blocks(n, B, W, r, seed, epoch, t):  # noqa: PLR0917
    """Rank r takes a contiguous block of the one-process batch: the union is right, the ranks are not."""
    b = B // W
    return np.random.default_rng([seed, epoch]).permutation(n)[t * B + r * b : t * B + (r + 1) * b]


def _bucket_plan_at_cap(nbytes, cap):
    """Opens a new bucket when the array would exactly fill the current one."""
    buckets, size = [], 0
    for i, b in enumerate(nbytes):
        if not buckets or size + b >= cap:
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += b
    return buckets


def _tssa_unnormalized(w, Pi, K):
    """m_kj = sum_i pi_ik w_ikj^2, not divided by the group's size sum_i pi_ik."""
    N = len(w)
    W = w.reshape(N, K, -1).transpose(1, 0, 2)
    m = (Pi[..., None] * W**2).sum(axis=1, keepdims=True)
    return (-W * Pi[..., None] / (1 + m)).transpose(1, 0, 2).reshape(N, -1)


def _shares(w, K):
    """sum_j w_ikj^2 / sum_t w_tkj^2, (K, N): each token's share of head k's energy."""
    W = w.reshape(len(w), K, -1).transpose(1, 0, 2) ** 2
    return (W / W.sum(axis=1, keepdims=True)).sum(axis=-1)


def _mask_inverted(noise, ratio):
    ids_keep, ids_restore, mask = SS.random_masking(noise, ratio)
    return ids_keep, ids_restore, ~mask


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
    "09.1": [
        lambda p, P, size: (
            p.reshape(len(p), size[0] // P, size[1] // P, -1, P, P)  # channels first in a patch
            .transpose(0, 3, 1, 4, 2, 5)
            .reshape(len(p), -1, *size)
        ),
        lambda p, P, size: SS.unpatchify(p, P, size[::-1]).transpose(0, 1, 3, 2),  # rows and columns swapped
    ],
    "09.2": [
        lambda noise, ratio: SS.random_masking(-noise, ratio),  # keeps the largest noise
        _mask_inverted,  # mask = 1 where a patch is kept
    ],
    "09.3": [
        lambda pred, t, m, norm: SS.masked_loss(
            pred, t, np.ones_like(m), norm
        ),  # every patch, not the hidden
        lambda pred, t, m, norm: SS.masked_loss(
            pred,
            (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6) if norm else t,
            m,
            False,
        ),  # the biased variance (ddof 0)
    ],
    "09.4": [
        lambda dim, grid: SS.sincos_embedding(dim, grid[::-1]),  # height and width swapped
        lambda dim, grid: SS.sincos_embedding(dim, grid)[1:],  # no row for the cls token
    ],
    "10.1": [
        lambda a, g: a[:, :, 1:, 0].reshape(*a.shape[:2], *g),  # column 0: what the patches give cls
        lambda a, g: a[:, :, 0, :-1].reshape(*a.shape[:2], *g),  # the last patch dropped, not cls
    ],
    "10.2": [
        _mass_up_to,
        lambda maps, keep: (
            maps >= np.quantile(maps, 1 - keep, axis=(-2, -1), keepdims=True)
        ),  # 60% of entries
    ],
    "10.3": [
        lambda P, T: (P & T).sum((1, 2)) / np.maximum((P | T).sum((1, 2)), 1),  # both empty gives 0
        lambda P, T: 2 * (P & T).sum((1, 2)) / np.maximum(P.sum((1, 2)) + T.sum((1, 2)), 1),  # Dice
    ],
    "10.4": [
        lambda T, P: T.reshape(T.shape[0], T.shape[1] // P, P, -1, P).mean(axis=(1, 3)),  # wrong axes
        lambda T, P: T[:, ::P, ::P].astype(float),  # one pixel per patch
    ],
    "11.1": [lambda t, c, tau: SS._softmax(t / tau), lambda t, c, tau: SS._softmax(t - c)],  # no c; no tau
    "11.2": [
        lambda c, t, mu: (1 - mu) * c + mu * t.mean(axis=0, keepdims=True),  # mu on the wrong term
        lambda c, t, mu: mu * c + (1 - mu) * t.mean(axis=1, keepdims=True).T,  # mean over outputs
    ],
    "11.3": [
        lambda tea, stu, t, T, base: {n: base * tea[n] + (1 - base) * stu[n] for n in tea},  # no schedule
        lambda tea, stu, t, T, base: SS.ema_step(stu, tea, t, T, base),  # teacher and student swapped
    ],
    "11.4": [
        lambda q: SS.entropies(q)[::-1],
        lambda q: tuple(h / math.log(2) for h in SS.entropies(q)),  # in bits
    ],
    "12.1": [
        lambda Z, U, Pi, eps: SS.variational_rate(Z, U, np.ones_like(Pi), eps) / U.shape[0],  # Pi ignored
        lambda Z, U, Pi, eps: sum(  # p / (N eps^2) for every group, as in R^c
            0.5
            * Pi[:, k].sum()
            / len(Z)
            * np.log1p(U.shape[2] / (len(Z) * eps**2) * (Pi[:, k, None] * (Z @ Uk) ** 2).sum(0)).sum()
            for k, Uk in enumerate(U)
        ),
    ],
    "12.2": [
        lambda w, tau, K: SS._softmax(tau[:, None] * _shares(w, K), axis=1),  # softmax over the tokens
        lambda w, tau, K: SS._softmax(
            tau[:, None] * (w.reshape(len(w), K, -1) ** 2).sum(-1).T, axis=0
        ),  # raw
    ],
    "12.3": [lambda w, Pi, K: -SS.tssa_out(w, Pi, K), _tssa_unnormalized],  # an ascent step; m not averaged
    "12.4": [
        lambda Y, D, eta, lam: np.maximum(eta * Y @ D - eta * lam, 0),  # one step only
        lambda Y, D, eta, lam: np.maximum(
            np.maximum(eta * Y @ D, 0) - eta * (np.maximum(eta * Y @ D, 0) @ D.T - Y) @ D - eta * lam, 0
        ),  # the first step without its threshold
    ],
    "13.1": [
        _shard_unpadded,
        lambda n, r, W, seed, epoch: np.array_split(SS.shard(n, 0, 1, seed, epoch), W)[r],  # blocks
    ],
    "13.2": [
        _step_batch_blocks,
        lambda n, B, W, r, seed, epoch, t: SS.shard(n, r, W, seed, epoch)[t * B : (t + 1) * B],
    ],
    "13.3": [_bucket_plan_at_cap, lambda nbytes, cap: [list(range(len(nbytes)))]],  # one bucket for all
    "14.1": [
        lambda W, K: W.reshape(K, W.shape[0] // K, W.shape[1]),  # not transposed: (K, p, d)
        lambda W, K: W.reshape(W.shape[1], K, -1).transpose(1, 0, 2),  # the raw memory cut wrongly
    ],
    "14.2": [
        lambda x, D, eta, lam: (float((x @ (np.eye(len(D)) + eta * (D - D.T @ D)) <= eta * lam).mean()), 0.0),
        lambda x, D, eta, lam: SS.ista_zeros(x, D.T, eta, lam),  # D and D^T exchanged
    ],
    "14.3": [
        lambda x, W, K, s: SS.tied_mssa(x * (W.shape[0] // K) ** 0.25, W, K, s) / (W.shape[0] // K) ** 0.25,
        lambda x, W, K, s: SS.tied_mssa(x, W, K, 1.0),  # the step size forgotten
    ],
}


CHECKS = {
    **dict.fromkeys(exercises.EXERCISES, exercises),
    **dict.fromkeys(exercises_successors.SUCCESSOR_EXERCISES, exercises_successors),
}
SOLUTIONS = {
    **{k: getattr(S, e.solution) for k, e in exercises.EXERCISES.items()},
    **{k: getattr(SS, e.solution) for k, e in exercises_successors.SUCCESSOR_EXERCISES.items()},
}


def _not_attempted(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("key", list(CHECKS))
def test_solution_passes(key: str, capsys: pytest.CaptureFixture[str]):
    assert CHECKS[key].check(key, SOLUTIONS[key]) is True
    assert capsys.readouterr().out == f"{key}: correct.\n"


@pytest.mark.parametrize("key", list(CHECKS))
def test_wrong_answers_are_rejected(key: str, capsys: pytest.CaptureFixture[str]):
    assert WRONG[key], f"no wrong answer tested for {key}"
    for wrong in WRONG[key]:
        assert CHECKS[key].check(key, wrong) is False
        assert capsys.readouterr().out.startswith(f"{key}: not right yet. ")


@pytest.mark.parametrize("key", list(CHECKS))
def test_unanswered_exercise_is_reported_not_raised(key: str, capsys: pytest.CaptureFixture[str]):
    answer = type("Stub", (), {"__init__": _not_attempted}) if key == "00b.1" else _not_attempted
    assert CHECKS[key].check(key, answer) is None
    assert "not attempted" in capsys.readouterr().out


@pytest.mark.parametrize("module", [exercises, exercises_successors])
def test_answer_that_crashes_is_wrong(module, capsys: pytest.CaptureFixture[str]):
    key = "01.1" if module is exercises else "12.1"
    assert module.check(key, lambda *args: np.ones(3) @ np.ones(4)) is False  # not a crash of the check
    assert "raised ValueError" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise"):
        module.check("99.9", None)


def test_block_slips_come_from_a_right_block():
    """The 05.2 wrong answers differ from a right answer only by their slip."""
    assert exercises.check("05.2", _block) is True


def test_solution_prints_the_reference(capsys: pytest.CaptureFixture[str]):
    source = exercises.solution("03.1")
    assert source.startswith("def ssa(") and source in capsys.readouterr().out
    source = exercises_successors.solution("12.4")
    assert source.startswith("def alpha_code(") and source in capsys.readouterr().out


def _keys_in(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.findall(r"check\(\"([0-9a-z.]+)\"", code)


@pytest.mark.parametrize("prefix", sorted({k.split(".")[0] for k in CHECKS}))
def test_each_tutorial_poses_its_exercises_once(prefix: str):
    (notebook,) = TUTORIALS.glob(f"{prefix}_*.ipynb")
    keys = [k for k in CHECKS if k.split(".")[0] == prefix]
    assert 3 <= len(keys) <= 5
    assert _keys_in(notebook) == keys
