"""benchmarks/op_profile.py: per-op CPU time, and the wall time of the work split over host threads."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox as wb
import whitebox.functional as F
from whitebox import host_threads
from whitebox.ops import fused


def layer_norm_step() -> float:
    x = wb.Tensor(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32), requires_grad=True)
    loss = F.layer_norm(x).sum()
    loss.backward()
    return loss.item()


@pytest.mark.parametrize("n", [1, 2])
def test_split_work_is_timed_per_block_function(threads, load_benchmark, n: int) -> None:
    op_profile = load_benchmark("op_profile")
    threads(n)
    prof = op_profile.profile_steps(layer_norm_step, steps=3, warmup=1)
    assert prof["threads"] == n
    assert prof["ops"]["layer_norm"]["calls"] == 1
    if n == 1:  # nothing splits: the whole step ran on one thread
        assert prof["blocks"] == {}
        assert prof["one_thread_ms"] == pytest.approx(prof["step_ms"])
    else:  # layer norm's forward pass and its backward's two passes, once a step each
        assert set(prof["blocks"]) == {
            "layer_norm.normalize",
            "layer_norm.backward.products",
            "layer_norm.backward.combine",
        }
        assert all(b["calls"] == 1 and b["wall_ms"] > 0 for b in prof["blocks"].values())
        in_blocks = sum(b["wall_ms"] for b in prof["blocks"].values())
        assert 0 < in_blocks < prof["step_ms"]
        assert prof["one_thread_ms"] == pytest.approx(prof["step_ms"] - in_blocks)


def test_the_profiler_puts_every_function_back(threads, load_benchmark) -> None:
    op_profile = load_benchmark("op_profile")
    threads(2)
    original = host_threads.for_blocks
    with op_profile.profiled_ops():
        assert fused.for_blocks is not original
    assert fused.for_blocks is original and host_threads.for_blocks is original
    assert F.layer_norm is fused.layer_norm


def test_print_profile_names_the_blocks(threads, load_benchmark, capsys: pytest.CaptureFixture[str]) -> None:
    op_profile = load_benchmark("op_profile")
    threads(2)
    op_profile.print_profile(op_profile.profile_steps(layer_norm_step, steps=1, warmup=0), batch=64)
    out = capsys.readouterr().out
    assert "in whitebox's thread blocks (2 threads)" in out
    assert "layer_norm.backward.combine" in out
