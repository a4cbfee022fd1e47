"""Following the per-layer measurements over training: per-epoch weights, ``measure --over-epochs``,
the tied MSSA output projection and the half-step decomposition of a CRATE layer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from whitebox import backend, measure, rate
from whitebox.cli import main
from whitebox.crate import CRATE, intermediates
from whitebox.crate.mssa import MSSA
from whitebox.gradcheck import gradcheck
from whitebox.nn import Linear
from whitebox.optim import SGD
from whitebox.serialization import load
from whitebox.tensor import Tensor
from whitebox.train.loop import fit
from whitebox.train.run_files import epoch_checkpoints, load_epoch

TINY = ["--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "2", "--heads", "2"]


def _fit(run: Path, epochs: int, keep: bool, resume: bool = False) -> Linear:
    backend.manual_seed(0)
    model = Linear(3, 2)
    rng = np.random.default_rng(0)
    data = [(Tensor(rng.normal(size=(4, 3))), Tensor(rng.normal(size=(4, 2)))) for _ in range(3)]

    def loss_fn(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean(), {}

    fit(model, SGD(model.parameters(), lr=0.1), lambda e: data, loss_fn, epochs=epochs, run_dir=run,
        config={}, base_lr=0.1, progress=False, keep_epochs=keep, resume=resume)  # fmt: skip
    return model


def test_keep_epochs_writes_init_and_every_epoch(tmp_path: Path):
    backend.manual_seed(0)
    init = {k: np.array(v) for k, v in Linear(3, 2).state_dict().items()}  # what _fit starts from
    model = _fit(tmp_path / "run", 3, keep=True)
    kept = epoch_checkpoints(tmp_path / "run")
    assert list(kept) == [0, 1, 2, 3]
    for k, v in load_epoch(kept[0]).items():
        np.testing.assert_array_equal(v, init[k])
    last = load(tmp_path / "run" / "checkpoint.npz")["model"]
    for k, v in load_epoch(kept[3]).items():
        np.testing.assert_array_equal(v, last[k])
        np.testing.assert_array_equal(v, model.state_dict()[k])
    assert not np.array_equal(load_epoch(kept[1])["weight"], load_epoch(kept[2])["weight"])


def test_without_keep_epochs_nothing_extra_and_resume_continues_the_series(tmp_path: Path):
    _fit(tmp_path / "plain", 2, keep=False)
    assert epoch_checkpoints(tmp_path / "plain") == {}
    _fit(tmp_path / "run", 2, keep=True)
    first = load_epoch(epoch_checkpoints(tmp_path / "run")[0])
    _fit(tmp_path / "run", 4, keep=True, resume=True)
    kept = epoch_checkpoints(tmp_path / "run")
    assert list(kept) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(load_epoch(kept[0])["weight"], first["weight"])  # init not rewritten


def test_tied_mssa_is_the_derivations_mssa():
    """MSSA(x) = s (sqrt(p) / alpha) rate.mssa(x, U / p^{1/4}, eps), U_k = W_k^T (float64)."""
    backend.manual_seed(0)
    m = MSSA(8, 2, tied_out=True).to(dtype=np.float64)
    assert set(m.state_dict()) == {"qkv.weight", "step"} and m.to_out is None
    m.step.data[:] = 0.7
    x = np.random.default_rng(0).normal(size=(3, 5, 8))
    W = m.qkv.weight.numpy()
    U = W.reshape(2, 4, 8).transpose(0, 2, 1)
    eps, N, p = 0.3, 5, 4
    alpha = p / (N * eps**2)
    expected = 0.7 * math.sqrt(p) / alpha * rate.mssa(x, U / p**0.25, eps).numpy()
    np.testing.assert_allclose(m(Tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_tied_mssa_gradients():
    backend.manual_seed(1)
    m = MSSA(6, 2, tied_out=True).to(dtype=np.float64)
    x = Tensor(np.random.default_rng(1).normal(size=(2, 4, 6)), requires_grad=True)

    def f(x, W, s):
        m.qkv.weight, m.step = W, s
        return m(x)

    W = Tensor(m.qkv.weight.numpy(), requires_grad=True)
    s = Tensor(np.array([0.8]), requires_grad=True)
    gradcheck(f, x, W, s)


def test_crate_with_tied_out_has_no_output_projection():
    kw = {"image_size": 8, "patch_size": 4, "num_classes": 3, "dim": 8, "depth": 2, "heads": 2, "channels": 1}
    learned, tied = CRATE(**kw), CRATE(**kw, tied_out=True)
    assert learned.num_parameters() - tied.num_parameters() == 2 * (8 * 8 + 8 - 1)
    assert not any("to_out" in k for k in tied.state_dict())


def test_halfsteps_agree_with_the_layer_measurements():
    backend.manual_seed(0)
    model = CRATE(image_size=8, patch_size=4, num_classes=3, dim=8, depth=3, heads=2, channels=1, lam=2.0)
    x = np.random.default_rng(0).normal(size=(6, 1, 8, 8))
    rows = measure.layerwise_compression_sparsity(model.eval(), x)
    steps = measure.halfsteps(model, x, batch_size=4)
    _, rec = intermediates(model, x)
    bases = [measure.subspace_bases(b[0].fn) for b in model.transformer.layers]
    for i in range(1, 3):  # the tokens entering layer i are layer i-1's ISTA output
        assert steps[i]["rc_pre"] == pytest.approx(
            measure.compression(rec["ista_out"][i - 1], bases[i]).mean()
        )
    for r, h in zip(rows, steps, strict=True):
        assert h["rc_in"] == pytest.approx(r["compression"], rel=1e-9)
        assert h["sparsity"] == pytest.approx(r["sparsity"])
        # every entry is zeroed by the sign, by the threshold alone, or kept
        assert h["sign_zero"] + h["threshold_zero"] + h["sparsity"] == pytest.approx(1.0)
        assert h["eta_lam"] == pytest.approx(0.2) and h["threshold_zero"] > 0


def test_measure_over_epochs_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    argv = ["train", "--preset", "mnist_tiny", *TINY, "--epochs", "2", "--batch-size", "256"]
    assert main([*argv, "--keep-epochs", "--quiet", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["keep_epochs"] is True
    assert main(["measure", str(run), "--over-epochs", "--n", "20"]) == 0
    out = capsys.readouterr().out
    assert "init, held-out:" in out and "epoch 2, train:" in out
    curves = json.loads((run / "measure_epochs.json").read_text())
    assert list(curves) == ["0", "1", "2"]
    assert all(len(curves[e][s]) == 2 for e in curves for s in ("held-out", "train"))
    assert curves["0"]["held-out"] != curves["2"]["held-out"]
    assert (run / "measure_epochs.png").stat().st_size > 0


def test_measure_over_epochs_needs_kept_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    argv = ["train", "--preset", "mnist_tiny", *TINY, "--epochs", "1", "--batch-size", "256"]
    assert main([*argv, "--quiet", "--out", str(run)]) == 0
    assert main(["measure", str(run), "--over-epochs"]) == 2
    assert "--keep-epochs" in capsys.readouterr().err
