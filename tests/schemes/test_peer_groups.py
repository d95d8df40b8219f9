"""ORC (online role change) and HWM (OKDPH's hybrid-weight model) against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import data, schemes
from autokd.distiller import Step
from autokd.errors import ConfigError
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.schemes.peers import HWM, fuse_into, hybrid_state, mixture_kl
from autokd.train import Trainer


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", train_fraction=0.2)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=2, batch_size=32))
    return Trainer(bundle, device="cpu").fit(r, measure=False).student.eval()


def _recipe(scheme, params=None, epochs=1, terms=True):
    kd = [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})] if terms else []
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1 if terms else 1.0, terms=kd,
                  scheme=SchemeSpec(name=scheme, params=params or {}), optim=OptimSpec(epochs=epochs, batch_size=32))


def _kl(p, logits, t):  # sum_c p (log p - log softmax(logits/t)), batch mean, x t^2
    return (p * (p.log() - F.log_softmax(logits / t, 1))).sum(1).mean() * t * t


def test_mixture_kl_is_the_kl_to_the_mean_of_the_softened_predictions():
    g = torch.Generator().manual_seed(0)
    a, b, s = (torch.randn(5, 4, generator=g) for _ in range(3))
    p = (F.softmax(a / 3, 1) + F.softmax(b / 3, 1)) / 2
    assert torch.allclose(mixture_kl([a, b], s, 3.0), _kl(p, s, 3.0), atol=1e-6)


# -- ORC ------------------------------------------------------------------------------------------------
def test_orc_ranks_members_by_their_own_batch_loss_or_accuracy():
    y = torch.tensor([0, 1, 2, 0])
    # member 0: 3/4 right but one confident error; member 1: 2/4 right, low loss on all
    m0 = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0], [0, 0, 20.0]])
    m1 = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0.5, 0, 0.4], [0.4, 0, 0.5]])
    ce = [float(F.cross_entropy(m, y)) for m in (m0, m1)]
    assert ce[1] < ce[0]
    assert schemes.create("orc", peers=1).roles([m0, m1], y) == [1]  # lowest CE
    assert schemes.create("orc", peers=1, rank_by="accuracy").roles([m0, m1], y) == [0]  # most accurate


def test_orc_losses_follow_the_roles():
    torch.manual_seed(0)
    orc = schemes.create("orc", peers=2, promote=1, weight=0.5, intensive=2.0, temperature=2.0)
    orc.peers = nn.ModuleList([nn.Linear(4, 3), nn.Linear(4, 3)])
    orc.promotions = [0, 0, 0]
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    s = torch.randn(8, 3, requires_grad=True)
    pre = torch.randn(8, 3)
    orc.teacher_outputs(x, torch.arange(8), default=lambda: Outputs(logits=pre))
    out = orc.extra_losses(x, y, torch.arange(8), Step({}, Outputs(logits=s)))
    z = [s, orc.peers[0](x), orc.peers[1](x)]
    ce = [float(F.cross_entropy(m.detach(), y)) for m in z]
    lead = min(range(3), key=lambda k: ce[k])
    assert orc.last_roles == [lead] and orc.promotions[lead] == 1
    others = [k for k in range(3) if k != lead]
    errors = (z[others[0]].argmax(1) != y) | (z[others[1]].argmax(1) != y)
    group = (F.softmax(z[lead].detach() / 2, 1) + F.softmax(pre / 2, 1)) / 2  # temporary teacher + pre-trained

    def want(k):
        if k == lead:
            v = 2.0 * F.cross_entropy(z[k][errors], y[errors]) if errors.any() else torch.zeros(())
            return v + (0.5 * _kl(F.softmax(pre / 2, 1), z[k], 2.0) if k > 0 else 0.0)
        return 0.5 * _kl(group, z[k], 2.0)

    assert torch.allclose(out["orc"], want(0), atol=1e-5)
    peers = sum(F.cross_entropy(z[k], y) + want(k) for k in (1, 2))
    assert torch.allclose(out["orc_peers"], peers, atol=1e-5)


def test_orc_trains_the_group_and_changes_roles(bundle, teacher):
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("orc", {"peers": 2}, epochs=2), measure=False)
    steps = 2 * len(bundle.loader("train", 32))
    assert sum(res.scheme.promotions) == steps  # one promoted member per iteration
    assert all(p.grad is not None for p in res.scheme.peers.parameters())
    h = res.history[-1]
    assert h["train_orc_peers"] > 0 and h["train_loss"] == pytest.approx(
        h["train_task"] + h["train_distill"] + h["train_orc_peers"], rel=1e-5)
    with pytest.raises(ConfigError, match="promote <= peers"):
        schemes.create("orc", peers=1, promote=2)


# -- HWM ------------------------------------------------------------------------------------------------
def _net():
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def test_hybrid_state_and_fusion_are_the_weighted_averages():
    torch.manual_seed(0)
    a, b = _net(), _net()
    a[1].running_mean.fill_(1.0)
    b[1].running_mean.fill_(3.0)
    st = hybrid_state([a, b], [0.25, 0.75], grad=False)
    for name, v in a.state_dict().items():
        w = b.state_dict()[name]
        if v.is_floating_point():
            assert torch.allclose(st[name], 0.25 * v + 0.75 * w)
    assert st["1.running_mean"].tolist() == pytest.approx([2.5] * 5)
    h = _net()
    h.load_state_dict(st)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    fuse_into(a, h, 0.4)
    for name, v in a.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.4 * st[name] + 0.6 * before[name], atol=1e-6)


def _hwm_setup(backprop: bool):
    torch.manual_seed(0)
    hwm = schemes.create("hwm", peers=1, omega=0.8, beta=0.5, temperature=4.0, backprop_hwm=backprop)
    student, peer = _net(), _net()
    hwm.student, hwm.peers = student, nn.ModuleList([peer])
    hwm.hwm = _net().requires_grad_(False)
    return hwm, student, peer


@pytest.mark.parametrize("backprop", [False, True])
def test_hwm_losses_and_the_gradient_through_the_hybrid_weights(backprop):
    hwm, student, peer = _hwm_setup(backprop)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    s_logits = student(x)  # the student's forward comes first (the distiller's step)
    # the independent computation: a separate model holding the mean weights, as the official code builds it
    ref = _net()
    ref.load_state_dict({k: (v + peer.state_dict()[k]) / 2 if v.is_floating_point() else v
                         for k, v in student.state_dict().items()})
    ref.train()
    h_ref = ref(x)
    out = hwm.extra_losses(x, y, torch.arange(6), Step({}, Outputs(logits=s_logits)))
    p_logits = peer(x)
    stable = torch.stack([s_logits, p_logits, h_ref]).mean(0).detach()
    ce_h = F.cross_entropy(h_ref, y)
    assert hwm.hwm_ce == pytest.approx(float(ce_h.detach()), rel=1e-5)
    kd_s = 0.5 * _kl(F.softmax(stable / 4, 1), s_logits, 4.0)
    assert torch.allclose(out["hwm"], kd_s + (0.2 * ce_h if backprop else 0.0), atol=1e-5)
    peer_want = 0.8 * F.cross_entropy(p_logits, y) + 0.5 * _kl(F.softmax(stable / 4, 1), p_logits, 4.0)
    assert torch.allclose(out["hwm_peers"], peer_want, atol=1e-5)
    # gradient of the HWM's CE on a student weight: r_i × its gradient on the hybrid weight (paper), or none
    w = student[0].weight
    g_total = torch.autograd.grad(out["hwm"], w, retain_graph=True)[0]
    g_kd = torch.autograd.grad(kd_s, w, retain_graph=True)[0]
    g_ref = torch.autograd.grad(ce_h, ref[0].weight)[0]
    expect = g_kd + (0.2 * 0.5 * g_ref if backprop else 0.0)
    assert torch.allclose(g_total, expect, atol=1e-5)
    # the HWM model now holds the hybrid weights (and the batch's BN statistics update)
    for name, v in ref.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(hwm.hwm.state_dict()[name], v, atol=1e-5)


def test_hwm_trains_and_fuses_on_schedule(bundle, teacher, monkeypatch):
    res = Trainer(bundle, device="cpu").fit(_recipe("hwm", {"hybrid": "dir"}, epochs=2, terms=False), measure=False)
    assert sum(res.scheme.coef) == pytest.approx(1.0) and len(set(res.scheme.coef)) == 2
    assert res.scheme.fusions == 2 and math.isfinite(res.history[-1]["train_loss"])
    fused = []
    monkeypatch.setattr(HWM, "_fuse", lambda self: fused.append(self._batch))
    Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("hwm", {"interval": 2}, epochs=3), measure=False)
    assert len(fused) == 2  # after epochs 0 and 2 (epoch % 2 == 0)
    fused.clear()
    Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("hwm", {"unit": "batch", "interval": 3}, epochs=1),
                                                       measure=False)
    assert fused == list(range(0, len(bundle.loader("train", 32)), 3))
