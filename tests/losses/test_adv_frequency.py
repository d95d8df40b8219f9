"""FreeKD: the Haar DWT against explicit 2×2 block formulas, prompt masks and masked band distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import data, losses, models
from autokd.losses.frequency import HaarDWT, dice_overlap
from autokd.outputs import Outputs, Shapes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _np_haar(x):
    """One Haar level by the block formulas, zero-padding odd sizes at the bottom/right."""
    h, w = x.shape[-2:]
    x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, h % 2), (0, w % 2)])
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) / 2
    highs = np.stack([(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2], axis=2)
    return ll, highs


@pytest.mark.parametrize("size", [(4, 6), (3, 5)])
def test_haar_dwt_matches_the_block_formulas(size):
    x = np.random.default_rng(0).normal(size=(2, 3, *size))
    ll, highs = HaarDWT()(torch.tensor(x))
    ll_ref, highs_ref = _np_haar(x)
    np.testing.assert_allclose(ll.numpy(), ll_ref, atol=1e-12)
    np.testing.assert_allclose(highs.numpy(), highs_ref, atol=1e-12)


def test_haar_is_orthonormal_and_inverts_exactly_over_levels():
    dwt = HaarDWT()
    x = torch.randn(2, 3, 8, 4, dtype=torch.float64)
    ll, highs = dwt(x)
    assert torch.allclose(ll.pow(2).sum() + highs.pow(2).sum(), x.pow(2).sum())  # Parseval
    torch.testing.assert_close(dwt.inverse(ll, highs), x)
    odd = torch.randn(1, 2, 7, 5, dtype=torch.float64)
    ll2, hs = dwt.decompose(odd, 2)
    assert ll2.shape[-2:] == (2, 2) and [h.shape[-2:] for h in hs] == [(4, 3), (2, 2)]
    torch.testing.assert_close(dwt.reconstruct(ll2, hs, (7, 5)), odd)


def test_dice_overlap_between_prompt_masks():
    m = np.random.default_rng(1).random((2, 3, 5))
    ref = []
    for b in range(2):
        for i in range(3):
            for j in range(3):
                if i != j:
                    ref.append(
                        2 * (m[b, i] * m[b, j]).sum() / ((m[b, i] ** 2).sum() + (m[b, j] ** 2).sum() + 2e-12)
                    )
    assert dice_overlap(torch.tensor(m)).item() == pytest.approx(np.mean(ref), rel=1e-9)
    assert dice_overlap(torch.ones(2, 1, 4)).item() == 0.0


def _sig(z):
    return 1 / (1 + np.exp(-z))


def test_freekd_masked_band_distances_by_hand():
    s = Shapes((1, 8, 8), 10, feats=((5, 2, 2), (2, 4, 4)), embedding=2)
    t = Shapes((1, 8, 8), 10, feats=((4, 4, 4),), embedding=4)
    torch.manual_seed(0)
    loss = losses.create("freekd", student=s, teacher=t, num_prompts=3, levels=2, alpha=0.7, beta=1.3)
    assert loss.num_levels == [2] and loss.prompts[0].shape == (3, 3, 4)
    with torch.no_grad():
        loss.prompts[0].normal_(0, 0.5)
    fs = torch.randn(3, 2, 4, 4, requires_grad=True)
    ft = torch.randn(3, 4, 4, 4)
    value = loss(Outputs(torch.zeros(3, 10), feats=[torch.randn(3, 5, 2, 2), fs]),
                 Outputs(torch.zeros(3, 10), feats=[ft]), None)  # fmt: skip

    with torch.no_grad():
        sc = loss.connectors[0](fs).double().numpy()
    p = loss.prompts[0].detach().double().numpy()
    tt = ft.double().numpy()
    ll1_t, h1_t = _np_haar(tt)
    ll2_t, h2_t = _np_haar(ll1_t)
    ll1_s, h1_s = _np_haar(sc)
    ll2_s, h2_s = _np_haar(ll1_s)

    def masks(prompts, band):  # (T, C) x (N, C, H, W) -> (N, T, H, W)
        return _sig(np.einsum("tc,nchw->nthw", prompts, band))

    m0 = masks(p[0], ll2_t)
    low = (m0[:, :, None] * np.abs(ll2_s - ll2_t)[:, None]).mean()
    high = 0.0
    for k, (hs, ht) in enumerate(((h1_s, h1_t), (h2_s, h2_t)), start=1):
        m = masks(p[k], ht.sum(2))
        high += (m[:, :, None, None] * np.abs(hs - ht)[:, None]).mean()
    assert value.item() == pytest.approx(0.7 * low + 1.3 * high, rel=1e-5)
    value.backward()
    assert fs.grad.abs().sum() > 0 and loss.prompts[0].grad is None  # prompts are frozen while distilling


def test_prompt_pretraining_on_the_teacher_lowers_its_objective_then_freezes_the_prompts():
    bundle = data.create("digits", train_fraction=0.2)
    torch.manual_seed(0)
    teacher = models.create("cnn", num_classes=10, in_channels=1, width=8).eval().requires_grad_(False)
    student = models.create("cnn", num_classes=10, in_channels=1, width=2)
    shape = bundle.input_shape
    s_shapes, t_shapes = models.shapes(student, shape), models.shapes(teacher, shape)
    loss = losses.create("freekd", student=s_shapes, teacher=t_shapes, pretrain_epochs=3)
    x, y, _ = next(iter(bundle.loader("train", 64, shuffle=False)))
    with torch.no_grad():
        f = teacher.forward_outputs(x).feats[-1]
        before = loss.prompt_loss(0, f, y, teacher.classifier).item()
        init = loss.prompts[0].clone()
    loss.pretrain(teacher_model=teacher, loader=bundle.loader("train", 32, shuffle=True, seed=0),
                  device=torch.device("cpu"), epochs=1)  # fmt: skip
    with torch.no_grad():
        after = loss.prompt_loss(0, f, y, teacher.classifier).item()
    assert len(loss.pretrain_history) == 3 and after < before
    assert not torch.equal(init, loss.prompts[0]) and not loss.prompts[0].requires_grad
    assert all(p.grad is None for p in teacher.parameters())
