"""Feature-level losses against independent references (numpy / explicit loops / torch.distributions / scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from autokd import losses, models
from autokd.errors import ConfigError
from autokd.losses import feature as fl
from autokd.outputs import Outputs

IN = (1, 8, 8)


def _shapes(name, in_shape=IN, **kw):
    torch.manual_seed(0)
    m = models.create(name, 10, in_channels=in_shape[0], **kw)
    return m, models.shapes(m, in_shape)


def _np(t):
    return t.detach().double().numpy()


# ------------------------------------------------------------------------------------------ FitNet
def test_hint_loss_is_elementwise_mean_square():
    a, b = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    assert fl.hint_loss(a, b).item() == pytest.approx(((_np(a) - _np(b)) ** 2).mean(), rel=1e-6)


def test_fitnet_default_pair_is_middle_auto_pair_and_value_matches_its_regressor():
    _, t = _shapes("resnet20")
    _, s = _shapes("resnet8")
    loss = losses.create("fitnet", student=s, teacher=t)
    assert loss.layer_pairs == [(2, 2)]  # CRD / mdistiller hint_layer = 2
    fs = [torch.randn(4, *c) for c in s.feats]
    ft = [torch.randn(4, *c) for c in t.feats]
    v = loss(Outputs(torch.zeros(4, 10), fs), Outputs(torch.zeros(4, 10), ft), torch.zeros(4, dtype=torch.long))
    ref = ((_np(loss.connectors[0](fs[2])) - _np(ft[2])) ** 2).mean()
    assert v.item() == pytest.approx(ref, rel=1e-5)
    explicit = losses.create("fitnet", student=s, teacher=t, pairs=[(1, 1), (3, 3)])
    assert explicit.layer_pairs == [(1, 1), (3, 3)] and len(explicit.connectors) == 2


# ------------------------------------------------------------------------------------------ AT
def _at_np(f, p=2.0):
    a = (np.abs(f) ** p).mean(1).reshape(f.shape[0], -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_at_loss_matches_numpy_with_pooling():
    s, t = torch.randn(3, 4, 4, 4), torch.randn(3, 7, 2, 2)
    s_pooled = _np(s).reshape(3, 4, 2, 2, 2, 2).mean(axis=(3, 5))
    ref = ((_at_np(s_pooled) - _at_np(_np(t))) ** 2).mean()
    assert fl.at_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    ref3 = ((_at_np(s_pooled, 3.0) - _at_np(_np(t), 3.0)) ** 2).mean()
    assert fl.at_loss(s, t, p=3.0).item() == pytest.approx(ref3, rel=1e-5)


def test_at_invariant_to_scaling_a_feature_map():
    s, t = torch.randn(3, 4, 4, 4), torch.randn(3, 6, 4, 4)
    base = fl.at_loss(s, t)
    assert fl.at_loss(s * 37.0, t).item() == pytest.approx(base.item(), rel=1e-5)
    assert fl.at_loss(s, t * 0.01).item() == pytest.approx(base.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ NST
def test_nst_loss_matches_loops():
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2)
    S = _np(s).reshape(2, 3, -1)
    T = _np(t).reshape(2, 5, -1)
    S = S / np.linalg.norm(S, axis=2, keepdims=True)
    T = T / np.linalg.norm(T, axis=2, keepdims=True)

    def mean_k(A, B):
        vals = [float(A[n, i] @ B[n, j]) ** 2 for n in range(2) for i in range(A.shape[1]) for j in range(B.shape[1])]
        return sum(vals) / len(vals)

    ref = mean_k(T, T) + mean_k(S, S) - 2 * mean_k(S, T)
    assert fl.nst_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert fl.nst_loss(s * 5, t).item() == pytest.approx(ref, rel=1e-5)  # channel-wise normalisation
    assert fl.nst_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ FSP
def test_fsp_matrix_and_loss_match_loops():
    b, top = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    bp = _np(b).reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    ref = np.zeros((2, 3, 5))
    for n in range(2):
        for i in range(3):
            for j in range(5):
                ref[n, i, j] = (bp[n, i] * _np(top)[n, j]).mean()
    np.testing.assert_allclose(_np(fl.fsp_matrix(b, top)), ref, rtol=1e-5, atol=1e-7)
    s_maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2), torch.randn(2, 4, 2, 2)]
    t_maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2), torch.randn(2, 4, 2, 2)]
    ref_loss = sum(
        ((_np(fl.fsp_matrix(s_maps[i], s_maps[i + 1])) - _np(fl.fsp_matrix(t_maps[i], t_maps[i + 1]))) ** 2).mean()
        for i in range(2)
    )
    assert fl.fsp_loss(s_maps, t_maps).item() == pytest.approx(ref_loss, rel=1e-5)


def test_fsp_default_pairs_add_the_stems_and_need_two():
    _, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    loss = losses.create("fsp", student=s, teacher=t)
    assert loss.layer_pairs == [(0, 0), (1, 1), (2, 2)]
    assert all(isinstance(c.proj[0], torch.nn.Conv2d) for c in loss.connectors)  # 4->8, 8->16, 16->32 channels
    with pytest.raises(ConfigError, match="at least 2"):
        losses.create("fsp", student=s, teacher=t, pairs=[(2, 2)])
    same = losses.create("fsp", student=s, teacher=s)
    assert all(isinstance(c.proj, torch.nn.Identity) for c in same.connectors)


# ------------------------------------------------------------------------------------------ AB
def test_ab_loss_matches_elementwise_cases():
    s, t = torch.randn(2, 3, 2, 2) * 2, torch.randn(2, 3, 2, 2)
    m = 0.7
    ref = 0.0
    for sv, tv in zip(_np(s).ravel(), _np(t).ravel(), strict=True):
        if tv > 0 and sv <= m:
            ref += (sv - m) ** 2
        elif tv <= 0 and sv > -m:
            ref += (sv + m) ** 2
    assert fl.ab_loss(s, t, m).item() == pytest.approx(ref, rel=1e-5)


def test_ab_class_scaling_and_pair_weights():
    _, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    loss = losses.create("ab", student=s, teacher=t, margin=0.5)
    assert loss.layer_pairs == [(1, 1), (2, 2)]
    sp = [torch.randn(4, *c) for c in s.preacts]
    tp = [torch.randn(4, *c) for c in t.preacts]
    v = loss(Outputs(torch.zeros(4, 10), preacts=sp), Outputs(torch.zeros(4, 10), preacts=tp), None)
    ref = sum(
        w * fl.ab_loss(conn(sp[si]), tp[ti], 0.5).item()
        for w, conn, (ti, si) in zip([0.5, 1.0], loss.connectors, loss.layer_pairs, strict=True)
    ) / 4 / 1000 * 3
    assert v.item() == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------------------------------ VID
def test_vid_nll_matches_torch_distributions():
    mu, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    log_scale = torch.randn(3)
    var = F.softplus(log_scale) + 1e-5
    dist = torch.distributions.Normal(mu, var.sqrt().view(1, -1, 1, 1))
    ref = (-dist.log_prob(t) - 0.5 * math.log(2 * math.pi)).mean()
    assert fl.vid_nll(mu, t, log_scale).item() == pytest.approx(ref.item(), rel=1e-5)


def test_vid_initial_variance_and_regressor_layout():
    _, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    loss = losses.create("vid", student=s, teacher=t, init_pred_var=3.0)
    head = loss.heads[0]
    assert torch.allclose(F.softplus(head.log_scale) + loss.EPS, torch.full_like(head.log_scale, 3.0))
    convs = [m for m in head.regressor if isinstance(m, torch.nn.Conv2d)]
    relus = [m for m in head.regressor if isinstance(m, torch.nn.ReLU)]
    assert len(convs) == 3 and len(relus) == 2 and all(c.kernel_size == (1, 1) for c in convs)
    assert convs[0].in_channels == s.feats[1][0] and convs[-1].out_channels == t.feats[1][0]


# ------------------------------------------------------------------------------------------ OFD
def test_bn_margin_is_truncated_normal_mean():
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -0.3, 5.0]))
    got = fl.bn_margin(bn)
    for c in range(3):
        s, m = abs(bn.weight[c].item()), bn.bias[c].item()
        ref = stats.truncnorm(-np.inf, (0 - m) / s, loc=m, scale=s).mean()
        assert got[c].item() == pytest.approx(ref, rel=1e-5)
    assert got[3].item() == pytest.approx(-3.0)  # P(x < 0) <= 0.001: -3·|γ| as the official code


def test_empirical_margin_mean_of_negatives_or_minus_three_std():
    t = torch.tensor([[-1.0, -3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]]).view(1, 2, 2, 2)
    m = fl.empirical_margin(t)
    assert m[0].item() == pytest.approx(-2.0)
    assert m[1].item() == pytest.approx(-3 * np.std([1, 2, 3, 4]), rel=1e-6)


def test_ofd_loss_matches_elementwise_rule():
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    margin = torch.tensor([-0.5, -0.1, -2.0])
    ref = 0.0
    for n in range(2):
        for c in range(3):
            for h in range(2):
                for w in range(2):
                    sv, tv = s[n, c, h, w].item(), max(t[n, c, h, w].item(), margin[c].item())
                    if not (sv <= tv and tv <= 0):
                        ref += (sv - tv) ** 2
    assert fl.ofd_loss(s, t, margin).item() == pytest.approx(ref, rel=1e-5)


def test_ofd_margins_from_teacher_bn_and_empirical_fallback():
    teacher, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    loss = losses.create("ofd", student=s, teacher=t)
    loss.setup(teacher_model=teacher)
    assert loss.margin_sources == ["bn", "bn"]
    assert torch.allclose(loss.margin_0, fl.bn_margin(teacher.blocks[1][1]))
    assert torch.allclose(loss.margin_1, fl.bn_margin(teacher.blocks[2][1]))

    # WRN stages are not BN outputs (pre-activation blocks): empirical margin from the first batch
    wrn, tw = _shapes("wrn_16_1")
    loss2 = losses.create("ofd", student=s, teacher=tw, pairs=[(3, 2)])
    loss2.setup(teacher_model=wrn)
    assert loss2.margin_sources == [None] and torch.isnan(loss2.margin_0).all()
    x = torch.randn(8, *IN)
    with torch.no_grad():
        t_out = wrn.eval().forward_outputs(x)
    student = models.create("cnn", 10, in_channels=1, width=4)
    v = loss2(student.forward_outputs(x), t_out, None)
    assert torch.isfinite(v) and loss2.margin_sources == ["empirical"]
    assert torch.allclose(loss2.margin_0, fl.empirical_margin(t_out.preacts[3]))
    first = loss2.margin_0.clone()
    loss2(student.forward_outputs(torch.randn(8, *IN)), wrn.forward_outputs(torch.randn(8, *IN)), None)
    assert torch.equal(loss2.margin_0, first)  # estimated once


def test_ofd_class_value_scaling():
    teacher, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    loss = losses.create("ofd", student=s, teacher=t)
    loss.setup(teacher_model=teacher)
    sp = [torch.randn(4, *c) for c in s.preacts]
    tp = [torch.randn(4, *c) for c in t.preacts]
    v = loss(Outputs(torch.zeros(4, 10), preacts=sp), Outputs(torch.zeros(4, 10), preacts=tp), None)
    ref = sum(
        w * fl.ofd_loss(conn(sp[si]), tp[ti], getattr(loss, f"margin_{k}")).item()
        for k, (w, conn, (ti, si)) in enumerate(zip([0.5, 1.0], loss.connectors, loss.layer_pairs, strict=True))
    ) / 4 / 1000
    assert v.item() == pytest.approx(ref, rel=1e-5)


def test_find_bn_before_preacts_on_zoo_models():
    for name, expect in [
        ("resnet8", ["bn1", "layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"]),  # residual branch, not shortcut
        ("mobilenetv2_x0_25", ["conv1.1", "blocks.1.1.conv.7", "blocks.2.2.conv.7", "blocks.4.2.conv.7", "conv2.1"]),
        ("shufflenetv2_x0_5", ["bn1", None, None, "bn2"]),
    ]:
        model, _ = _shapes(name)
        model.train()
        names = {m: n for n, m in model.named_modules()}
        assert [names.get(b) for b in fl.find_bn_before_preacts(model, IN)] == expect, name
        assert model.training  # modes restored


# ------------------------------------------------------------------------------------------ ICKD
def _icc_loops(f):
    f = _np(f)
    n, c = f.shape[:2]
    out = np.zeros((n, c, c))
    for k in range(n):
        flat = f[k].reshape(c, -1)
        g = flat @ flat.T
        out[k] = g / np.linalg.norm(g, axis=1, keepdims=True)
    return out


def test_ickd_loss_matches_loops_and_grid_cells():
    s, t = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    ref = ((_icc_loops(s) - _icc_loops(t)) ** 2).sum() / (4 * 3)
    assert fl.ickd_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    # grid=2: one matrix per quadrant, divided by C * (N * 4 cells)
    quads = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2)), (slice(2, 4), slice(2, 4))]
    tot = sum(((_icc_loops(s[:, :, h, w]) - _icc_loops(t[:, :, h, w])) ** 2).sum() for h, w in quads)
    assert fl.ickd_loss(s, t, grid=2).item() == pytest.approx(tot / (4 * 12), rel=1e-5)
    assert fl.inter_channel_correlation(torch.randn(2, 3, 1, 1), grid=4).shape == (2, 3, 3)  # grid capped


def test_ickd_class_uses_last_pair_and_always_a_connector():
    _, t = _shapes("cnn", width=8)
    loss = losses.create("ickd", student=t, teacher=t)
    assert loss.layer_pairs == [(2, 2)]
    assert isinstance(loss.connectors[0].proj[0], torch.nn.Conv2d)


# ------------------------------------------------------------------------------------------ misc
def test_pairs_out_of_range_are_rejected():
    _, t = _shapes("cnn", width=8)
    with pytest.raises(ConfigError, match="out of range"):
        losses.create("at", student=t, teacher=t, pairs=[(5, 1)])


def test_feature_losses_finite_under_bf16_autocast():
    _, t = _shapes("cnn", width=8)
    _, s = _shapes("cnn", width=4)
    for name in ["at", "nst", "fsp", "ickd", "vid"]:
        loss = losses.create(name, student=s, teacher=t)
        fs = [torch.randn(4, *c).bfloat16() for c in s.feats]
        ft = [torch.randn(4, *c).bfloat16() for c in t.feats]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = loss(Outputs(torch.zeros(4, 10), fs), Outputs(torch.zeros(4, 10), ft), None)
        assert v.dtype == torch.float32 and torch.isfinite(v), name
