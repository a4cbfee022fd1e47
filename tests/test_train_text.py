"""The language tasks end to end: a tiny run, an interrupted run resumed bit-identically,
evaluate, sample, load_run and heldout_inputs (what the CLI calls)."""

from __future__ import annotations

import numpy as np
import pytest

from whitebox.crate.causal import CausalCRATE
from whitebox.crate.masked import MaskedCRATE
from whitebox.tokenizers import CharTokenizer
from whitebox.train import load_checkpoint, read_metrics
from whitebox.train import text as task

LM = {
    "task": "lm",
    "model": "crate",
    "preset": "tiny",
    "epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 4,
    "warmup": 2,
    "eval_windows": 4,
    "progress": False,
    "dropout": 0.1,  # so resuming must also restore the dropout stream
}


def test_lm_run_resume_evaluate_sample(tmp_path, monkeypatch):
    result = task.train(LM, tmp_path / "full")
    assert {p.name for p in (tmp_path / "full").iterdir()} >= {
        "checkpoint.npz",
        "config.json",
        "metrics.jsonl",
        "tokenizer.json",
    }
    assert result["params"] > 0 and np.isfinite(result["eval_loss"])

    # Interrupt the second run during epoch 2 (its evaluation raises), then resume it.
    real_score, calls = task.score, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(task, "score", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        task.train(LM, tmp_path / "cut")
    monkeypatch.setattr(task, "score", real_score)
    assert len(read_metrics(tmp_path / "cut")) == 1
    task.train(LM, tmp_path / "cut", resume=True)
    full, cut = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert full["step"] == cut["step"] == 6
    for name, value in full["model"].items():
        np.testing.assert_array_equal(cut["model"][name], value, err_msg=name)
    assert [r["train_loss"] for r in read_metrics(tmp_path / "cut")] == [
        r["train_loss"] for r in read_metrics(tmp_path / "full")
    ]

    scores = task.evaluate(tmp_path / "full")
    assert set(scores) >= {"loss", "ppl", "bpc"}
    assert np.isclose(scores["ppl"], np.exp(scores["loss"]))
    assert scores["bpc"] == pytest.approx(scores["loss"] / np.log(2))  # char tokens: one per character

    text = task.sample(tmp_path / "full", "The ", 20, 1.0, None, 3)
    assert text.startswith("The ") and len(text) == 24
    assert task.sample(tmp_path / "full", "The ", 20, 1.0, None, 3) == text

    model, tok, cfg = task.load_run(tmp_path / "full")
    assert isinstance(model, CausalCRATE) and isinstance(tok, CharTokenizer) and not model.training
    held = task.heldout_inputs(tmp_path / "full", 5)
    assert held.shape == (5, cfg["block_size"]) and held.max() < tok.vocab_size


def test_mlm_run_with_bpe(tmp_path):
    config = {**LM, "task": "mlm", "tokenizer": "bpe", "vocab_size": 300, "epochs": 1, "dropout": 0.0}
    task.train(config, tmp_path)
    scores = task.evaluate(tmp_path)
    assert 0 <= scores["acc"] <= 1 and "bpc" not in scores
    model, tok, _ = task.load_run(tmp_path)
    assert isinstance(model, MaskedCRATE) and tok.vocab_size == 300
    filled = task.sample(tmp_path, "The [MASK] of a [MASK].", 0, 1.0, None, 0)
    assert "[MASK]" not in filled and filled.startswith("The ")


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--task lm --model gpt"):
        task.train({**LM, "model": "bert"}, tmp_path)
    with pytest.raises(ValueError, match="preset"):
        task.train({**LM, "preset": "huge"}, tmp_path)
    with pytest.raises(ValueError, match="valid names: pydoc"):
        task.train({**LM, "data": "wikitext"}, tmp_path)


def test_steps_override_epochs():
    cfg = task.resolve_config({"steps": 250, "steps_per_epoch": 100})
    assert cfg["epochs"] == 3 and cfg["steps_per_epoch"] == 84
