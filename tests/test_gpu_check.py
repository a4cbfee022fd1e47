"""benchmarks/gpu_check.py: without a GPU it says so, writes its two files and exits 0; its
GPU path (training comparison, report, summary) runs on the CuPy double."""

from __future__ import annotations

import json
from pathlib import Path

import fake_cupy
import pytest

from whitebox import backend


def test_gpu_check_without_a_gpu_skips_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], load_benchmark
) -> None:
    gpu_check = load_benchmark("gpu_check")
    monkeypatch.setattr(backend, "cuda_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "gpu-check skipped: no usable GPU" in said
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report == {"skipped": "no usable GPU: CuPy is not installed or sees no CUDA device"}
    assert (tmp_path / "out" / "gpu_check.txt").read_text().startswith("gpu-check skipped")


def test_gpu_check_report_on_the_fake_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], load_benchmark
) -> None:
    """The subprocess steps are stubbed; the CuPy-vs-NumPy training runs, tiny, on the double."""
    gpu_check = load_benchmark("gpu_check")
    fake_cupy.install(monkeypatch)
    tiny = {"image_size": 8, "patch_size": 4, "num_classes": 3, "dim": 8, "depth": 1, "heads": 2}
    real_compare = gpu_check.compare_training
    monkeypatch.setattr(gpu_check, "compare_training", lambda: real_compare(steps=3, cfg=tiny))
    monkeypatch.setattr(gpu_check, "gpu_missing", lambda: None)
    monkeypatch.setattr(gpu_check, "device_name", lambda: "fake GPU")
    monkeypatch.setattr(gpu_check, "cuda_tests", lambda: {"rc": 0, "tail": "3 passed in 1.0s\n"})
    step = {"median_ms": {"whitebox": 12.0, "pytorch": 10.0}, "ratio_time": 1.2, "peak_mb": {"whitebox": 1.0}}
    monkeypatch.setattr(gpu_check, "train_step_bench", lambda model, out: {"rc": 0, "result": step})
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["training"]["agree"] and len(report["training"]["losses_cuda"]) == 3
    said = capsys.readouterr().out
    assert "cuda tests: ok (3 passed" in said and "ratio 1.20x" in said and "agree" in said
