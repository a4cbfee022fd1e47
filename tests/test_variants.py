"""CRATE-alpha and ToST wired into the one shape: the classifiers and causal language models built
from the generic stack, their presets, the training CLI, per-layer measurement and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whitebox.cli import main
from whitebox.crate import (
    ARCHITECTURES,
    MSSA,
    PRESETS,
    TSSA,
    CausalCRATEAlpha,
    CausalToST,
    CausalTSSA,
    CRATEAlpha,
    CRATEAlphaBlock,
    ToST,
    TransformerBlock,
    create,
    record,
)
from whitebox.crate.alpha import sparse_code
from whitebox.measure import layerwise_compression_sparsity
from whitebox.tensor import Tensor, no_grad
from whitebox.train.config import ConfigError
from whitebox.train.language import language_config

TINY = ["--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "2", "--heads", "2"]


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize(("name", "cls"), [("crate_alpha_mnist_tiny", CRATEAlpha), ("tost_mnist_tiny", ToST)])
def test_image_presets_build_the_classifier(name: str, cls: type) -> None:
    model = create(name)
    assert type(model) is cls and ARCHITECTURES[PRESETS[name]["arch"]] is cls
    assert model(_images()).shape == (3, 10)
    assert len(model.transformer.layers) == PRESETS[name]["depth"]


def test_crate_alpha_layers_keys_and_norms() -> None:
    model = CRATEAlpha(28, 7, 10, dim=16, depth=2, heads=2, channels=1, overcomplete_ratio=3)
    keys = model.state_dict()
    assert keys["transformer.layers.1.1.fn.D"].shape == (16, 48)
    assert keys["transformer.layers.1.1.fn.D1"].shape == (16, 48)
    assert "transformer.layers.0.0.fn.to_out.0.weight" in keys
    assert "transformer.layers.0.0.fn.to_out.0.bias" not in keys  # the official bias-free projection
    for block in model.transformer.layers:
        assert isinstance(block, CRATEAlphaBlock)
        assert block[0].norm.eps == block[1].norm.eps == 1e-6
    assert "to_out.0.bias" in MSSA(16, 2).state_dict()  # CRATE's MSSA keeps its bias
    assert "to_out.0.bias" not in MSSA(16, 2, out_bias=False).state_dict()


def test_tost_layers_are_standard_blocks_with_tssa() -> None:
    model = ToST(28, 7, 10, dim=16, depth=2, heads=2, channels=1)
    for block in model.transformer.layers:
        assert isinstance(block, TransformerBlock) and isinstance(block.attn, TSSA)
    keys = model.state_dict()
    assert keys["transformer.layers.0.0.fn.temp"].shape == (2, 1)
    assert keys["transformer.layers.0.0.fn.qkv.weight"].shape == (16, 16)
    assert keys["transformer.layers.0.1.fn.net.0.weight"].shape == (64, 16)


@pytest.mark.parametrize("name", ["causal_crate_alpha_tiny", "causal_tost_tiny"])
def test_causal_language_models_do_not_see_the_future(name: str) -> None:
    """Changing the last tokens leaves the logits of the earlier positions unchanged."""
    model = create(name, vocab_size=20)
    assert isinstance(model, CausalCRATEAlpha | CausalToST) and model.causal
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, size=(2, 12))
    changed = ids.copy()
    changed[:, 8:] = (ids[:, 8:] + 1) % 20
    with no_grad():
        a, b = model(ids).numpy(), model(changed).numpy()
    assert a.shape == (2, 12, 20)
    np.testing.assert_allclose(a[:, :8], b[:, :8], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 8:], b[:, 8:])


def test_causal_tost_uses_causal_tssa_and_checks_dim_head() -> None:
    model = CausalToST(vocab_size=10, block_size=8, dim=16, depth=1, heads=2)
    assert isinstance(model.transformer.layers[0].attn, CausalTSSA)
    with pytest.raises(ValueError, match="dim_head must be None or dim // heads = 8"):
        CausalToST(vocab_size=10, block_size=8, dim=16, depth=1, heads=2, dim_head=4)
    with pytest.raises(ValueError, match="overcomplete_ratio"):
        CRATEAlpha(28, 7, 10, dim=16, depth=1, heads=2, channels=1, overcomplete_ratio=0)


def test_language_configs_take_the_new_models() -> None:
    for model in ("crate-alpha", "tost"):
        config = language_config("lm", model, "tiny")
        sizes = PRESETS[f"causal_{model.replace('-', '_')}_tiny"]
        assert (config.dim, config.heads, config.depth) == (sizes["dim"], sizes["heads"], sizes["depth"])
    with pytest.raises(ConfigError, match="no model 'tost' for task 'mlm'"):
        language_config("mlm", "tost", "tiny")


def test_measure_reads_the_sparse_code_of_crate_alpha() -> None:
    """CRATE-alpha's sparsity is that of A2 = sparse_code(LN2(Z^{l+1/2})), recomputed here by hand."""
    model = create("crate_alpha_mnist_tiny", depth=2)
    x = _images(4)
    rows = layerwise_compression_sparsity(model, x)
    assert [r["block"] for r in rows] == ["crate-alpha", "crate-alpha"]
    with no_grad(), record(model) as rec:
        model(Tensor(x))
    for i, block in enumerate(model.transformer.layers):
        code = sparse_code(Tensor(rec["ista_in"][i]), block.ista.D, block.ista.eta, block.ista.lam).numpy()
        np.testing.assert_array_equal(rec["code"][i], code)
        assert rows[i]["sparsity"] == pytest.approx(np.count_nonzero(code) / code.size)
        assert 0 < rows[i]["sparsity"] < 1
        assert rec["ista_out"][i].shape == (4, 17, 96)  # the layer's output, residual included


def test_measure_tost_against_its_own_projection() -> None:
    model = create("causal_tost_tiny", vocab_size=30)
    ids = np.random.default_rng(2).integers(0, 30, size=(3, 16))
    rows = layerwise_compression_sparsity(model, ids)
    assert [r["block"] for r in rows] == ["tost", "tost"]
    assert all(len(r["compression_per_head"]) == 2 and r["compression"] > 0 for r in rows)
    with no_grad(), record(model) as rec:
        model(ids)
    assert rec["attention"][0].shape == (3, 2, 16)  # memberships Pi, not an N x N map


def test_cli_trains_measures_and_draws_crate_alpha_and_tost(tmp_path: Path) -> None:
    for model, kind in (("crate-alpha", "crate-alpha"), ("tost", "tost")):
        run = tmp_path / model
        argv = ["train", "--model", model, "--preset", "mnist_tiny", *TINY, "--epochs", "1", "--quiet"]
        assert main([*argv, "--out", str(run)]) == 0
        assert json.loads((run / "config.json").read_text())["model"] == model
        assert main(["measure", str(run), "--n", "8"]) == 0
        assert [r["block"] for r in json.loads((run / "measure.json").read_text())] == [kind, kind]
        assert main(["attention", str(run), "--n", "2", "--out", str(tmp_path / model)]) == 0
        assert list((tmp_path / model).glob("*.png"))


def test_cli_trains_the_new_language_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for model in ("crate-alpha", "tost"):
        run = tmp_path / model
        argv = ["train", "--task", "lm", "--model", model, "--preset", "tiny", "--steps", "2"]
        assert main([*argv, "--batch-size", "4", "--quiet", "--out", str(run)]) == 0
        capsys.readouterr()
        assert main(["sample", str(run), "--prompt", "def ", "--max-new-tokens", "3"]) == 0
        assert capsys.readouterr().out.startswith("def ")
    assert main(["train", "--task", "mlm", "--model", "tost", "--out", str(tmp_path / "x")]) == 2
