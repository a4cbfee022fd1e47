"""Module bookkeeping and the standard layers."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox
import whitebox.functional as F
from whitebox import nn
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.norm(self.fc(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.scale = nn.Parameter(np.ones(3))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks[1](x) * self.scale


def test_registration_and_dotted_names() -> None:
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "scale",
        "blocks.0.fc.weight",
        "blocks.0.fc.bias",
        "blocks.0.norm.weight",
        "blocks.0.norm.bias",
        "blocks.1.fc.weight",
        "blocks.1.fc.bias",
        "blocks.1.norm.weight",
        "blocks.1.norm.bias",
    ]
    assert net.num_parameters() == 3 + 2 * (4 * 3 + 3 + 3 + 3)
    assert [n for n, _ in net.named_modules()][:3] == ["", "blocks", "blocks.0"]
    net.blocks[0].fc = nn.ReLU()  # reassigning replaces the registration
    assert "blocks.0.fc.weight" not in dict(net.named_parameters())


def test_shared_parameter_once_in_parameters_twice_in_state_dict() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight

    m = Tied()
    assert len(m.parameters()) == 1
    state = m.state_dict()
    assert set(state) == {"a.weight", "b.weight"}
    assert state["a.weight"] is state["b.weight"]


def test_load_state_dict_strict_errors_name_every_key() -> None:
    src, dst = Block(), Block()
    state = dict(src.state_dict())
    del state["fc.bias"], state["norm.weight"]
    state["extra.weight"] = np.zeros(2)
    with pytest.raises(ValueError) as err:
        dst.load_state_dict(state)
    msg = str(err.value)
    for key in ("fc.bias", "norm.weight", "extra.weight"):
        assert key in msg
    assert "missing" in msg and "unexpected" in msg

    bad = dict(src.state_dict())
    bad["fc.weight"] = np.zeros((5, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"fc\.weight.*\(5, 4\)"):
        dst.load_state_dict(bad)

    dst.load_state_dict(state, strict=False)  # loads what is there, ignores the rest
    np.testing.assert_array_equal(dst.fc.weight.data, src.fc.weight.data)
    assert dst.fc.weight.data is not src.fc.weight.data


def test_state_dict_round_trip_copies() -> None:
    whitebox.manual_seed(1)
    a = Net()
    whitebox.manual_seed(2)
    b = Net()
    b.load_state_dict(a.state_dict())
    x = Tensor(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_train_eval_propagate_to_dropout() -> None:
    net = Net()
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.training for d in drops)
    x = Tensor(np.ones((200, 3), dtype=np.float32))
    assert (drops[0](x).numpy() == 0).any()
    net.eval()
    assert not any(m.training for m in net.modules())
    np.testing.assert_array_equal(drops[0](x).numpy(), x.numpy())
    net.train()
    assert all(m.training for m in net.modules())


def test_evaluating_sets_eval_and_restores_each_modules_mode() -> None:
    net = Net()
    net.blocks[1].eval()  # a mixed state: it must come back exactly, module by module
    before = {name: m.training for name, m in net.named_modules()}
    assert not all(before.values()) and any(before.values())
    with net.evaluating() as same:
        assert same is net
        assert not any(m.training for m in net.modules())
    assert {name: m.training for name, m in net.named_modules()} == before
    with pytest.raises(RuntimeError, match="inside"), net.evaluating():
        raise RuntimeError("inside")
    assert {name: m.training for name, m in net.named_modules()} == before


def test_to_dtype_casts_float_parameters_and_buffers() -> None:
    net = Net()
    net.register_buffer("counts", Tensor(np.arange(3)))
    net.register_buffer("mask", Tensor(np.ones(3, dtype=np.float32)))
    net.to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.mask.dtype == np.float64
    assert net.counts.dtype.kind == "i"  # integer buffers keep their dtype
    assert set(net.state_dict()) >= {"counts", "mask"}


def test_forward_hooks_fire_and_remove() -> None:
    lin = nn.Linear(2, 2)
    seen = []
    handle = lin.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out)))
    x = Tensor(np.ones((1, 2), dtype=np.float32))
    out = lin(x)
    assert len(seen) == 1 and seen[0][0] is lin and seen[0][1] is x and seen[0][2] is out
    handle.remove()
    lin(x)
    assert len(seen) == 1


def test_forgetting_super_init_is_a_clear_error() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"super\(\)\.__init__\(\)"):
        Broken()


# ---- layers: forward vs NumPy, gradients vs finite differences ----------------


def _layer_fn(layer: nn.Module, names: list[str]):
    """fn(x, *params): the layer's forward with the given values in place of its parameters.

    gradcheck passes the real parameters for the autograd pass and perturbed
    copies for the finite differences; both go through the module's own forward.
    """

    def fn(x: Tensor, *values: Tensor) -> Tensor:
        params = [getattr(layer, n) for n in names]
        saved = [p.data for p in params]
        for p, v in zip(params, values, strict=True):
            p.data = v.data
        try:
            return layer(x)
        finally:
            for p, s in zip(params, saved, strict=True):
                p.data = s

    return fn


def _x(*shape: int) -> Tensor:
    return Tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)


def test_linear_forward_and_gradcheck() -> None:
    lin = nn.Linear(4, 3).to(dtype=np.float64)
    x = _x(2, 5, 4)
    expected = x.numpy() @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(lin(x).numpy(), expected, rtol=1e-12)
    gradcheck(_layer_fn(lin, ["weight", "bias"]), x, lin.weight, lin.bias)
    with pytest.raises(ValueError, match="features"):
        lin(_x(2, 5))


def test_layernorm_forward_and_gradcheck() -> None:
    ln = nn.LayerNorm(5).to(dtype=np.float64)
    rng = np.random.default_rng(1)
    ln.weight.data = rng.standard_normal(5)
    ln.bias.data = rng.standard_normal(5)
    x = _x(3, 5)
    xn = x.numpy()
    expected = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + ln.eps)
    expected = expected * ln.weight.numpy() + ln.bias.numpy()
    np.testing.assert_allclose(ln(x).numpy(), expected, rtol=1e-10, atol=1e-12)
    gradcheck(_layer_fn(ln, ["weight", "bias"]), x, ln.weight, ln.bias)


def test_embedding_forward_and_gradcheck() -> None:
    emb = nn.Embedding(6, 3).to(dtype=np.float64)
    ids = np.array([[0, 2, 2], [5, 0, 1]])  # repeated ids accumulate gradient
    np.testing.assert_array_equal(emb(ids).numpy(), emb.weight.numpy()[ids])
    fn = _layer_fn(emb, ["weight"])
    gradcheck(lambda w: fn(ids, w), emb.weight)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        emb(np.array([6]))


def test_sequential_of_layers_matches_functional() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2), nn.Tanh())
    x = Tensor(np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32))
    h = F.gelu(F.linear(x, model[0].weight, model[0].bias))
    expected = F.tanh(F.linear(h, model[2].weight, model[2].bias))
    np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-6)
    assert len(model) == 4 and model(x).dtype == np.float32
