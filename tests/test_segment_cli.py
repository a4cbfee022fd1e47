"""``python -m whitebox segment`` on a tiny CRATE trained for a few steps on scenes-mnist: the table,
the figure and segment.json agree with ``whitebox.segment`` called directly; bad runs and
arguments are one-line errors (exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whitebox import backend, segment
from whitebox.cli import main
from whitebox.data import DataLoader, load_dataset
from whitebox.train.task import open_run

TINY = ["--patch-size", "6", "--dim", "16", "--depth", "2", "--heads", "2", "--no-augment", "--quiet"]


@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of 16 steps (batches of 500) of a tiny CRATE on scenes-mnist, through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "scenes"
    argv = ["train", "--data", "scenes-mnist", *TINY, "--epochs", "1", "--batch-size", "500"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


def test_heldout_subset_keeps_the_masks_of_its_images(scenes_run: Path):
    task, _ = open_run(scenes_run)
    test = load_dataset("scenes-mnist", "test")
    subset = task.heldout_subset(7)
    idx = [int(np.flatnonzero((test.images == im).all(axis=(1, 2, 3)))[0]) for im in subset.images]
    assert len(subset) == 7 and len(set(idx)) == 7
    np.testing.assert_array_equal(subset.masks, test.masks[idx])
    np.testing.assert_array_equal(subset.labels, test.labels[idx])


def test_segment_prints_and_saves_what_the_library_computes(
    scenes_run: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["segment", str(scenes_run), "--n", "40"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((scenes_run / "segment.json").read_text())
    assert (scenes_run / "segment_attention_layer2.png").stat().st_size > 0
    assert [r["layer"] for r in saved["rows"]] == [0, 1] and saved["layer"] == 1
    assert "floor (centred box" in out and "ceiling (best mask of whole patches)" in out
    assert f"layer 2/2: mean IoU {saved['iou']:.3f}" in out

    # the same numbers from the library, on the same held-out scenes
    task, model = open_run(scenes_run)
    scenes = task.heldout_subset(40)
    images, _ = next(iter(DataLoader(scenes, 40, shuffle=False)))
    for layer, row in enumerate(saved["rows"]):
        pred = segment.predict_masks(model, images, "attention", layer)
        np.testing.assert_allclose(row["average"], segment.iou(pred, scenes.masks).mean())
        cut = segment.predict_masks(model, images, "maskcut", layer)
        np.testing.assert_allclose(row["maskcut"], segment.iou(cut, scenes.masks).mean())
        assert len(row["heads"]) == 2 and row["best"] == max(row["heads"])
    assert saved["iou"] == saved["rows"][1]["average"]
    refs = segment.references(scenes.masks, (6, 6))
    assert saved["refs"] == pytest.approx(refs)
    assert 0 < refs["floor"] < refs["ceiling"] <= 1


def test_segment_maskcut_layer_and_out(scenes_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["segment", str(scenes_run), "--n", "20", "--method", "maskcut", "--layer", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "segment.json").read_text())
    assert (tmp_path / "segment_maskcut_layer1.png").stat().st_size > 0
    assert saved["method"] == "maskcut" and saved["iou"] == saved["rows"][0]["maskcut"]
    assert f"maskcut (normalized cut), layer 1/2: mean IoU {saved['iou']:.3f}" in out


def test_segment_errors(scenes_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    backend.manual_seed(0)
    assert main(["segment", str(scenes_run), "--layer", "3"]) == 2
    assert "layer 3 is out of range" in capsys.readouterr().err
    assert main(["segment", str(scenes_run), "--method", "cut"]) == 2
    assert "invalid choice: 'cut'" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    digits = tmp_path / "digits"
    argv = ["train", "--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "1", "--heads", "2"]
    assert main([*argv, "--epochs", "1", "--batch-size", "500", "--quiet", "--out", str(digits)]) == 0
    capsys.readouterr()
    assert main(["segment", str(digits)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on digits, which has no true masks" in err
