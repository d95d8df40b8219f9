"""Factor Transfer: the factor distance against numpy, the frozen paraphraser and its pre-training stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import data, losses, models
from autokd.losses.factor import factor_distance, pool_to_common
from autokd.outputs import Outputs, Shapes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _np_factor_distance(fs, ft):
    a = fs.reshape(len(fs), -1)
    b = ft.reshape(len(ft), -1)
    a = a / np.sqrt((a**2).sum(1, keepdims=True))
    b = b / np.sqrt((b**2).sum(1, keepdims=True))
    return np.abs(a - b).mean()


def test_factor_distance_is_l1_between_l2_normalised_factors():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=(3, 4, 2, 2))
    got = factor_distance(torch.tensor(fs), torch.tensor(ft)).item()
    assert got == pytest.approx(_np_factor_distance(fs, ft), rel=1e-6)


def test_larger_factor_is_average_pooled_to_the_smaller():
    rng = np.random.default_rng(1)
    fs, ft = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 4, 4))
    pooled = ft.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    got = factor_distance(torch.tensor(fs), torch.tensor(ft)).item()
    assert got == pytest.approx(_np_factor_distance(fs, pooled), rel=1e-6)
    a, b = pool_to_common(torch.zeros(1, 1, 3, 5), torch.zeros(1, 1, 4, 2))
    assert a.shape[-2:] == b.shape[-2:] == (3, 2)


def test_loss_is_translator_vs_frozen_paraphraser_and_only_the_translator_trains():
    s_shapes = Shapes((1, 8, 8), 10, feats=((4, 4, 4), (8, 2, 2)), embedding=8)
    t_shapes = Shapes((1, 8, 8), 10, feats=((6, 4, 4), (12, 4, 4)), embedding=12)
    loss = losses.create("ft", student=s_shapes, teacher=t_shapes, rate=0.5)
    assert loss.paraphraser.factor_channels == 6
    assert all(not p.requires_grad for p in loss.paraphraser.parameters())
    assert {n.split(".")[0] for n, p in loss.named_parameters() if p.requires_grad} == {"translator"}
    fs = torch.randn(2, 8, 2, 2, requires_grad=True)
    ft = torch.randn(2, 12, 4, 4)
    value = loss(
        Outputs(torch.zeros(2, 10), feats=[torch.randn(2, 4, 4, 4), fs]),
        Outputs(torch.zeros(2, 10), feats=[torch.randn(2, 6, 4, 4), ft]),
        None,
    )
    with torch.no_grad():
        expected = _np_factor_distance(
            loss.translator(fs).double().numpy(),
            torch.nn.functional.adaptive_avg_pool2d(loss.paraphraser(ft), 2).double().numpy(),
        )
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert fs.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.paraphraser.parameters())


def test_pretrain_lowers_the_reconstruction_loss_then_freezes_the_paraphraser():
    bundle = data.create("digits", train_fraction=0.2)
    torch.manual_seed(0)
    teacher = models.create("cnn", num_classes=10, in_channels=1, width=8).eval().requires_grad_(False)
    student = models.create("cnn", num_classes=10, in_channels=1, width=2)
    shape = bundle.input_shape
    loss = losses.create(
        "ft", student=models.shapes(student, shape), teacher=models.shapes(teacher, shape), pretrain_epochs=2
    )
    loader = bundle.loader("train", 32, shuffle=True, seed=0)
    x, _, _ = next(iter(bundle.loader("train", 64, shuffle=False)))
    with torch.no_grad():
        f = teacher.forward_outputs(x).feats[-1]
        before = loss.reconstruction_loss(f).item()
    loss.pretrain(teacher_model=teacher, loader=loader, device=torch.device("cpu"), epochs=5)
    with torch.no_grad():
        after = loss.reconstruction_loss(f).item()
    assert len(loss.pretrain_history) == 2 and loss.pretrain_history[1] < loss.pretrain_history[0]
    assert after < 0.7 * before
    assert all(not p.requires_grad for p in loss.paraphraser.parameters())
    assert all(p.grad is None for p in teacher.parameters())
