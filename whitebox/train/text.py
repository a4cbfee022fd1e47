"""Language tasks for the CLI (``--task lm`` and ``--task mlm``), on the shared loop ``fit``.

* ``lm``: next-token prediction with ``CausalCRATE`` (``--model crate``) or its twin ``GPT``
  (``--model gpt``); loss = mean over all positions of -log p(ids_{t+1} | ids_{<=t}).
* ``mlm``: masked-token prediction with ``MaskedCRATE`` (``--model crate``) or its twin ``BERT``
  (``--model bert``); loss = mean over the chosen positions (``mask_tokens``) only.

A run directory holds what ``fit`` writes (``checkpoint.npz``, ``metrics.jsonl``,
``config.json``, the config with every size resolved) plus ``tokenizer.json``, so
``load_run`` rebuilds model and tokenizer from the directory alone.

The corpus text is split by characters: the last ``val_fraction`` (10%) is validation.
The char tokenizer's alphabet is that of the whole corpus (so the validation text
encodes); BPE is trained on the training text only. An "epoch" is ``steps_per_epoch``
batches of random windows (``get_batch``; for mlm then ``mask_tokens``) drawn from a
generator seeded by (seed, epoch), so a resumed run draws exactly the batches it would
have drawn. ``resume`` continues a run with its saved config and tokenizer.

Evaluation metrics, over the validation windows (``windows``):

    loss = mean NLL per predicted token (nats),   ppl = exp(loss),
    bpc  = (sum of NLL) / (characters those tokens spell) / ln 2   (lm only),
    acc  = fraction of masked positions whose argmax is the true token (mlm only).

For ``mlm`` the validation windows are corrupted with a fixed generator (``EVAL_SEED``),
so every model is scored on the same masks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.crate.causal import GPT, CausalCRATE, CausalLM, TokenTransformer
from whitebox.crate.masked import BERT, IGNORE_INDEX, MaskedCRATE, fill_mask, mask_tokens
from whitebox.data.text import get_batch, load_corpus, split, windows
from whitebox.nn import Module
from whitebox.optim import AdamW, Lion
from whitebox.tensor import Tensor, no_grad
from whitebox.tokenizers import MASK, Tokenizer, load_tokenizer, train_tokenizer
from whitebox.train.loop import CONFIG, fit, load_checkpoint, load_config

TOKENIZER = "tokenizer.json"
EVAL_SEED = 1234

# Per preset: context length, depth, and (dim, heads) of CRATE and of its twin. A CRATE block
# has 3 dim^2 + O(dim) weights (qkv, to_out, D), a GPT/BERT block 12 dim^2 + O(dim) (qkv,
# out, two MLP layers of width 4 dim), so the twin gets half the width for the same count;
# both keep 32 (16 for tiny) features per head.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"block_size": 32, "depth": 2, "crate": (60, 4), "twin": (32, 2)},
    "small": {"block_size": 64, "depth": 4, "crate": (128, 4), "twin": (64, 2)},
    "base": {"block_size": 128, "depth": 6, "crate": (256, 8), "twin": (128, 4)},
}

DEFAULTS: dict[str, Any] = {
    "task": "lm",
    "model": "crate",
    "data": "pydoc",
    "tokenizer": "char",
    "vocab_size": 512,  # BPE only: 256 bytes + merges (+ [MASK])
    "epochs": 5,
    "steps": None,  # when set, overrides epochs: about this many steps in all
    "steps_per_epoch": 100,
    "batch_size": 32,
    "lr": None,  # 1e-3 for AdamW, 3e-4 for Lion
    "min_lr": 0.0,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "warmup": 50,
    "clip_norm": 1.0,
    "seed": 0,
    "device": "cpu",
    "preset": "small",
    "block_size": None,
    "dim": None,
    "depth": None,
    "heads": None,
    "dim_head": None,
    "dropout": 0.0,
    "eta": 0.1,
    "lam": 0.1,
    "mask_prob": 0.15,
    "val_fraction": 0.1,
    "eval_windows": 64,  # validation windows scored after each epoch (``evaluate`` uses all)
    "progress": True,
}

MODELS = {
    ("lm", "crate"): CausalCRATE,
    ("lm", "gpt"): GPT,
    ("mlm", "crate"): MaskedCRATE,
    ("mlm", "bert"): BERT,
}


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS overridden by the non-None entries of ``config``, with every size filled in."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    if (cfg["task"], cfg["model"]) not in MODELS:
        valid = ", ".join(f"--task {t} --model {m}" for t, m in MODELS)
        raise ValueError(f"no model {cfg['model']!r} for task {cfg['task']!r}; valid: {valid}")
    if cfg["preset"] not in PRESETS:
        raise ValueError(f"unknown preset {cfg['preset']!r}; valid: {', '.join(PRESETS)}")
    preset = PRESETS[cfg["preset"]]
    dim, heads = preset["crate" if cfg["model"] == "crate" else "twin"]
    for key, value in (("block_size", preset["block_size"]), ("depth", preset["depth"]), ("dim", dim)):
        cfg[key] = cfg[key] or value
    cfg["heads"] = cfg["heads"] or heads
    cfg["lr"] = cfg["lr"] or {"adamw": 1e-3, "lion": 3e-4}.get(cfg["optimizer"], 1e-3)
    if cfg["steps"]:
        cfg["epochs"] = math.ceil(cfg["steps"] / cfg["steps_per_epoch"])
        cfg["steps_per_epoch"] = math.ceil(cfg["steps"] / cfg["epochs"])
    return cfg


def build_model(cfg: dict[str, Any], vocab_size: int) -> TokenTransformer:
    """The model of ``cfg`` (task, model and sizes resolved) for a vocabulary of ``vocab_size``."""
    cls = MODELS[(cfg["task"], cfg["model"])]
    sizes = {k: cfg[k] for k in ("block_size", "dim", "depth", "heads", "dim_head", "dropout")}
    if cls in (CausalCRATE, MaskedCRATE):
        sizes.update(eta=cfg["eta"], lam=cfg["lam"])
    return cls(vocab_size, **sizes)


def _make_optimizer(cfg: dict[str, Any], model: Module) -> AdamW | Lion:
    if cfg["optimizer"] == "adamw":
        return AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "lion":
        return Lion(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; valid: adamw, lion")


def _texts(cfg: dict[str, Any]) -> tuple[str, str, str]:
    """(whole corpus, training text, validation text)."""
    text = load_corpus(cfg["data"])
    train_text, val_text = split(text, cfg["val_fraction"])
    return text, train_text, val_text


def _tokenizer(cfg: dict[str, Any], text: str, train_text: str) -> Tokenizer:
    specials = (MASK,) if cfg["task"] == "mlm" else ()
    source = text if cfg["tokenizer"] == "char" else train_text
    return train_tokenizer(cfg["tokenizer"], source, cfg["vocab_size"], specials)


def _mlm_batch(
    x: np.ndarray, rng: np.random.Generator, cfg: dict[str, Any], tok: Tokenizer
) -> tuple[np.ndarray, np.ndarray]:
    return mask_tokens(x, rng, tok.mask_id, tok.n_regular, cfg["mask_prob"])


def _loss(task: str, model: Module, batch: tuple[np.ndarray, np.ndarray]) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of the batch's targets (``IGNORE_INDEX`` positions count for nothing)."""
    inputs, targets = batch
    logits = model(inputs)
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    metrics: dict[str, float] = {"n": float(len(inputs))}
    if task == "mlm":
        chosen = targets != IGNORE_INDEX
        pred = backend.to_numpy(logits.data).argmax(axis=-1)
        metrics["acc"] = float((pred[chosen] == targets[chosen]).mean()) if chosen.any() else 0.0
    return loss, metrics


@no_grad()
def score(
    model: Module, tok: Tokenizer, cfg: dict[str, Any], val_ids: np.ndarray, max_windows: int | None = None
) -> dict[str, float]:
    """The module docstring's evaluation metrics over (the first ``max_windows``) validation windows."""
    x, y = windows(val_ids, cfg["block_size"])
    x, y = x[:max_windows], y[:max_windows]
    if cfg["task"] == "mlm":
        x, y = _mlm_batch(x, np.random.default_rng(EVAL_SEED), cfg, tok)
    was_training = model.training
    model.eval()
    nll, correct = 0.0, 0
    for start in range(0, len(x), 64):
        logits = model(x[start : start + 64])
        targets = y[start : start + 64]
        nll += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
        pred = backend.to_numpy(logits.data).argmax(axis=-1)
        correct += int((pred == targets).sum())
    model.train(was_training)
    n = max(int((y != IGNORE_INDEX).sum()), 1)
    out = {"loss": nll / n, "ppl": math.exp(min(nll / n, 50.0))}
    if cfg["task"] == "lm":
        chars = sum(len(tok.decode(row)) for row in y)
        out["bpc"] = nll / chars / math.log(2)
    else:
        out["acc"] = correct / n
    return out


def train(config: dict[str, Any], run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train the model ``config`` describes into ``run_dir``; returns params, history and final scores.

    With ``resume`` and a checkpoint in ``run_dir``, the saved config and tokenizer are used and
    training continues after the last completed epoch (bit-identical to an uninterrupted run).
    """
    run_dir = Path(run_dir)
    resuming = resume and (run_dir / CONFIG).exists() and (run_dir / TOKENIZER).exists()
    cfg = resolve_config(load_config(run_dir) if resuming else config)
    text, train_text, val_text = _texts(cfg)
    if resuming:
        tok = load_tokenizer(run_dir / TOKENIZER)
    else:
        tok = _tokenizer(cfg, text, train_text)
        run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(run_dir / TOKENIZER)
    cfg["vocab"] = tok.vocab_size
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)

    backend.manual_seed(cfg["seed"])
    model = build_model(cfg, tok.vocab_size).to(cfg["device"])
    cfg["params"] = model.num_parameters()
    optimizer = _make_optimizer(cfg, model)

    def batches(epoch: int):
        rng = np.random.default_rng([cfg["seed"], epoch])
        for _ in range(cfg["steps_per_epoch"]):
            x, y = get_batch(train_ids, cfg["block_size"], cfg["batch_size"], rng)
            yield _mlm_batch(x, rng, cfg, tok) if cfg["task"] == "mlm" else (x, y)

    history = fit(
        model,
        optimizer,
        batches,
        lambda m, b: _loss(cfg["task"], m, b),
        epochs=cfg["epochs"],
        run_dir=run_dir,
        config=cfg,
        base_lr=cfg["lr"],
        min_lr=cfg["min_lr"],
        warmup_steps=cfg["warmup"],
        clip_norm=cfg["clip_norm"],
        seed=cfg["seed"],
        steps_per_epoch=cfg["steps_per_epoch"],
        evaluate=lambda m: score(m, tok, cfg, val_ids, cfg["eval_windows"]),
        resume=resuming,
        progress=cfg["progress"],
    )
    return {"run_dir": str(run_dir), "params": cfg["params"], "history": history, **history[-1]}


def _validation_ids(run_dir: Path) -> np.ndarray:
    """The run's validation split, encoded with the run's tokenizer."""
    _, _, val_text = _texts(load_config(run_dir))
    return load_tokenizer(run_dir / TOKENIZER).encode(val_text)


def load_run(run_dir: Path) -> tuple[TokenTransformer, Tokenizer, dict[str, Any]]:
    """(model with the last checkpoint's weights, in eval mode; tokenizer; config) of a run."""
    run_dir = Path(run_dir)
    tok = load_tokenizer(run_dir / TOKENIZER)
    state = load_checkpoint(run_dir)
    cfg = state["config"]
    backend.manual_seed(cfg["seed"])
    model = build_model(cfg, tok.vocab_size)
    model.load_state_dict(state["model"])
    model.to(cfg["device"]).eval()
    return model, tok, cfg


def evaluate(run_dir: Path) -> dict[str, float]:
    """Scores of a run's model on the whole validation split (module docstring)."""
    model, tok, cfg = load_run(Path(run_dir))
    return {"params": model.num_parameters(), **score(model, tok, cfg, _validation_ids(Path(run_dir)))}


def sample(  # noqa: PLR0917 (the CLI's signature)
    run_dir: Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int
) -> str:
    """lm: the prompt and ``max_new_tokens`` sampled tokens after it (``CausalLM.generate``).

    mlm: the prompt with each "[MASK]" filled by its most likely token (``fill_mask``).
    """
    model, tok, _ = load_run(Path(run_dir))
    if not isinstance(model, CausalLM):
        return fill_mask(model, tok, prompt)["text"]
    ids = tok.encode(prompt or "\n")
    return tok.decode(model.generate(ids, max_new_tokens, temperature, top_k, seed))


def heldout_inputs(run_dir: Path, n: int) -> np.ndarray:
    """The first ``n`` validation windows of the run, token ids (n, block_size), for measurements."""
    block_size = load_config(Path(run_dir))["block_size"]
    return windows(_validation_ids(Path(run_dir)), block_size)[0][:n]
