"""Checkers for the exercises of tutorials 05-08 (the models); ``exercises.check`` runs them.

Each checker builds a tiny model or input (a few tokens, a few features) with a fixed
seed and compares the answer with what the library's module computes on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from checking import Exercise, WrongAnswerError, close, mixture, rng

import whitebox
import whitebox.functional as F
from whitebox import measure, rate
from whitebox.crate import MSSA, CRATEBlock, Patchify, causal_mask, create, record
from whitebox.data.masking import IGNORE_INDEX, mask_tokens
from whitebox.tensor import Tensor, no_grad


def _tokens(x: np.ndarray) -> Tensor:
    return Tensor(np.asarray(x, dtype=np.float32)[None])


# 05 · Building CRATE


def _check_mssa_weights(fn: Callable[[np.ndarray, float, float], tuple[Any, Any]]) -> None:
    Z, U = mixture(20, N=10, K=2, p=4)
    K, d, p = U.shape
    eps, kappa = 0.8, 3.0
    qkv, out = (np.asarray(w, dtype=np.float32) for w in fn(U, kappa, p / (len(Z) * eps**2)))
    if qkv.shape != (K * p, d) or out.shape != (d, K * p):
        want = f"qkv.weight is {(K * p, d)}, to_out {(d, K * p)}"
        raise WrongAnswerError(f"shapes {qkv.shape}, {out.shape}; {want}")
    attn = MSSA(d, heads=K, dim_head=p)
    attn.qkv.weight.data, attn.to_out[0].weight.data = qkv, out
    attn.to_out[0].bias.data[...] = 0
    with no_grad():
        got = attn(_tokens(Z)).numpy()[0]
    close(got, kappa * rate.mssa(Z, U, eps).numpy(), "MSSA with your weights vs kappa rate.mssa", 1e-4, 1e-5)


def _check_block(fn: Callable[[CRATEBlock, np.ndarray], np.ndarray]) -> None:
    whitebox.manual_seed(1)
    gen = rng(21)
    block = CRATEBlock(8, heads=2, dim_head=4, eta=0.1, lam=0.1)
    for norm in (block[0].norm, block[1].norm):  # scales and shifts that are not 1 and 0
        norm.weight.data = (1 + 0.3 * gen.standard_normal(8)).astype(np.float32)
        norm.bias.data = (0.2 * gen.standard_normal(8)).astype(np.float32)
    Z = gen.standard_normal((6, 8))
    with no_grad():
        want = block(_tokens(Z)).numpy()[0]
    close(fn(block, Z), want, "the block's output Z^{l+1}", 1e-4, 1e-5)


def _check_patchify(fn: Callable[[np.ndarray, int], np.ndarray]) -> None:
    images = rng(22).standard_normal((2, 3, 8, 12))
    for P in (2, 4):
        want = Patchify((8, 12), (P, P), 3)(Tensor(images)).numpy()
        close(fn(images, P), want, f"patches of size {P}")


def _check_crate_params(fn: Callable[..., int]) -> None:
    for image, patch, C, classes, dim, depth, heads in [(28, 7, 1, 10, 96, 4, 4), (32, 8, 3, 100, 48, 2, 6)]:
        sizes = {"image_size": image, "patch_size": patch, "channels": C, "num_classes": classes}
        want = create("crate_mnist_tiny", **sizes, dim=dim, depth=depth, heads=heads).num_parameters()
        got = fn(image, patch, C, classes, dim, depth, heads)
        if got != want:
            raise WrongAnswerError(f"{sizes}, dim {dim}, depth {depth}: {got:,}, the model has {want:,}")


# 06 · Training and inspecting


def _check_smoothing_floor(fn: Callable[[int, float], float]) -> None:
    for C, s in [(10, 0.1), (3, 0.5), (100, 0.05)]:
        q = np.full(C, s / C)
        q[0] += 1 - s
        best = F.cross_entropy(Tensor(np.log(q)[None]), np.array([0]), label_smoothing=s).item()
        close(fn(C, s), best, f"the loss at the best logits, C = {C}, s = {s}", rtol=1e-6)


def _check_measured_compression(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> None:
    Z, U = mixture(23)
    for eps2 in (0.01, 0.5):
        close(fn(Z, U, eps2), measure.compression(Z, U, eps2), f"measured R^c, eps^2 = {eps2}", rtol=1e-6)


def _check_cls_attention(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> None:
    whitebox.manual_seed(2)
    model = create("crate_mnist_tiny", dim=32, depth=1, heads=4)
    with no_grad(), record(model) as rec:
        model(rng(24).standard_normal((1, 1, 28, 28)).astype(np.float32))
    x, attention = rec["mssa_in"][0][0], rec["attention"][0][0]
    W = model.transformer.layers[0].attn.qkv.weight.numpy()
    close(fn(x, W, 4), attention[:, 0, :], "the cls token's attention (heads, N)", 1e-4, 1e-6)


# 07 · CRATE for language


def _check_causal_head(fn: Callable[[np.ndarray], np.ndarray]) -> None:
    T, p = 7, 4
    w = rng(25).standard_normal((T, p))
    # one head as wide as the model has no output projection (the official rule), so with an identity
    # qkv the module computes one bare head
    attn = MSSA(p, heads=1, dim_head=p)
    attn.qkv.weight.data = np.eye(p, dtype=np.float32)
    with no_grad():
        want = attn(_tokens(w), mask=causal_mask(T)).numpy()[0]
    close(fn(w), want, "causal SSA of one head", 1e-5, 1e-6)


def _tiny_lm(seed: int) -> Any:
    whitebox.manual_seed(seed)
    return create("causal_crate_tiny", vocab_size=11)


def _check_next_token_loss(fn: Callable[[np.ndarray, np.ndarray], float]) -> None:
    ids = rng(26).integers(0, 11, (2, 9))
    with no_grad():
        logits = _tiny_lm(3)(ids)
    want = F.cross_entropy(logits[:, :-1], ids[:, 1:]).item()
    close(fn(logits.numpy().astype(np.float64), ids), want, "the next-token loss", rtol=1e-5)


def _check_lm_params(fn: Callable[..., int]) -> None:
    for V, block, dim, depth, heads in [(11, 32, 60, 2, 4), (300, 16, 24, 3, 2)]:
        model = create("causal_crate_tiny", vocab_size=V, block_size=block, dim=dim, depth=depth, heads=heads)
        got, want = fn(V, block, dim, depth, heads), model.num_parameters()
        if got != want:
            sizes = f"V {V}, block_size {block}, dim {dim}, depth {depth}"
            raise WrongAnswerError(f"{sizes}: {got:,}, the model has {want:,}")


def _check_greedy(fn: Callable[[Any, np.ndarray, int], np.ndarray]) -> None:
    model = _tiny_lm(4)
    prompt = rng(27).integers(0, 11, 30)  # block_size is 32: the context must be cropped after 2 steps
    close(fn(model, prompt, 6), model.generate(prompt, 6, top_k=1), "prompt + 6 greedy tokens")


# 08 · Masked completion


def _check_masking_fractions(fn: Callable[[float, int], dict[str, float]]) -> None:
    p, V = 0.3, 4
    ids = rng(28).integers(0, V, 1_000_000)
    inputs, targets = mask_tokens(ids, rng(29), V, V, p)
    chosen = targets != IGNORE_INDEX
    measured = {
        "chosen": chosen.mean(),
        "mask": (inputs[chosen] == V).mean(),
        "random": ((inputs[chosen] != V) & (inputs[chosen] != ids[chosen])).mean(),
        "kept": (inputs[chosen] == ids[chosen]).mean(),
    }
    got = fn(p, V)
    if not isinstance(got, dict) or set(got) != set(measured):
        raise WrongAnswerError(f"return a dict with keys {sorted(measured)}")
    for key, value in measured.items():  # 300,000 chosen: a fraction is measured to about +-0.001
        close(got[key], value, f"{key!r} (p = {p}, V = {V}; measured on 10^6 tokens)", rtol=0, atol=0.004)


def _check_masked_grad(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    gen = rng(30)
    logits = gen.standard_normal((2, 6, 5))
    targets = np.where(gen.random((2, 6)) < 0.4, gen.integers(0, 5, (2, 6)), IGNORE_INDEX)
    targets[0, 0] = 3  # at least one chosen position
    x = Tensor(logits, requires_grad=True)
    F.cross_entropy(x, targets, ignore_index=IGNORE_INDEX).backward()
    close(fn(logits, targets), x.grad, "dL/dlogits")


def _check_corrupt(fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> None:
    ids, (V, mask_id, p) = rng(31).integers(0, 20, (4, 50)), (20, 20, 0.4)
    want = mask_tokens(ids, rng(32), mask_id, V, p)
    draws = rng(32)  # the draws mask_tokens makes, in its order
    chosen_u, kind_u = draws.random(ids.shape), draws.random(ids.shape)
    random_ids = draws.integers(0, V, ids.shape)
    got = fn(ids, chosen_u, kind_u, random_ids, p, mask_id)
    close(got[0], want[0], "inputs (the corrupted window)")
    close(got[1], want[1], "targets")


MODEL_EXERCISES: dict[str, Exercise] = {
    "05.1": Exercise(_check_mssa_weights, "mssa_weights"),
    "05.2": Exercise(_check_block, "crate_block"),
    "05.3": Exercise(_check_patchify, "patchify"),
    "05.4": Exercise(_check_crate_params, "crate_parameters"),
    "06.1": Exercise(_check_smoothing_floor, "smoothing_floor"),
    "06.2": Exercise(_check_measured_compression, "measured_compression"),
    "06.3": Exercise(_check_cls_attention, "cls_attention"),
    "07.1": Exercise(_check_causal_head, "causal_ssa_head"),
    "07.2": Exercise(_check_next_token_loss, "next_token_loss"),
    "07.3": Exercise(_check_lm_params, "lm_parameters"),
    "07.4": Exercise(_check_greedy, "greedy"),
    "08.1": Exercise(_check_masking_fractions, "masking_fractions"),
    "08.2": Exercise(_check_masked_grad, "masked_loss_grad"),
    "08.3": Exercise(_check_corrupt, "corrupt"),
}

__all__ = ["MODEL_EXERCISES"]
