"""The language tasks end to end: a tiny run, an interrupted run resumed bit-identically,
evaluate, sample, load_run and heldout_inputs (what the CLI calls)."""

from __future__ import annotations

import numpy as np
import pytest

from whitebox.crate import CausalCRATE, MaskedCRATE
from whitebox.data.tokenizers import CharTokenizer
from whitebox.train import ConfigError, LMConfig, load_checkpoint, read_config, read_metrics, train
from whitebox.train import language as task

LM = {
    "epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 4,
    "warmup_steps": 2,
    "eval_windows": 4,
    "dropout": 0.1,  # so resuming must also restore the dropout stream
}


def lm_config(**changes) -> LMConfig:
    return task.language_config("lm", "crate", "tiny", **{**LM, **changes})


def test_lm_run_resume_evaluate_sample(tmp_path, monkeypatch):
    result = train(lm_config(), tmp_path / "full", progress=False)
    assert {p.name for p in (tmp_path / "full").iterdir()} >= {
        "checkpoint.npz",
        "config.json",
        "metrics.jsonl",
        "tokenizer.json",
    }
    assert result["params"] > 0 and np.isfinite(result["eval_loss"])

    config = read_config(tmp_path / "full")
    assert config == lm_config()  # the run's results are not written into its config
    # Interrupt the second run during epoch 2 (its evaluation raises), then resume it.
    real_score, calls = task.LanguageModelling.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(task.LanguageModelling, "evaluate", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        train(lm_config(), tmp_path / "cut", progress=False)
    monkeypatch.setattr(task.LanguageModelling, "evaluate", real_score)
    assert len(read_metrics(tmp_path / "cut")) == 1
    train(read_config(tmp_path / "cut"), tmp_path / "cut", resume=True, progress=False)
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
    held = task.LanguageModelling(cfg, tmp_path / "full").heldout_inputs(5)
    assert held.shape == (5, cfg.block_size) and held.max() < tok.vocab_size


def test_mlm_run_with_bpe(tmp_path):
    changes = {"tokenizer": "bpe", "vocab_size": 300, "epochs": 1, "dropout": 0.0}
    config = task.language_config("mlm", "crate", "tiny", **{**LM, **changes})
    train(config, tmp_path, progress=False)
    scores = task.evaluate(tmp_path)
    assert 0 <= scores["acc"] <= 1 and "bpc" not in scores
    model, tok, _ = task.load_run(tmp_path)
    assert isinstance(model, MaskedCRATE) and tok.vocab_size == 300
    filled = task.sample(tmp_path, "The [MASK] of a [MASK].", 0, 1.0, None, 0)
    assert "[MASK]" not in filled and filled.startswith("The ")


def test_bad_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="--task lm --model gpt"):
        task.language_config("lm", "bert", "tiny")
    with pytest.raises(ConfigError, match="preset"):
        task.language_config("lm", "crate", "huge")
    with pytest.raises(ConfigError, match="valid names: pydoc"):
        task.language_config("lm", "crate", "tiny", data="wikitext")
    with pytest.raises(ConfigError, match="mask_prob"):
        task.language_config("lm", "crate", "tiny", mask_prob=0.2)  # an mlm field
    with pytest.raises(ConfigError, match=r"mask_prob must be in \(0, 1\]"):
        task.language_config("mlm", "crate", "tiny", mask_prob=1.5)
    with pytest.raises(ConfigError, match="not divisible by 7 heads"):
        task.language_config("lm", "crate", "tiny", heads=7)


def test_steps_override_epochs_and_sizes_follow_the_preset():
    cfg = task.language_config(steps=250, steps_per_epoch=100)
    assert cfg.epochs == 3 and cfg.steps_per_epoch == 84
    twin = task.language_config("lm", "gpt", "base", optimizer="lion")
    assert (twin.dim, twin.heads, twin.depth, twin.block_size, twin.lr) == (128, 4, 6, 128, 3e-4)
