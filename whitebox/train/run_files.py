"""The files of a training run, each written whole to a temporary file and renamed.

``config.json`` (the run's config), ``metrics.jsonl`` (one strict-JSON record per epoch) and
``checkpoint.npz`` (``whitebox.save``: weights, optimizer state, epoch, step, seed, config, the
history and whatever a task adds, such as a language run's tokenizer). The checkpoint holds the
history, so ``metrics.jsonl`` can always be rebuilt from it; weights that are not finite are never
saved. A damaged or foreign file raises ``RunError`` naming it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.nn import Module
from whitebox.serialization import atomic_write, load, save

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
EPOCH_FILE = "epoch_{:03d}.npz"


class RunError(ValueError):
    """A run that cannot be read or go on: a damaged or foreign checkpoint, a torn config."""


class DivergedError(RunError):
    """Training reached a non-finite loss or non-finite weights."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file renamed over it."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``run_dir/config.json`` (sorted keys, indented), atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def strict_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every non-finite float replaced by None (so that it is strict JSON)."""
    return {k: _finite_or_none(v) for k, v in record.items()}


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write ``run_dir/metrics.jsonl``, one strict-JSON line per record, atomically."""
    lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in history)
    write_text_atomic(Path(run_dir) / METRICS, lines)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, one per completed epoch (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines[:-1]] + [json.loads(line) for line in lines[-1:]]
    except json.JSONDecodeError as exc:
        if exc.doc != lines[-1]:
            raise RunError(f"{path}: a line is not JSON ({exc})") from None
        return [json.loads(line) for line in lines[:-1]]


def save_checkpoint(
    run_dir: Path,
    model: Module,
    optimizer: Any,
    *,
    epoch: int,
    step: int,
    seed: int,
    config: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    start_loss: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/checkpoint.npz`` (``whitebox.save`` writes a temporary file, then renames it).

    Raises ``DivergedError`` (and writes nothing) when a weight is not finite."""
    path = Path(run_dir) / CHECKPOINT
    weights = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    bad = [k for k, v in weights.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise DivergedError(
            f"training diverged in epoch {epoch + 1}: weights {', '.join(bad[:3])} are not finite "
            "(not saved); try a lower learning rate (--lr)"
        )
    state = {
        **(extra or {}),
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "seed": seed,
        "config": config,
        "history": json.dumps([strict_record(r) for r in history or []]),
        "start_loss": start_loss,
    }
    save(path, state)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.npz``: keys model, optimizer, epoch, step, seed, config (a dict),
    history (a list of records; read from ``metrics.jsonl`` for checkpoints without one), and any
    extra keys. A missing, damaged or foreign file raises ``RunError`` naming it."""
    try:
        state = load(Path(run_dir) / CHECKPOINT)
    except (ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    missing = {"model", "optimizer", "epoch", "step", "config"} - set(state)
    if missing:
        raise RunError(
            f"{Path(run_dir) / CHECKPOINT} is not a training checkpoint (no {', '.join(sorted(missing))})"
        )
    history = state.get("history")
    state["history"] = json.loads(history) if isinstance(history, str) else read_metrics(run_dir)
    return state


def load_weights(model: Module, weights: dict[str, Any], run_dir: Path) -> None:
    """``model.load_state_dict(weights)``; a checkpoint of another model raises ``RunError``."""
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) < 300 else detail[:300] + " ..."
        raise RunError(
            f"{Path(run_dir) / CHECKPOINT} does not fit the model of {Path(run_dir) / CONFIG} "
            f"(another architecture or task?): {detail}"
        ) from None


def save_epoch(run_dir: Path, model: Module, epoch: int) -> Path:
    """Write ``run_dir/epoch_{epoch:03d}.npz``: the model state after ``epoch`` epochs (0: at init)."""
    path = Path(run_dir) / EPOCH_FILE.format(epoch)
    save(path, {"model": {k: backend.to_numpy(v) for k, v in model.state_dict().items()}, "epoch": epoch})
    return path


def epoch_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The per-epoch weights a ``keep_epochs`` run kept: {epochs trained (0 = init): path}, sorted."""
    found = {}
    for path in Path(run_dir).glob("epoch_*.npz"):
        stem = path.stem.removeprefix("epoch_")
        if stem.isdigit():
            found[int(stem)] = path
    return dict(sorted(found.items()))


def load_epoch(path: Path) -> dict[str, Any]:
    """The model state kept in an ``epoch_NNN.npz`` file (``save_epoch``)."""
    return load(Path(path))["model"]
