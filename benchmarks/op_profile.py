"""Per-op time profile of whitebox training steps, through the op registry (``whitebox.ops``).

Times are CPU seconds of the process (``time.process_time``, all threads), which a loaded
shared machine distorts far less than wall time; the step's wall time is printed beside.

Every public op of ``whitebox.ops`` is wrapped, wherever a whitebox module holds a
reference to it (the attention modules' ``rule`` included), by a timer that records its
forward time (exclusive: time spent in ops it calls is charged to those) and, on the tensor
it returns, wraps the backward closure so the VJP's time is charged to the same op. The
optimizer update and the autograd engine's own work (the backward pass minus the VJPs) get
rows of their own; the rest of the Python around the ops is "other": the step's CPU time
minus all rows.

Wall time is split too: ``whitebox.host_threads.for_blocks`` is wrapped wherever a module holds
it, and the wall time of each call that really split its rows over threads (it returns one
result per block) is charged to the block function; the step's wall time outside those calls
ran on one thread (the main one).

Used by ``python benchmarks/train_step.py --profile STEPS``.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class OpTimes:
    """Accumulated seconds per op name: forward (exclusive) and backward, and call counts."""

    def __init__(self) -> None:
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._child = [0.0]  # a stack: time spent in nested ops, per open forward call
        self.block_wall: dict[str, float] = defaultdict(float)  # wall seconds of split for_blocks calls
        self.block_calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        from whitebox.tensor import Tensor

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._child.append(0.0)
            tic = time.process_time()
            try:
                out = fn(*args, **kwargs)
            finally:
                took = time.process_time() - tic
                nested = self._child.pop()
                self._child[-1] += took
            self.forward[name] += took - nested
            self.calls[name] += 1
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, Tensor) and t._backward is not None:
                    t._backward = self._timed_backward(name, t._backward)
            return out

        timed.__wrapped__ = fn
        return timed

    def _timed_backward(self, name: str, backward: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def timed(g: Any) -> Any:
            tic = time.process_time()
            out = backward(g)
            self.backward[name] += time.process_time() - tic
            return out

        return timed

    def wrap_blocks(self, for_blocks: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        """``host_threads.for_blocks``, timing (wall) the calls that split into several blocks."""

        def timed(fn: Callable[[slice], Any], *args: Any, **kwargs: Any) -> list[Any]:
            tic = time.perf_counter()
            out = for_blocks(fn, *args, **kwargs)
            if len(out) > 1:
                name = fn.__qualname__.replace("<locals>.", "").replace(".<lambda>", "")
                self.block_wall[name] += time.perf_counter() - tic
                self.block_calls[name] += 1
            return out

        timed.__wrapped__ = for_blocks
        return timed


# Fused ops defined outside whitebox.ops (module, name), and methods timed as a whole.
EXTRA_OPS = (("whitebox.crate.ista", "ista"),)
METHODS = (("whitebox.optim.optimizer", "Optimizer", "step"), ("whitebox.tensor", "Tensor", "backward"))
# Attention ops that modules hold as a class attribute (``rule = staticmethod(op)``).
RULES = (("whitebox.crate.mssa", "MSSA"), ("whitebox.crate.attention", "Attention"))


@contextmanager
def profiled_ops() -> Iterator[OpTimes]:
    """Wrap every op of ``whitebox.ops`` (and EXTRA_OPS) in every loaded whitebox module, and
    the METHODS (the optimizer update, the whole backward pass); restore them all after."""
    import importlib

    import whitebox.ops
    from whitebox import host_threads

    times = OpTimes()
    originals = {name: getattr(whitebox.ops, name) for name in whitebox.ops.__all__}
    originals.update({name: getattr(importlib.import_module(mod), name) for mod, name in EXTRA_OPS})
    by_id = {id(fn): (name, times.wrap(name, fn)) for name, fn in originals.items()}
    originals["for_blocks"] = host_threads.for_blocks
    by_id[id(host_threads.for_blocks)] = ("for_blocks", times.wrap_blocks(host_threads.for_blocks))
    patched = []
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("whitebox") or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if id(value) in by_id and value is originals[by_id[id(value)][0]]:
                setattr(mod, attr, by_id[id(value)][1])
                patched.append((mod, attr, value))
    for mod_name, cls_name, meth in METHODS:
        cls = getattr(importlib.import_module(mod_name), cls_name)
        patched.append((cls, meth, cls.__dict__[meth]))
        setattr(cls, meth, times.wrap(f"{cls_name}.{meth}", cls.__dict__[meth]))
    for mod_name, cls_name in RULES:
        cls = getattr(importlib.import_module(mod_name), cls_name)
        op = cls.__dict__["rule"].__func__
        patched.append((cls, "rule", cls.__dict__["rule"]))
        cls.rule = staticmethod(times.wrap(op.__name__, op))
    try:
        yield times
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)


def profile_steps(step: Callable[[], float], steps: int, warmup: int = 2) -> dict[str, Any]:
    """Run ``warmup`` untimed steps, then ``steps`` profiled ones; per-step milliseconds per op
    (CPU) and per split block function (wall)."""
    from whitebox import host_threads

    for _ in range(warmup):
        step()
    with profiled_ops() as times:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows = {
        name: {
            "calls": times.calls[name] / steps,
            "forward_ms": 1e3 * times.forward[name] / steps,
            "backward_ms": 1e3 * times.backward.get(name, 0.0) / steps,
        }
        for name in times.calls
    }
    # The backward pass includes every op's VJP: keep only the engine's own part.
    engine = rows.pop("Tensor.backward")
    engine["forward_ms"] -= sum(r["backward_ms"] for r in rows.values())
    rows["autograd engine"] = engine
    ops_ms = sum(r["forward_ms"] + r["backward_ms"] for r in rows.values())
    blocks = {
        name: {"calls": times.block_calls[name] / steps, "wall_ms": 1e3 * seconds / steps}
        for name, seconds in times.block_wall.items()
    }
    return {
        "step_ms": 1e3 * wall / steps,
        "cpu_ms": 1e3 * cpu / steps,
        "ops": rows,
        "other_ms": 1e3 * cpu / steps - ops_ms,
        "threads": host_threads.num_threads(),
        "blocks": blocks,
        "one_thread_ms": 1e3 * wall / steps - sum(b["wall_ms"] for b in blocks.values()),
    }


def print_profile(prof: dict[str, Any], batch: int, top: int = 15) -> None:
    """The ``top`` ops by forward + backward CPU time, with the step's wall and CPU time."""
    step = prof["cpu_ms"]
    print(f"whitebox step, batch {batch}: {step:.1f} ms CPU (all threads), {prof['step_ms']:.1f} ms wall")
    print(f"{'op (CPU ms)':16} {'calls':>6} {'fwd':>8} {'bwd':>8} {'total':>8} {'share':>6}")
    ranked = sorted(prof["ops"].items(), key=lambda kv: -(kv[1]["forward_ms"] + kv[1]["backward_ms"]))
    for name, r in ranked[:top]:
        total = r["forward_ms"] + r["backward_ms"]
        cols = f"{r['calls']:>6.0f} {r['forward_ms']:>8.2f} {r['backward_ms']:>8.2f} {total:>8.2f}"
        print(f"{name:16} {cols} {100 * total / step:>5.1f}%")
    other = prof["other_ms"]
    print(f"{'other':16} {'':>6} {'':>8} {'':>8} {other:>8.2f} {100 * other / step:>5.1f}%")
    print("autograd engine: backward pass minus the ops' VJPs (graph walk, gradient accumulation);")
    print("other: the step's remaining CPU time (modules' Python, zero_grad, loss.item)")
    in_blocks = prof["step_ms"] - prof["one_thread_ms"]
    print(
        f"\nwall {prof['step_ms']:.1f} ms a step: {in_blocks:.1f} ms in whitebox's thread blocks "
        f"({prof['threads']} threads), {prof['one_thread_ms']:.1f} ms on one thread"
    )
    if prof["blocks"]:
        print(f"{'blocks (wall ms)':34} {'calls':>6} {'wall':>8}")
        for name, b in sorted(prof["blocks"].items(), key=lambda kv: -kv[1]["wall_ms"])[:top]:
            print(f"{name:34} {b['calls']:>6.0f} {b['wall_ms']:>8.2f}")
