"""Token-statistics self-attention (TSSA), fused with one hand-written backward.

Per head k (p features) with w_k (N, p) the projected tokens, TSSA replaces the
N x N softmax attention by second moments of the tokens, one number per feature:

    bidirectional:  u_kij = w_kij / ||w_k[:, j]||,        s_ki = sum_j u_kij^2,
    causal:         c_kij = sum_{t<=i} w_ktj^2,           s_ki = sum_j w_kij^2 / c_kij + p b_ki,
    memberships:    Pi_:i = softmax_k(tau_k s_ki)                          (over the heads),
    bidirectional:  m_kj  = sum_i Pi_ki w_kij^2 / (sum_i Pi_ki + 1e-8),
    causal:         m_kij = sum_{t<=i} Pi_kt w_ktj^2 / (sum_{t<=i} Pi_kt + 1e-8),
    output:         out_kij = -w_kij Pi_ki / (1 + m_kj)     (m_kij in the causal form).

Every line is a sum over tokens or a point-wise map: O(N p) per head, no N x N array.
Norms are clamped below at 1e-12 (squared sums at 1e-12 in the causal form).

VJPs for g = dL/d(out), with a = 1 / (1 + m), q_ki = Pi_ki / M_k (M the Pi sum + 1e-8):

    dw  = -g Pi a,   dPi = -sum_j g w a,   dm = a^2 sum_i g w Pi     (dm = a^2 g w Pi, causal),
    bidirectional:  dw += 2 q w dm,   dPi += (dq - sum_i q dq) / M,   dq_ki = sum_j w_kij^2 dm_kj,
    causal:         with dS = dm / M and dM = -sum_j dm m / M, and R(.) the reversed cumulative sum,
                    dw += 2 Pi w R(dS),   dPi += sum_j w^2 R(dS) + R(dM),
    softmax:        dl = Pi (dPi - sum_k Pi dPi),   dtau_k = sum dl_k s_k,   ds = tau dl,
    bidirectional:  dw += (2 u / ||w_j||) (ds - sum_i u_ij^2 ds_i),
    causal:         dw += 2 w ds / c - 2 w R(w^2 ds / c^2),   db_k = p sum_batch ds_k.
"""

from __future__ import annotations

from typing import Any

from whitebox import backend
from whitebox.ops.attention import _merge_heads, _split_heads
from whitebox.tensor import Tensor, make

EPS_NORM = 1e-12
EPS_MASS = 1e-8


def _rev_cumsum(x: Any, axis: int) -> Any:
    """sum_{t >= i} x_t along ``axis``: the VJP of a cumulative sum."""
    xp = backend.array_module(x)
    return xp.flip(xp.cumsum(xp.flip(x, axis), axis), axis)


def _memberships(logits: Any) -> Any:
    """softmax over the heads (axis 1 of (B, H, N))."""
    xp = backend.array_module(logits)
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _softmax_heads_vjp(dPi: Any, Pi: Any) -> Any:
    return Pi * (dPi - (dPi * Pi).sum(axis=1, keepdims=True))


def _check(w: Tensor, temp: Tensor, heads: int, bias: Tensor | None, causal: bool) -> None:
    if w.ndim != 3:
        raise ValueError(f"tssa: w must have shape (B, N, heads*p), got {w.shape}")
    if heads < 1 or w.shape[-1] % heads:
        raise ValueError(f"tssa: the feature axis of w {w.shape} is not divisible by {heads} heads")
    if temp.size != heads:
        raise ValueError(f"tssa: temp must hold one temperature per head ({heads}), got shape {temp.shape}")
    if bias is None:
        return
    if not causal:
        raise ValueError("tssa: a position bias is only defined for the causal form (causal=True)")
    if (
        bias.ndim not in {2, 3}
        or bias.shape[0] != heads
        or bias.shape[1] < w.shape[1]
        or bias.size != heads * bias.shape[1]
    ):
        raise ValueError(
            f"tssa: bias must have shape (heads, L) or (heads, L, 1) with heads={heads} and "
            f"L >= N={w.shape[1]}, got {bias.shape}"
        )


def tssa(
    w: Tensor, temp: Tensor, heads: int, *, causal: bool = False, bias: Tensor | None = None
) -> tuple[Tensor, Any]:
    """Token-statistics self-attention of ``w`` (B, N, H*p), the heads side by side.

    ``temp`` holds the H temperatures tau_k (any shape of H elements, e.g. (H, 1));
    ``causal`` uses cumulative statistics (token i sees tokens t <= i only); ``bias``
    (causal only) is the position bias b of shape (H, L) or (H, L, 1), L >= N, of which
    the first N positions are used. Returns ``(out, Pi)``: out (B, N, H*p) and the
    memberships Pi (B, H, N) as a backend array.
    """
    _check(w, temp, heads, bias, causal)
    xp = w.xp
    W = xp.ascontiguousarray(_split_heads(w.data, heads))  # (B, H, N, p)
    n, p = W.shape[-2:]
    tau = temp.data.reshape(heads, 1)
    W2 = W * W
    if causal:
        csum = xp.cumsum(W2, axis=-2)
        C = xp.maximum(csum, EPS_NORM)
        R = W2 / C
        s = R.sum(axis=-1)
        if bias is not None:
            s = s + p * bias.data.reshape(heads, -1)[:, :n]
    else:
        norm = xp.sqrt(W2.sum(axis=-2, keepdims=True))  # (B, H, 1, p)
        c = xp.maximum(norm, EPS_NORM)
        U = W / c
        U2 = U * U
        s = U2.sum(axis=-1)
    Pi = _memberships(tau * s)  # (B, H, N)
    if causal:
        M = xp.cumsum(Pi, axis=-1) + EPS_MASS
        m = xp.cumsum(Pi[..., None] * W2, axis=-2) / M[..., None]  # (B, H, N, p)
    else:
        M = Pi.sum(axis=-1, keepdims=True) + EPS_MASS
        q = Pi / M
        m = q[..., None, :] @ W2  # (B, H, 1, p)
    a = 1 / (1 + m)
    out = _merge_heads(-(W * Pi[..., None] * a))

    def backward(g: Any) -> tuple[Any, Any, Any] | tuple[Any, Any]:
        G = xp.ascontiguousarray(_split_heads(g, heads))
        GW = G * W
        dW = -(G * Pi[..., None] * a)
        dPi = -(GW * a).sum(axis=-1)
        if causal:
            dm = a * a * GW * Pi[..., None]
            rS = _rev_cumsum(dm / M[..., None], -2)
            rM = _rev_cumsum(-(dm * m).sum(axis=-1) / M, -1)
            dW += 2 * Pi[..., None] * W * rS
            dPi += (W2 * rS).sum(axis=-1) + rM
        else:
            dm = a * a * (Pi[..., None, :] @ GW)  # (B, H, 1, p)
            dW += 2 * q[..., None] * W * dm
            dq = (W2 * dm).sum(axis=-1)
            dPi += (dq - (dq * q).sum(axis=-1, keepdims=True)) / M
        dl = _softmax_heads_vjp(dPi, Pi)
        dtau = (dl * s).sum(axis=(0, 2)).reshape(temp.shape)
        ds = (dl * tau)[..., None]
        if causal:
            dW += 2 * W * ds / C
            dW -= 2 * W * _rev_cumsum(R * ds / C * (csum > EPS_NORM), -2)
        else:
            dW += (2 * U / c) * (ds - (norm > EPS_NORM) * (U2 * ds).sum(axis=-2, keepdims=True))
        grads = (_merge_heads(dW), dtau)
        if bias is None:
            return grads
        db = xp.zeros((heads, bias.size // heads), dtype=dW.dtype)
        db[:, :n] = p * ds[..., 0].sum(axis=0)
        return (*grads, db.reshape(bias.shape))

    parents = (w, temp) if bias is None else (w, temp, bias)
    return make(out, parents, backward), Pi
