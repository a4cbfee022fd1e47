"""``python -m whitebox segment`` on a tiny DINO run on scenes-mnist, through the CLI: the teacher's
backbone is scored by default, the student's with ``--backbone student``, each equal to
``whitebox.segment`` called on that network; ``--backbone`` on a classifier run is an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whitebox import segment
from whitebox.cli import main
from whitebox.data import DataLoader, load_dataset
from whitebox.train.classify import evenly_spaced
from whitebox.train.dino import SelfDistillation
from whitebox.train.task import open_run

TINY = ["--patch-size", "6", "--dim", "16", "--depth", "2", "--heads", "2", "--quiet"]
DINO = ["--task", "dino", "--local-crops", "0", "--out-dim", "32", "--momentum", "0.5"]


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of 16 steps (batches of 500) of DINO on a tiny CRATE on scenes-mnist."""
    run = tmp_path_factory.mktemp("runs") / "dino_scenes"
    argv = ["train", *DINO, "--data", "scenes-mnist", *TINY, "--epochs", "1", "--batch-size", "500"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


def library_rows(network, n: int) -> tuple[list[dict], dict]:
    scenes = evenly_spaced(load_dataset("scenes-mnist", "test"), n)
    images, _ = next(iter(DataLoader(scenes, n, shuffle=False)))
    return segment.layer_scores(network, images, scenes.masks), segment.references(scenes.masks, (6, 6))


def flat(rows: list[dict]) -> list[float]:
    return [v for r in rows for v in (*r["heads"], r["average"], r["best"], r["maskcut"])]


def test_segment_scores_the_teacher_then_the_student(
    dino_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    task, model = open_run(dino_run)
    assert isinstance(task, SelfDistillation)
    teacher, student = model.teacher.backbone.model, model.student.backbone.model
    # momentum 0.5 over 16 steps: the two networks differ, so the two scores can tell them apart
    assert not np.allclose(teacher.cls_token.data, student.cls_token.data)

    assert main(["segment", str(dino_run), "--n", "30"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((dino_run / "segment.json").read_text())
    assert "DINO teacher CRATE" in saved["title"] and "floor (centred box" in out
    assert (dino_run / "segment_attention_layer2.png").stat().st_size > 0
    rows, refs = library_rows(teacher, 30)
    assert flat(saved["rows"]) == pytest.approx(flat(rows)) and saved["refs"] == pytest.approx(refs)
    assert f"layer 2/2: mean IoU {rows[1]['average']:.3f}" in out

    argv = ["segment", str(dino_run), "--n", "30", "--backbone", "student", "--method", "maskcut"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    saved = json.loads((tmp_path / "segment.json").read_text())
    assert "DINO student CRATE" in saved["title"]
    rows, _ = library_rows(student, 30)
    assert flat(saved["rows"]) == pytest.approx(flat(rows))
    assert saved["iou"] == pytest.approx(rows[1]["maskcut"])


def test_backbone_is_for_dino_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    digits = tmp_path / "digits"
    argv = ["train", "--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "1", "--heads", "2"]
    assert main([*argv, "--epochs", "1", "--batch-size", "500", "--quiet", "--out", str(digits)]) == 0
    capsys.readouterr()
    assert main(["segment", str(digits), "--backbone", "teacher"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a DINO run" in err
    assert main(["segment", str(digits), "--backbone", "ema"]) == 2
    assert "invalid choice: 'ema'" in capsys.readouterr().err
