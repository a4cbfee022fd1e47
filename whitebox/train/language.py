"""Language tasks: next-token ("lm", ``LMConfig``) and masked-token ("mlm", ``MLMConfig``) prediction.

* ``lm``: ``CausalCRATE`` (model "crate"), its twin ``GPT`` (model "gpt"), or CRATE's successors
  ``CausalCRATEAlpha`` (model "crate-alpha") and ``CausalToST`` (model "tost");
  loss = mean over all positions of -log p(ids_{t+1} | ids_{<=t}).
* ``mlm``: ``MaskedCRATE`` (model "crate") or its twin ``BERT`` (model "bert");
  loss = mean over the positions ``mask_tokens`` chose only.

A run directory holds what ``fit`` writes plus ``tokenizer.json``, so a run is rebuilt from its
directory alone. The corpus text is split by characters: the last ``val_fraction`` is validation.
The char tokenizer's alphabet is that of the whole corpus (so the validation text encodes); BPE
is trained on the training text only. An "epoch" is ``steps_per_epoch`` batches of random windows
(``get_batch``; for mlm then ``mask_tokens``) drawn from a generator seeded by (seed, epoch), so a
resumed run draws exactly the batches it would have drawn.

``data`` is a built-in corpus name or your own text: a UTF-8 file or a folder of ``.txt`` files
(``whitebox.data.user_text``), split and tokenized by the same rules. Its encoded ids are cached
in the data cache, keyed by the source's SHA-256 and the tokenizer, and the run records the
source's SHA-256 in ``data.json`` (``whitebox.train.data_source``). Text too short for
``block_size`` stops a new run before anything is written.

Evaluation metrics, over the validation windows (``windows``):

    loss = mean NLL per predicted token (nats),   ppl = exp(loss),
    bpc  = (sum of NLL) / (characters those tokens spell) / ln 2   (lm only),
    acc  = fraction of masked positions whose argmax is the true token (mlm only).

For ``mlm`` the validation windows are corrupted with a fixed generator (``EVAL_SEED``), so every
model is scored on the same masks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.crate import ARCHITECTURES, PRESETS, fill_mask
from whitebox.data.masking import IGNORE_INDEX, mask_tokens
from whitebox.data.text import CORPORA, get_batch, load_corpus, split, windows
from whitebox.data.tokenizers import MASK, Tokenizer, load_tokenizer, train_tokenizer
from whitebox.data.tokenizers import from_dict as tokenizer_from_dict
from whitebox.data.user_text import Corpus, encode_corpus, read_corpus
from whitebox.distributed import Communicator
from whitebox.nn import Module
from whitebox.tensor import Tensor, no_grad
from whitebox.train import data_source
from whitebox.train.config import ConfigError, LMConfig, MLMConfig, config_class, validate
from whitebox.train.run_files import RunError, load_checkpoint, write_text_atomic
from whitebox.train.task import Task, open_run

TOKENIZER = "tokenizer.json"
EVAL_SEED = 1234

# The architecture (a key of whitebox.crate.ARCHITECTURES) of each task and model; the sizes
# come from the one preset table, whitebox.crate.PRESETS, as "<arch>_<preset>".
MODELS = {
    ("lm", "crate"): "causal_crate",
    ("lm", "gpt"): "gpt",
    ("lm", "crate-alpha"): "causal_crate_alpha",
    ("lm", "tost"): "causal_tost",
    ("mlm", "crate"): "masked_crate",
    ("mlm", "bert"): "bert",
}
SIZES = ("tiny", "small", "base")
#: The peak learning rate by optimizer, when none is given.
DEFAULT_LR = {"adamw": 1e-3, "lion": 3e-4}


def language_config(
    task: str = "lm", model: str = "crate", preset: str = "small", steps: int | None = None, **settings: Any
) -> LMConfig:
    """A complete, validated run config. ``settings`` are fields of the task's config (None:
    default); the sizes (block_size, dim, depth, heads) default to the ``preset``'s, the learning
    rate to ``DEFAULT_LR``. ``steps`` (about this many steps in all) replaces ``epochs``."""
    if (task, model) not in MODELS:
        valid = ", ".join(f"--task {t} --model {m}" for t, m in MODELS)
        raise ConfigError(f"no model {model!r} for task {task!r}; valid: {valid}")
    if preset not in SIZES:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(SIZES)}")
    settings = {k: v for k, v in settings.items() if v is not None}
    if "data" in settings:
        settings["data"] = data_source.resolve(settings["data"], CORPORA, "corpus")
        if not data_source.is_builtin(settings["data"], CORPORA):
            own_corpus(settings["data"])  # a bad file stops the run here
    sizes = PRESETS[f"{MODELS[(task, model)]}_{preset}"]
    resolved = {k: sizes[k] for k in ("block_size", "depth", "dim", "heads")}
    resolved["lr"] = DEFAULT_LR.get(settings.get("optimizer", "adamw"), 1e-3)
    resolved.update(settings)
    cls = config_class(task)
    if steps:
        per_epoch = resolved.get("steps_per_epoch", cls.steps_per_epoch)
        resolved["epochs"] = math.ceil(steps / per_epoch)
        resolved["steps_per_epoch"] = math.ceil(steps / resolved["epochs"])
    try:
        config = cls(model=model, preset=preset, **resolved)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"language_config: {exc}") from exc
    return validate(config)


def own_corpus(path: str) -> Corpus:
    """Your own text at ``path``; a bad file is a ConfigError (``whitebox.data.user_text``)."""
    try:
        return read_corpus(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_model(config: LMConfig, vocab_size: int) -> Module:
    """The model ``config`` describes, for a vocabulary of ``vocab_size`` tokens."""
    c = config
    sizes = {"block_size": c.block_size, "dim": c.dim, "depth": c.depth, "heads": c.heads}
    sizes.update(dim_head=c.dim_head, dropout=c.dropout)
    if c.model in ("crate", "crate-alpha"):
        sizes.update(eta=c.eta, lam=c.lam)
    return ARCHITECTURES[MODELS[(c.task, c.model)]](vocab_size, **sizes)


class LanguageModelling(Task):
    """The "lm" and "mlm" tasks (module docstring)."""

    config: LMConfig

    def __init__(self, config: LMConfig, run_dir: Path, comm: Communicator | None = None) -> None:
        super().__init__(config, run_dir, comm)
        self.comm.local_batch_size(config.batch_size)  # the ranks must divide the batch
        self.steps_per_epoch = config.steps_per_epoch
        self.eval_limit = config.eval_windows
        self._tokenizer: Tokenizer | None = None

    @cached_property
    def own_text(self) -> Corpus | None:
        """Your own text, or None for a built-in corpus."""
        if data_source.is_builtin(self.config.data, CORPORA):
            return None
        corpus = own_corpus(self.config.data)
        data_source.check_record(self.run_dir, self.config.data, corpus.sha256)
        return corpus

    @cached_property
    def _texts(self) -> tuple[str, str, str]:
        """(whole corpus, training text, validation text)."""
        text = load_corpus(self.config.data) if self.own_text is None else self.own_text.text
        return (text, *split(text, self.config.val_fraction))

    def _encode_own(self, check: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) ids of your own text, through the cache; ``check``: long enough."""
        assert self.own_text is not None
        c = self.config
        try:
            return encode_corpus(
                self.own_text, self.tokenizer, c.val_fraction, c.block_size if check else None
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @cached_property
    def _own_ids(self) -> tuple[np.ndarray, np.ndarray]:
        return self._encode_own()

    @property
    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer: ``tokenizer.json``, or the copy in the checkpoint when the file is
        missing (trained by ``prepare`` for a new run)."""
        if self._tokenizer is None:
            path = self.run_dir / TOKENIZER
            if path.exists():
                self._tokenizer = load_tokenizer(path)
            else:
                self._tokenizer = self._saved_tokenizer()
        return self._tokenizer

    def _saved_tokenizer(self) -> Tokenizer:
        saved = load_checkpoint(self.run_dir).get("tokenizer")
        if not isinstance(saved, str):
            raise RunError(
                f"{self.run_dir} has no {TOKENIZER} and its checkpoint carries no tokenizer: the model's "
                "vocabulary is unknown, so the run cannot be resumed or used (start a new --out)"
            )
        return tokenizer_from_dict(json.loads(saved))

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"tokenizer": json.dumps(self.tokenizer.to_dict(), ensure_ascii=False)}

    def prepare(self, resume: bool) -> None:
        path = self.run_dir / TOKENIZER
        if resume:  # the run's own tokenizer, restored from the checkpoint when the file is gone
            if not path.exists():
                write_text_atomic(path, json.dumps(self.tokenizer.to_dict(), ensure_ascii=False))
            return
        text, train_text, _ = self._texts
        specials = (MASK,) if isinstance(self.config, MLMConfig) else ()
        source = text if self.config.tokenizer == "char" else train_text
        self._tokenizer = train_tokenizer(self.config.tokenizer, source, self.config.vocab_size, specials)
        if self.own_text is not None:  # checked before anything is written
            self._own_ids = self._encode_own(check=True)
            data_source.write_record(self.run_dir, self.own_text.record())
        else:
            n = len(self.train_ids)
            if n <= self.config.block_size:
                raise ConfigError(
                    f"block_size {self.config.block_size} needs more than {self.config.block_size} training "
                    f"tokens; {self.config.data} has {n}: use a block_size in [1, {n - 1}]"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self._tokenizer.to_dict(), ensure_ascii=False))

    @cached_property
    def train_ids(self) -> np.ndarray:
        return self.tokenizer.encode(self._texts[1]) if self.own_text is None else self._own_ids[0]

    @cached_property
    def val_ids(self) -> np.ndarray:
        return self.tokenizer.encode(self._texts[2]) if self.own_text is None else self._own_ids[1]

    def build_model(self) -> Module:
        return build_model(self.config, self.tokenizer.vocab_size)

    def _corrupt(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        tok = self.tokenizer
        return mask_tokens(x, rng, tok.mask_id, tok.n_regular, self.config.mask_prob)  # type: ignore[attr-defined]

    def batches(self, epoch: int) -> Any:
        """This rank's rows of each global batch: every rank draws the whole batch (a few index
        arrays) and keeps every ``world_size``-th window, so any number of ranks sees the same data."""
        c, mine = self.config, slice(self.comm.rank, None, self.comm.world_size)
        rng = np.random.default_rng([c.seed, epoch])
        for _ in range(c.steps_per_epoch):
            x, y = get_batch(self.train_ids, c.block_size, c.batch_size, rng)
            x, y = self._corrupt(x, rng) if c.task == "mlm" else (x, y)
            yield x[mine], y[mine]

    def loss(self, model: Module, batch: tuple[np.ndarray, np.ndarray]) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the batch's targets (``IGNORE_INDEX`` positions count for nothing)."""
        inputs, targets = batch
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        metrics: dict[str, float] = {"n": float(len(inputs))}
        if self.config.task == "mlm":
            chosen = targets != IGNORE_INDEX
            pred = backend.to_numpy(logits.data).argmax(axis=-1)
            metrics["acc"] = float((pred[chosen] == targets[chosen]).mean()) if chosen.any() else 0.0
        return loss, metrics

    @no_grad()
    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        """The module docstring's metrics over (the first ``limit``) validation windows; each rank
        scores every ``world_size``-th window and the sums are added up over the ranks."""
        c, tok = self.config, self.tokenizer
        x, y = windows(self.val_ids, c.block_size)
        x, y = x[:limit], y[:limit]
        if c.task == "mlm":
            x, y = self._corrupt(x, np.random.default_rng(EVAL_SEED))
        x, y = x[self.comm.rank :: self.comm.world_size], y[self.comm.rank :: self.comm.world_size]
        nll, correct = 0.0, 0
        with model.evaluating():
            for start in range(0, len(x), 64):
                logits = model(x[start : start + 64])
                targets = y[start : start + 64]
                nll += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
                pred = backend.to_numpy(logits.data).argmax(axis=-1)
                correct += int((pred == targets).sum())
        chars = sum(len(tok.decode(row)) for row in y) if c.task == "lm" else 0
        n = int((y != IGNORE_INDEX).sum())
        nll, correct, n, chars = self.comm.allreduce_sum([nll, correct, n, chars])
        n = max(n, 1)
        out = {"loss": nll / n, "ppl": math.exp(min(nll / n, 50.0))}
        if c.task == "lm":
            out["bpc"] = nll / chars / math.log(2)
        else:
            out["acc"] = correct / n
        return out

    def heldout_inputs(self, n: int) -> np.ndarray:
        """The first ``n`` validation windows, token ids (n, block_size)."""
        return windows(self.val_ids, self.config.block_size)[0][:n]

    def describe(self, n: int) -> str:
        c = self.config
        return f"{c.model.upper()} ({c.preset}) {self.run_dir.name}, {n} held-out windows of {c.data}"


def load_run(run_dir: Path) -> tuple[Module, Tokenizer, LMConfig]:
    """(model with the last checkpoint's weights, in eval mode; tokenizer; config) of a run."""
    task, model = open_run(run_dir)
    if not isinstance(task, LanguageModelling):
        raise ConfigError(f"{run_dir} is a {task.config.task} run, not a language run")
    return model, task.tokenizer, task.config


def evaluate(run_dir: Path) -> dict[str, float]:
    """Scores of a run's model on the whole validation split (module docstring), and its size."""
    task, model = open_run(run_dir)
    return {"params": model.num_parameters(), **task.evaluate(model)}


def sample(  # noqa: PLR0917 (the CLI's signature)
    run_dir: Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int
) -> str:
    """The whole text ``sample_stream`` makes, at once."""
    return "".join(sample_stream(run_dir, prompt, max_new_tokens, temperature, top_k, seed))


def sample_stream(  # noqa: PLR0917 (the CLI's signature)
    run_dir: Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None, seed: int
) -> Iterator[str]:
    """The text of a sample, in pieces as it is made: for lm the prompt, then the text of each
    sampled token as it comes (the model's ``stream``, ``max_new_tokens`` tokens in all);
    for mlm the prompt with each "[MASK]" filled by its most likely token (``fill_mask``).

    A prompt the run's tokenizer cannot encode raises ``RunError``.
    """
    model, tok, config = load_run(run_dir)
    try:
        if config.task == "mlm":
            yield fill_mask(model, tok, prompt)["text"]
            return
        ids = tok.encode(prompt or "\n")
    except ValueError as exc:
        raise RunError(f"--prompt: {exc}") from None
    yield tok.decode(ids)
    new: list[int] = []
    shown = ""
    for token in model.stream(ids, max_new_tokens, temperature, top_k, seed):
        new.append(token)
        text = tok.decode(new)
        if not text.endswith("\ufffd"):  # a byte-level token may end inside a character
            yield text[len(shown) :]
            shown = text
    if tok.decode(new) != shown:
        yield tok.decode(new)[len(shown) :]
