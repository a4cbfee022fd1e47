"""Optimizers, gradient clipping and learning-rate schedules."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import numpy as np
import pytest

from whitebox import nn
from whitebox.optim import SGD, AdamW, Lion, LRScheduler, Optimizer, clip_grad_norm_, constant, warmup_cosine
from whitebox.tensor import Tensor

RNG = np.random.default_rng(0)
M = RNG.standard_normal((5, 5))
A = M @ M.T + 5 * np.eye(5)  # SPD, condition number ~ 5
B = RNG.standard_normal(5)


def quadratic_loss(x: Tensor) -> Tensor:
    """1/2 x^T A x - b^T x, minimized at A^{-1} b."""
    return 0.5 * (x @ (Tensor(A) @ x)) - Tensor(B) @ x


def minimize(
    opt: Optimizer, loss_fn: Callable[[], Tensor], steps: int, sched: LRScheduler | None = None
) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, lr=0.05),
        lambda ps: SGD(ps, lr=0.02, momentum=0.9),
        lambda ps: SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
        lambda ps: AdamW(ps, lr=0.05, weight_decay=0.0),
        lambda ps: Lion(ps, lr=0.02),
    ],
    ids=["sgd", "momentum", "nesterov", "adamw", "lion"],
)
def test_convex_quadratic_converges_to_solution(make: Callable[[list[nn.Parameter]], Optimizer]) -> None:
    x = nn.Parameter(np.zeros(5))
    opt = make([x])
    # Lion's fixed-size sign steps need a decaying lr to settle.
    sched = LRScheduler(
        opt, functools.partial(warmup_cosine, total_steps=600, warmup_steps=0, base_lr=opt.lr)
    )
    minimize(opt, lambda: quadratic_loss(x), 600, sched)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, B), atol=2e-3)


def test_adamw_rosenbrock_reaches_minimum() -> None:
    xy = nn.Parameter(np.array([-1.5, 2.0]))

    def rosenbrock() -> Tensor:
        x, y = xy[0], xy[1]
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    opt = AdamW([xy], lr=0.02, weight_decay=0.0)
    minimize(opt, rosenbrock, 3000)
    np.testing.assert_allclose(xy.numpy(), [1.0, 1.0], atol=1e-3)


def _two_steps(opt_cls: type[Optimizer], **kw: float) -> list[float]:
    """x^2 from x = 1 (gradient 2x): x after each of two steps."""
    x = nn.Parameter(np.array([1.0]))
    opt = opt_cls([x], **kw)
    out = []
    for _ in range(2):
        x.grad = 2 * x.data
        opt.step()
        out.append(float(x.data[0]))
    return out


def test_sgd_first_two_steps_by_hand() -> None:
    # plain: x1 = 1 - 0.1*2 = 0.8; x2 = 0.8 - 0.1*1.6 = 0.64
    np.testing.assert_allclose(_two_steps(SGD, lr=0.1), [0.8, 0.64], rtol=1e-12)
    # momentum 0.9: b1 = 2, x1 = 0.8; g2 = 1.6, b2 = 0.9*2 + 1.6 = 3.4, x2 = 0.8 - 0.34 = 0.46
    np.testing.assert_allclose(_two_steps(SGD, lr=0.1, momentum=0.9), [0.8, 0.46], rtol=1e-12)
    # nesterov: b1 = 2, u1 = 2 + 0.9*2 = 3.8, x1 = 0.62;
    #           g2 = 1.24, b2 = 1.8 + 1.24 = 3.04, u2 = 1.24 + 0.9*3.04 = 3.976, x2 = 0.2224
    np.testing.assert_allclose(
        _two_steps(SGD, lr=0.1, momentum=0.9, nesterov=True), [0.62, 0.2224], rtol=1e-12
    )
    # weight decay 0.5: d1 = 2 + 0.5 = 2.5, x1 = 0.75; d2 = 1.5 + 0.375 = 1.875, x2 = 0.5625
    np.testing.assert_allclose(_two_steps(SGD, lr=0.1, weight_decay=0.5), [0.75, 0.5625], rtol=1e-12)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([nn.Parameter(np.ones(1))], lr=0.1, nesterov=True)


# ---- against PyTorch -------------------------------------------------------------

SHAPES = [(3, 4), (4,), (2, 2, 2)]


def _grads(steps: int) -> list[list[np.ndarray | None]]:
    """Random gradients per step and parameter; parameter 1 gets none at step 2."""
    rng = np.random.default_rng(7)
    out = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    out[2][1] = None
    return out


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("SGD", {"lr": 0.1}),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("SGD", {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
        ("AdamW", {"lr": 0.01}),
        ("AdamW", {"lr": 0.1, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.3}),
    ],
)
def test_matches_torch(name: str, kw: dict) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(v.copy()) for v in init]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in init]
    opt = {"SGD": SGD, "AdamW": AdamW}[name](ours, **kw)
    topt = getattr(torch.optim, name)(theirs, **kw)
    for step_grads in _grads(5):
        for p, tp, g in zip(ours, theirs, step_grads, strict=True):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=0, atol=1e-6)


def test_lion_matches_reference() -> None:
    """Against a line-by-line NumPy transcription of Chen et al. (2023), Algorithm 2."""
    lr, (b1, b2), wd = 0.01, (0.9, 0.99), 0.1
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in SHAPES]
    ours = [nn.Parameter(v.copy()) for v in init]
    opt = Lion(ours, lr=lr, betas=(b1, b2), weight_decay=wd)
    ref = [v.copy() for v in init]
    ms = [np.zeros(s) for s in SHAPES]
    for step_grads in _grads(6):
        for i, g in enumerate(step_grads):
            ours[i].grad = None if g is None else g.copy()
            if g is None:
                continue
            update = np.sign(b1 * ms[i] + (1 - b1) * g)
            ref[i] = ref[i] - lr * (update + wd * ref[i])
            ms[i] = b2 * ms[i] + (1 - b2) * g
        opt.step()
    for p, r in zip(ours, ref, strict=True):
        np.testing.assert_allclose(p.numpy(), r, rtol=0, atol=1e-12)


# ---- dtype, state ---------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adamw": lambda ps: AdamW(ps, lr=0.01),
    "lion": lambda ps: Lion(ps, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_params_stay_float32(name: str) -> None:
    p = nn.Parameter(np.ones((3, 3), dtype=np.float32))
    opt = OPTIMIZERS[name]([p])
    opt.lr = np.float64(0.01)  # as a schedule written with NumPy might set it
    for _ in range(3):
        p.grad = np.full((3, 3), 0.5, dtype=np.float32)
        opt.step()
    assert p.dtype == np.float32 and p.grad.dtype == np.float32
    assert all(v.dtype == np.float32 for s in opt.state.values() for k, v in s.items() if k != "step")
    assert not np.array_equal(p.numpy(), np.ones((3, 3)))


def _model() -> nn.Module:
    from whitebox import manual_seed

    manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _train(model: nn.Module, opt: Optimizer, steps: int) -> None:
    x = Tensor(np.random.default_rng(5).standard_normal((8, 3)).astype(np.float32))
    for _ in range(steps):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_resumes_identically(name: str) -> None:
    straight = _model()
    _train(straight, OPTIMIZERS[name](straight.parameters()), 4)

    first = _model()
    opt = OPTIMIZERS[name](first.parameters())
    _train(first, opt, 2)
    model_state, opt_state = copy.deepcopy(first.state_dict()), opt.state_dict()
    opt.step()  # the snapshot must not see later updates
    resumed = _model()
    resumed.load_state_dict(model_state)
    opt2 = OPTIMIZERS[name](resumed.parameters())
    opt2.lr = 123.0  # restored from the state dict
    opt2.load_state_dict(opt_state)
    _train(resumed, opt2, 2)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_rejects_mismatches() -> None:
    model = _model()
    adamw = AdamW(model.parameters())
    _train(model, adamw, 1)
    with pytest.raises(ValueError, match="AdamW"):
        Lion(model.parameters()).load_state_dict(adamw.state_dict())
    with pytest.raises(ValueError, match="shape"):
        AdamW(reversed(model.parameters())).load_state_dict(adamw.state_dict())
    with pytest.raises(ValueError, match="more than once"):
        SGD([model[0].weight, model[0].weight], lr=0.1)


def test_params_without_grad_are_skipped() -> None:
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = AdamW([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.numpy(), [1.0, 1.0])
    assert set(opt.state) == {0} and opt.state[0]["step"] == 1
    opt.zero_grad()
    assert a.grad is None


# ---- clipping and schedules -----------------------------------------------------


def test_clip_grad_norm() -> None:
    a, b, c = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])  # norm 13; c has no grad
    assert clip_grad_norm_([a, b, c], max_norm=20.0) == pytest.approx(13.0)
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    assert clip_grad_norm_([a, b, c], max_norm=6.5) == pytest.approx(13.0)
    np.testing.assert_allclose(a.grad, [1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [6.0], rtol=1e-6)
    assert math.sqrt(float(a.grad @ a.grad + b.grad @ b.grad)) == pytest.approx(6.5, rel=1e-6)
    assert c.grad is None
    f32 = nn.Parameter(np.zeros(3, dtype=np.float32))
    f32.grad = np.full(3, 10.0, dtype=np.float32)
    clip_grad_norm_([f32], 1.0)
    assert f32.grad.dtype == np.float32


def test_warmup_cosine_values() -> None:
    sched = functools.partial(warmup_cosine, total_steps=110, warmup_steps=10, base_lr=1e-3, min_lr=1e-5)
    assert sched(0) == 0.0
    assert sched(5) == pytest.approx(5e-4)
    assert sched(10) == pytest.approx(1e-3)
    assert sched(60) == pytest.approx((1e-3 + 1e-5) / 2)
    assert sched(110) == pytest.approx(1e-5)
    assert sched(500) == pytest.approx(1e-5)
    lrs = [sched(t) for t in range(10, 111)]
    assert (np.diff(lrs) <= 0).all()
    assert warmup_cosine(3, 10, 0, 0.1) < 0.1 and warmup_cosine(0, 10, 0, 0.1) == 0.1


def test_lr_scheduler_sets_optimizer_lr() -> None:
    opt = SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched = LRScheduler(opt, functools.partial(warmup_cosine, total_steps=4, warmup_steps=2, base_lr=0.5))
    seen = [opt.lr]
    for _ in range(4):
        sched.step()
        seen.append(opt.lr)
    np.testing.assert_allclose(seen, [0.0, 0.25, 0.5, 0.25, 0.0], atol=1e-12)
    other = LRScheduler(SGD([nn.Parameter(np.zeros(1))], lr=1.0), functools.partial(constant, base_lr=0.3))
    assert other.optimizer.lr == 0.3
    other.load_state_dict(sched.state_dict())
    assert other.t == 4 and other.optimizer.lr == 0.3
