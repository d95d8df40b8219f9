"""BINGO, KPN, DarkRank, KDSVD and CC (CRD's variant) against independent hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from autokd import losses, models
from autokd.errors import ConfigError
from autokd.losses.contrastive import bingo_loss, teacher_bags
from autokd.losses.ranking import darkrank_hard_loss, darkrank_soft_loss
from autokd.losses.svd import kdsvd_loss, right_singular
from autokd.outputs import Outputs, Shapes

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _shapes(feats, embedding=None):
    return Shapes(input_shape=SHAPE, num_classes=10, feats=tuple(feats), embedding=embedding)


# ------------------------------------------------------------------------------------------------ CC (CRD)
def test_cc_crd_is_crds_consecutive_delta_product_by_hand():
    loss = losses.create("cc_crd", student=_shapes([(4, 2, 2)], 4), teacher=_shapes([(6, 2, 2)], 6), feat_dim=3)
    torch.manual_seed(0)
    e_s, e_t = torch.randn(5, 4), torch.randn(5, 6)
    value = loss(Outputs(torch.zeros(5, 10), embedding=e_s), Outputs(torch.zeros(5, 10), embedding=e_t), None)
    with torch.no_grad():
        zs = (e_s @ loss.embed_s.weight.t() + loss.embed_s.bias).double().numpy()
        zt = (e_t @ loss.embed_t.weight.t() + loss.embed_t.bias).double().numpy()
    expected = sum(
        sum(abs(zs[i, d] - zt[i, d]) * abs(zs[i + 1, d] - zt[i + 1, d]) for d in range(3)) for i in range(4)
    ) / 4
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    # both embeddings train, as in CRD's trainable list
    assert loss.embed_s.weight.grad.abs().sum() > 0 and loss.embed_t.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ DarkRank
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _scores(e, alpha, beta):
    e = _unit(e)
    n = len(e)
    return np.array([[-(alpha * np.sum((e[q] - e[i]) ** 2)) ** beta for i in range(n)] for q in range(n)])


def _perm_prob(scores, perm):
    """The official code's ``_get_perm_prob``: Π over the list of exp(s) / Σ of the exp of the rest."""
    prob, tail = 1.0, 0.0
    for idx in reversed(perm):
        tail += math.exp(scores[idx])
        prob *= math.exp(scores[idx]) / tail
    return prob


def test_darkrank_soft_is_listnet_cross_entropy_over_all_orderings_by_hand():
    rng = np.random.default_rng(0)
    e_s, e_t = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    alpha, beta, length = 0.7, 1.5, 3
    ss, ts = _scores(e_s, alpha, beta), _scores(e_t, alpha, beta)
    expected = 0.0
    for q in range(5):
        d_t = np.sum((_unit(e_t) - _unit(e_t)[q]) ** 2, axis=1)
        top = [int(i) for i in np.argsort(d_t) if i != q][:length]
        for perm in itertools.permutations(top):
            expected -= _perm_prob(ts[q], perm) * math.log(_perm_prob(ss[q], perm))
    expected /= 5
    value = darkrank_soft_loss(torch.tensor(e_s), torch.tensor(e_t), alpha, beta, length)
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_darkrank_hard_is_listmle_of_the_teachers_full_ranking_by_hand():
    rng = np.random.default_rng(1)
    e_s, e_t = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    alpha, beta = 1.2, 2.0
    ss = _scores(e_s, alpha, beta)
    expected = 0.0
    for q in range(6):
        d_t = np.sum((_unit(e_t) - _unit(e_t)[q]) ** 2, axis=1)
        rank = [int(i) for i in np.argsort(d_t) if i != q]
        expected -= math.log(_perm_prob(ss[q], rank))
    expected /= 6
    value = darkrank_hard_loss(torch.tensor(e_s), torch.tensor(e_t), alpha, beta)
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_darkrank_registered_variants_and_gradients():
    torch.manual_seed(0)
    e_s, e_t = torch.randn(8, 5, requires_grad=True), torch.randn(8, 7)
    for variant in ("soft", "hard"):
        loss = losses.create("darkrank", variant=variant)
        v = loss(Outputs(torch.zeros(8, 10), embedding=e_s), Outputs(torch.zeros(8, 10), embedding=e_t), None)
        (g,) = torch.autograd.grad(v, e_s)
        assert torch.isfinite(v) and torch.isfinite(g).all() and g.abs().sum() > 0
    # when the student ranks exactly like the teacher the hard loss is at its minimum among student orders
    same = losses.create("darkrank", variant="hard")
    lo = same(Outputs(torch.zeros(8, 10), embedding=e_t), Outputs(torch.zeros(8, 10), embedding=e_t), None)
    hi = same(Outputs(torch.zeros(8, 10), embedding=-e_t.flip(0)), Outputs(torch.zeros(8, 10), embedding=e_t), None)
    assert lo.item() < hi.item()


# ------------------------------------------------------------------------------------------------ BINGO
def test_teacher_bags_are_nearest_other_samples_by_cosine():
    t = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    bags = teacher_bags(t, 1)
    assert bags.squeeze(1).tolist() == [1, 0, 3, 2, 2]  # [-1, 0]: cos 0 with [0, 1], < 0 with the rest


def test_bingo_multi_positive_infonce_by_hand():
    rng = np.random.default_rng(2)
    q, k = _unit(rng.normal(size=(5, 3))), _unit(rng.normal(size=(5, 3)))
    bags = [[1, 2], [0, 3], [4, 0], [1, 4], [2, 3]]
    tau, w = 0.3, 0.4
    logits = q @ k.T / tau
    expected = 0.0
    for i in range(5):
        pos = {i, *bags[i]}
        negs = [logits[i, j] for j in range(5) if j not in pos]

        def ce(p, i=i, negs=negs):
            return -logits[i, p] + math.log(math.exp(logits[i, p]) + sum(math.exp(v) for v in negs))

        expected += (1 - w) * ce(i) + w * sum(ce(p) for p in bags[i]) / len(bags[i])
    expected /= 5
    value = bingo_loss(torch.tensor(q), torch.tensor(k), torch.tensor(bags), tau, w)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_bingo_uses_only_the_sample_itself_during_warmup():
    loss = losses.create("bingo", student=_shapes([(4, 2, 2)], 4), teacher=_shapes([(6, 2, 2)], 6), warmup=0.1)
    torch.manual_seed(1)
    s = Outputs(torch.zeros(6, 10), embedding=torch.randn(6, 4))
    t = Outputs(torch.zeros(6, 10), embedding=torch.randn(6, 6))
    loss.set_progress(0, 20)  # progress 0 < warmup: bag weight 0
    warm = loss(s, t, None)
    with torch.no_grad():
        q = torch.nn.functional.normalize(loss.head(s.embedding), dim=1)
        k = torch.nn.functional.normalize(t.embedding, dim=1)
    bags = teacher_bags(k, 2)
    assert warm.item() == pytest.approx(bingo_loss(q, k, bags, 0.2, 0.0).item(), rel=1e-6)
    loss.set_progress(10, 20)
    assert loss(s, t, None).item() == pytest.approx(bingo_loss(q, k, bags, 0.2, 0.5).item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------ KPN
def test_kpn_projects_the_teacher_layer_onto_the_students_by_hand():
    torch.manual_seed(0)
    t = models.create("cnn", 10, in_channels=1, width=8).eval()
    s = models.create("cnn", 10, in_channels=1, width=2)
    loss = losses.create("kpn", student=models.shapes(s, SHAPE), teacher=models.shapes(t, SHAPE))
    assert loss.layer_pairs == [(1, 1)]  # the middle auto pair of two 3-stage nets
    conv = loss.projections[0].proj
    assert sum(p.numel() for p in loss.parameters()) == 16 * 4 + 4  # C_t -> C_s projection matrix + bias
    x = torch.randn(4, *SHAPE)
    so, to = s.forward_outputs(x), t.forward_outputs(x)
    value = loss(so, to, None)
    with torch.no_grad():
        w, b = conv.weight[:, :, 0, 0].double().numpy(), conv.bias.double().numpy()
        tm = to.feats[1].double().numpy()  # (4, 16, 4, 4), same size as the student's stage 1
        proj = np.maximum(np.einsum("oc,nchw->nohw", w, tm) + b[None, :, None, None], 0)
        expected = ((proj - so.feats[1].double().numpy()) ** 2).mean()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert conv.weight.grad.abs().sum() > 0 and all(p.grad is None for p in t.parameters())


# ------------------------------------------------------------------------------------------------ KDSVD
@pytest.mark.parametrize("rows,cols", [(7, 4), (3, 6)], ids=["tall", "wide"])
def test_right_singular_backward_matches_autograd_on_distinct_singular_values(rows, cols):
    torch.manual_seed(0)
    a = torch.randn(2, rows, cols, dtype=torch.float64, requires_grad=True)
    w_s, w_v = torch.randn(2, min(rows, cols), dtype=torch.float64), torch.randn(2, cols, 2, dtype=torch.float64)

    def objective(s, v):
        return (w_s * s).sum() + (w_v * v[:, :, :2]).sum()

    (ours,) = torch.autograd.grad(objective(*right_singular(a)), a)
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    (ref,) = torch.autograd.grad(objective(s, vh.transpose(-2, -1)), a)
    assert torch.allclose(ours, ref, atol=1e-9)


def test_right_singular_backward_stays_finite_on_repeated_zero_singular_values():
    a = torch.zeros(1, 6, 4, dtype=torch.float64)
    a[0, :, 0], a[0, :, 1] = torch.arange(6.0), torch.ones(6)  # rank 2: two zero singular values
    a.requires_grad_(True)
    _, v = right_singular(a)
    (g,) = torch.autograd.grad(v[:, :, 0].sum(), a)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def _np_kdsvd(s_maps, t_maps, k):
    """KDSVD written again with numpy's SVD and explicit loops (RepDistiller's formula, signs summing >= 0)."""

    def decompose(f, n):
        out_s, out_v = [], []
        for m in f:  # (C, H, W)
            x = m.reshape(m.shape[0], -1).T  # (HW, C)
            _, sv, vt = np.linalg.svd(x, full_matrices=False)
            v = vt.T[:, :n]
            v = v * np.where(v.sum(0) < 0, -1.0, 1.0)
            out_s.append(sv[:n] / np.linalg.norm(sv[:n]))
            out_v.append(v)
        return out_s, out_v

    total, prev = 0.0, None
    for f_s, f_t in zip(s_maps, t_maps, strict=True):
        st, vt = decompose(f_t, k)
        _, vs = decompose(f_s, k + 3)
        cur_s, cur_t = [], []
        for n in range(len(f_s)):
            cos = vs[n].T @ vt[n]
            cols = []
            for j in range(vt[n].shape[1]):
                i = int(np.argmax(np.abs(cos[:, j])))
                cols.append(vs[n][:, i] * np.sign(cos[i, j]))
            cur_s.append(np.stack(cols, 1) * st[n])
            cur_t.append(vt[n] * st[n])
        if prev is not None:
            for n in range(len(f_s)):
                a_s, b_s, a_t, b_t = cur_s[n], prev[0][n], cur_t[n], prev[1][n]
                for c, c2, j in itertools.product(range(a_s.shape[0]), range(b_s.shape[0]), range(a_s.shape[1])):
                    rs = math.exp(-((a_s[c, j] - b_s[c2, j]) ** 2) / 8)
                    rt = math.exp(-((a_t[c, j] - b_t[c2, j]) ** 2) / 8)
                    total += (rs - rt) ** 2 / len(f_s)
        prev = (cur_s, cur_t)
    return total


def test_kdsvd_loss_matches_a_numpy_rewrite():
    rng = np.random.default_rng(3)
    s_maps = [rng.random((3, 4, 4, 4)), rng.random((3, 5, 2, 2))]
    t_maps = [rng.random((3, 4, 4, 4)), rng.random((3, 5, 2, 2))]
    for k in (1, 2):
        value = kdsvd_loss([torch.tensor(m) for m in s_maps], [torch.tensor(m) for m in t_maps], k)
        assert value.item() == pytest.approx(_np_kdsvd(s_maps, t_maps, k), rel=1e-4)


def test_kdsvd_builds_channel_connectors_only_when_channels_differ_and_needs_two_pairs():
    t = _shapes([(4, 8, 8), (8, 4, 4), (16, 2, 2)])
    same = losses.create("kdsvd", student=t, teacher=t)
    assert sum(p.numel() for p in same.parameters()) == 0
    other = losses.create("kdsvd", student=_shapes([(2, 8, 8), (4, 4, 4), (8, 2, 2)]), teacher=t)
    assert [c.proj[0].out_channels for c in other.connectors] == [8, 16]
    with pytest.raises(ConfigError, match="at least 2 layer pairs"):
        losses.create("kdsvd", student=t, teacher=t, pairs=[(2, 2)])
