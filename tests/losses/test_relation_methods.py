"""Relation-level losses against independent references (explicit loops / numpy) and their invariances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autokd import losses, models
from autokd.losses import relation as rl
from autokd.outputs import Outputs

IN = (1, 8, 8)


def _np(t):
    return t.detach().double().numpy()


def _shapes(name, **kw):
    torch.manual_seed(0)
    m = models.create(name, 10, in_channels=1, **kw)
    return models.shapes(m, IN)


# ------------------------------------------------------------------------------------------ SP
def _sp_loops(fs, ft):
    fs, ft = _np(fs).reshape(len(fs), -1), _np(ft).reshape(len(ft), -1)
    n = len(fs)
    total = 0.0
    for i in range(n):
        gs = np.array([fs[i] @ fs[j] for j in range(n)])
        gt = np.array([ft[i] @ ft[j] for j in range(n)])
        gs, gt = gs / np.linalg.norm(gs), gt / np.linalg.norm(gt)
        total += ((gt - gs) ** 2).sum()
    return total / n**2


def test_sp_loss_matches_loops():
    fs, ft = torch.randn(5, 3, 2, 2), torch.randn(5, 7, 1, 1)
    assert rl.sp_loss(fs, ft).item() == pytest.approx(_sp_loops(fs, ft), rel=1e-5)


def test_sp_invariant_to_scaling_the_features():
    fs, ft = torch.randn(6, 4, 2, 2), torch.randn(6, 8, 2, 2)
    base = rl.sp_loss(fs, ft).item()
    assert rl.sp_loss(fs * 13.0, ft).item() == pytest.approx(base, rel=1e-5)
    assert rl.sp_loss(fs, ft * 0.02).item() == pytest.approx(base, rel=1e-5)
    # a per-sample rescaling is NOT an invariance: row i is normalised, but column j keeps sample j's scale
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).view(-1, 1, 1, 1)
    assert rl.sp_loss(fs * scale, ft).item() != pytest.approx(base, rel=1e-3)


def test_sp_class_default_last_pair_and_sum_over_pairs():
    t, s = _shapes("cnn", width=8), _shapes("cnn", width=4)
    loss = losses.create("sp", student=s, teacher=t)
    assert loss.layer_pairs == [(2, 2)]
    fs = [torch.randn(4, *c) for c in s.feats]
    ft = [torch.randn(4, *c) for c in t.feats]
    two = losses.create("sp", student=s, teacher=t, pairs=[(1, 1), (2, 2)])
    v = two(Outputs(torch.zeros(4, 10), fs), Outputs(torch.zeros(4, 10), ft), None)
    assert v.item() == pytest.approx(_sp_loops(fs[1], ft[1]) + _sp_loops(fs[2], ft[2]), rel=1e-5)


# ------------------------------------------------------------------------------------------ PKT
def _pkt_np(s, t, eps=1e-7):
    def cond(x):
        x = _np(x)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        k = (x @ x.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    ps, pt = cond(s), cond(t)
    return (pt * np.log((pt + eps) / (ps + eps))).mean()


def test_pkt_matches_numpy_and_is_scale_invariant():
    s, t = torch.randn(6, 5), torch.randn(6, 9)
    assert rl.pkt_loss(s, t).item() == pytest.approx(_pkt_np(s, t), rel=1e-4)
    assert rl.pkt_loss(s * 50, t * 0.1).item() == pytest.approx(rl.pkt_loss(s, t).item(), rel=1e-4)
    assert rl.pkt_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_pkt_uses_embedding_or_flattened_last_feature():
    loss = losses.create("pkt")
    s, t = torch.randn(4, 3), torch.randn(4, 6)
    a = loss(Outputs(torch.zeros(4, 2), embedding=s), Outputs(torch.zeros(4, 2), embedding=t), None)
    b = loss(Outputs(torch.zeros(4, 2), feats=[s.view(4, 3, 1, 1)]), Outputs(torch.zeros(4, 2), feats=[t.view(4, 6, 1, 1)]),
             None)
    assert a.item() == pytest.approx(b.item())


# ------------------------------------------------------------------------------------------ CC
def test_cc_kernel_explicit_series_and_limit_is_the_rbf():
    e = torch.randn(5, 4)
    g = 0.4
    en = _np(F.normalize(e, dim=1))
    ref = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            c = en[i] @ en[j]
            ref[i, j] = math.exp(-2 * g) * (1 + 2 * g * c + (2 * g) ** 2 / 2 * c**2)
    np.testing.assert_allclose(_np(rl.cc_kernel(e, g, 2)), ref, rtol=1e-5)
    rbf = np.exp(-g * ((en[:, None, :] - en[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(_np(rl.cc_kernel(e, g, 20)), rbf, rtol=1e-5)


def test_cc_loss_value_and_connector():
    s_sh, t_sh = _shapes("cnn", width=4), _shapes("cnn", width=8)
    loss = losses.create("cc", student=s_sh, teacher=t_sh, gamma=0.3, p_order=3)
    assert isinstance(loss.connector.proj, torch.nn.Linear)
    assert loss.connector.proj.in_features == s_sh.embedding and loss.connector.proj.out_features == t_sh.embedding
    es, et = torch.randn(6, s_sh.embedding), torch.randn(6, t_sh.embedding)
    v = loss(Outputs(torch.zeros(6, 10), embedding=es), Outputs(torch.zeros(6, 10), embedding=et), None)
    ref = ((_np(rl.cc_kernel(loss.connector(es), 0.3, 3)) - _np(rl.cc_kernel(et, 0.3, 3))) ** 2).mean()
    assert v.item() == pytest.approx(ref, rel=1e-5)
    assert rl.cc_loss(es * 9, et).item() == pytest.approx(rl.cc_loss(es, et).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ RKD
def _dist_loops(e):
    e = _np(e)
    n = len(e)
    d = np.zeros((n, n))
    for i, j in itertools.product(range(n), range(n)):
        if i != j:
            d[i, j] = math.dist(e[i], e[j])
    return d / d[d > 0].mean()


def test_rkd_distance_matches_pairwise_loops_and_smooth_l1():
    s, t = torch.randn(6, 5), torch.randn(6, 8)
    ref = F.smooth_l1_loss(torch.tensor(_dist_loops(s)), torch.tensor(_dist_loops(t))).item()
    assert rl.rkd_distance_loss(s, t).item() == pytest.approx(ref, rel=1e-5)


def _angles_loops(e):
    e = _np(e)
    n = len(e)
    out = np.zeros((n, n, n))
    for i, j, k in itertools.product(range(n), repeat=3):
        a, b = e[j] - e[i], e[k] - e[i]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        out[i, j, k] = 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
    return out.ravel()


def test_rkd_angle_matches_triplet_loops():
    s, t = torch.randn(5, 3), torch.randn(5, 4)
    ref = F.smooth_l1_loss(torch.tensor(_angles_loops(s)), torch.tensor(_angles_loops(t))).item()
    assert rl.rkd_angle_loss(s, t).item() == pytest.approx(ref, rel=1e-5)


def test_rkd_terms_invariant_to_scaling_and_weighted_by_alpha_beta():
    s, t = torch.randn(8, 6), torch.randn(8, 10)
    for fn in (rl.rkd_distance_loss, rl.rkd_angle_loss):
        base = fn(s, t).item()
        assert fn(s * 7.5, t).item() == pytest.approx(base, rel=1e-4)
        assert fn(s, t * 0.03).item() == pytest.approx(base, rel=1e-4)
    loss = losses.create("rkd", alpha=2.0, beta=3.0)
    v = loss(Outputs(torch.zeros(8, 2), embedding=s), Outputs(torch.zeros(8, 2), embedding=t), None)
    ref = 2.0 * rl.rkd_distance_loss(s, t) + 3.0 * rl.rkd_angle_loss(s, t)
    assert v.item() == pytest.approx(ref.item(), rel=1e-6)
    assert losses.get("rkd").hparams["alpha"].default == 25 and losses.get("rkd").hparams["beta"].default == 50


def test_rkd_batch_of_one_is_finite():
    v = rl.rkd_loss(torch.randn(1, 4, requires_grad=True), torch.randn(1, 4))
    v.backward()
    assert torch.isfinite(v)


# ------------------------------------------------------------------------------------------ IRG
def _edge_loops(x):
    x = _np(x).reshape(len(x), -1)
    n = len(x)
    d = np.array([[0.0 if i == j else ((x[i] - x[j]) ** 2).sum() for j in range(n)] for i in range(n)])
    return d / d.max()


def test_irg_terms_match_loops():
    n = 4
    s1, s2 = torch.randn(n, 4, 4, 4), torch.randn(n, 8, 2, 2)
    t1, t2 = torch.randn(n, 6, 4, 4), torch.randn(n, 3, 2, 2)
    se, te = torch.randn(n, 8), torch.randn(n, 12)
    sl, tl = torch.randn(n, 10), torch.randn(n, 10)
    np.testing.assert_allclose(_np(rl.irg_edge(s1)), _edge_loops(s1), rtol=1e-5, atol=1e-7)

    def trans_np(a, b):
        a = _np(a).reshape(n, a.shape[1], 2, 2, 2, 2).mean(axis=(3, 5))  # 4x4 -> 2x2
        b = _np(b)
        c = min(a.shape[1], b.shape[1])

        def cpool(x):  # average consecutive channel groups (adaptive pooling with an integer factor)
            f = x.shape[1] // c
            return x.reshape(n, c, f, 2, 2).mean(2)

        d = ((cpool(a) - cpool(b)) ** 2).reshape(n, -1).sum(1)
        return d / d.max()

    np.testing.assert_allclose(_np(rl.irg_transformation(s1, s2)), trans_np(s1, s2), rtol=1e-5)
    vertex = ((_np(sl) - _np(tl)) ** 2).mean()
    edge = np.mean([((_edge_loops(a) - _edge_loops(b)) ** 2).mean() for a, b in [(s1, t1), (s2, t2), (se, te)]])
    t1_6_to_3 = t1.view(n, 3, 2, 4, 4).mean(2)  # 6 channels -> 3 groups of 2
    trans = ((trans_np(s1, s2) - trans_np(t1_6_to_3, t2)) ** 2).mean()
    got = rl.irg_loss(sl, tl, [s1, s2, se], [t1, t2, te], [s1, s2], [t1, t2], 0.1, 5.0, 5.0)
    assert got.item() == pytest.approx(0.1 * vertex + 5 * edge + 5 * trans, rel=1e-5)


def test_irg_class_defaults_last_two_auto_pairs():
    t, s = _shapes("resnet20"), _shapes("resnet8")
    loss = losses.create("irg", student=s, teacher=t)
    assert loss.layer_pairs == [(2, 2), (3, 3)]
    assert {"logits", "feats", "embedding"} <= loss.needs


def test_relation_losses_float32_under_bf16_autocast():
    t, s = _shapes("cnn", width=8), _shapes("cnn", width=4)
    fs = [torch.randn(6, *c).bfloat16() for c in s.feats]
    ft = [torch.randn(6, *c).bfloat16() for c in t.feats]
    for name in ["sp", "pkt", "cc", "rkd", "irg"]:
        loss = losses.create(name, student=s, teacher=t)
        so = Outputs(torch.randn(6, 10).bfloat16(), fs, embedding=torch.randn(6, s.embedding).bfloat16())
        to = Outputs(torch.randn(6, 10).bfloat16(), ft, embedding=torch.randn(6, t.embedding).bfloat16())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = loss(so, to, None)
        assert v.dtype == torch.float32 and torch.isfinite(v), name
