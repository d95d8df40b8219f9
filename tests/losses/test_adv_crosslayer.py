"""SemCKD, ReviewKD and TaT against explicit re-computations on small tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autokd import losses
from autokd.losses.crosslayer import ABF, _batch_similarity, hcl_loss, tat_reconstruct
from autokd.outputs import Outputs, Shapes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _block_mean(a, size):
    """Average-pool a numpy (N, C, H, W) array to (size, size) when H is a multiple of size."""
    n, c, h, w = a.shape
    return a.reshape(n, c, size, h // size, size, w // size).mean(axis=(3, 5))


def _out(feats, emb=None, preacts=None):
    n = feats[0].shape[0]
    return Outputs(torch.zeros(n, 10), feats=list(feats), preacts=list(preacts or []), embedding=emb)


# ------------------------------------------------------------------------------------------------ SemCKD
S3 = Shapes((1, 8, 8), 10, feats=((3, 8, 8), (4, 4, 4), (6, 2, 2)), embedding=6)
T4 = Shapes((1, 8, 8), 10, feats=((5, 8, 8), (7, 4, 4), (9, 2, 2), (11, 1, 1)), embedding=11)


def test_batch_similarity_rows_are_padded_or_pooled_to_a_fixed_width():
    f = torch.randn(3, 2, 2, 2)
    x = f.flatten(1).numpy()
    g = _batch_similarity(f, 5).numpy()
    np.testing.assert_allclose(g[:, :3], x @ x.T, rtol=1e-5)
    assert (g[:, 3:] == 0).all()
    big = torch.randn(8, 4)
    pooled = _batch_similarity(big, 4).numpy()
    gram = big.numpy() @ big.numpy().T
    np.testing.assert_allclose(pooled, gram.reshape(8, 4, 2).mean(-1), rtol=1e-5, atol=1e-5)


def test_semckd_matches_explicit_attention_and_per_pair_mse():
    torch.manual_seed(0)
    loss = losses.create("semckd", student=S3, teacher=T4, temperature=0.5)
    assert loss.s_idx == [1, 2] and loss.t_idx == [1, 2, 3]
    b = 5
    fs = [torch.randn(b, *s) for s in S3.feats]
    ft = [torch.randn(b, *t) for t in T4.feats]
    value = loss(_out(fs), _out(ft), None)

    with torch.no_grad():

        def row(f, i):
            x = f.flatten(1).double().numpy()
            r = np.zeros(loss.sim_dim)
            r[:b] = x @ x[i]
            return torch.tensor(r, dtype=torch.float32)[None]

        expected = 0.0
        s_maps, t_maps = [fs[i] for i in loss.s_idx], [ft[j] for j in loss.t_idx]
        preds = {}
        for i, s in enumerate(s_maps):
            for j, t in enumerate(t_maps):
                hs, ht = s.shape[-1], t.shape[-1]
                src = _block_mean(s.numpy(), ht) if hs > ht else s.numpy()
                tgt = _block_mean(t.numpy(), hs) if ht > hs else t.numpy()
                pred = loss.regressors[i][j](torch.tensor(src)).double().numpy()
                preds[i, j] = ((pred - tgt) ** 2).reshape(b, -1).mean(1)
        for n in range(b):
            for i, s in enumerate(s_maps):
                q = loss.query[i](row(s, n)).double().numpy()[0]
                energies = [
                    q @ loss.key[j](row(t, n)).double().numpy()[0] / 0.5 for j, t in enumerate(t_maps)
                ]
                att = np.exp(energies) / np.exp(energies).sum()
                expected += sum(att[j] * preds[i, j][n] for j in range(len(t_maps)))
        expected /= b * len(s_maps)
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_semckd_pairs_and_batch_size_from_setup():
    loss = losses.create("semckd", student=S3, teacher=T4, pairs=[(3, 2), (1, 1), (2, 2)])
    assert loss.s_idx == [1, 2] and loss.t_idx == [1, 2, 3]
    loss.setup(batch_size=8)
    assert loss.sim_dim == 8 and loss.query[0].linear1.in_features == 8
    v = loss(
        _out([torch.randn(11, *s) for s in S3.feats]), _out([torch.randn(11, *t) for t in T4.feats]), None
    )
    assert torch.isfinite(v)


# ---------------------------------------------------------------------------------------------- ReviewKD
def _np_hcl(fs, ft):
    total = 0.0
    for s, t in zip(fs, ft, strict=True):
        h = s.shape[-1]
        loss, cnt, tot = ((s - t) ** 2).mean(), 1.0, 1.0
        for lvl in (4, 2, 1):
            if lvl >= h:
                continue
            cnt /= 2
            loss += ((_block_mean(s, lvl) - _block_mean(t, lvl)) ** 2).mean() * cnt
            tot += cnt
        total += loss / tot
    return total


def test_hcl_matches_the_pyramid_formula():
    rng = np.random.default_rng(0)
    shapes = [(2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 2, 2), (2, 6, 1, 1)]
    fs = [rng.normal(size=s) for s in shapes]
    ft = [rng.normal(size=s) for s in shapes]
    got = hcl_loss([torch.tensor(a) for a in fs], [torch.tensor(a) for a in ft]).item()
    assert got == pytest.approx(_np_hcl(fs, ft), rel=1e-6)


def test_abf_fuses_the_deeper_residual_with_a_two_way_attention():
    torch.manual_seed(0)
    abf = ABF(3, 4, 5, fuse=True).eval()  # BN at its initial running statistics: x / sqrt(1 + eps)
    x, residual = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 1, 1)
    out, res = abf(x, residual, (4, 4))
    with torch.no_grad():
        bn = 1 / np.sqrt(1 + 1e-5)
        xm = torch.einsum("oc,nchw->nohw", abf.conv1[0].weight[:, :, 0, 0], x) * bn
        y = residual.expand(-1, -1, 2, 2)  # nearest upsampling of a 1×1 map
        att = abf.att_conv[0]
        z = torch.sigmoid(
            torch.einsum("oc,nchw->nohw", att.weight[:, :, 0, 0], torch.cat([xm, y], 1))
            + att.bias[None, :, None, None]
        )
        fused = xm * z[:, :1] + y * z[:, 1:]
        fused = fused.repeat_interleave(2, -1).repeat_interleave(2, -2)  # nearest to the teacher's 4×4
        expected = F.conv2d(fused, abf.conv2[0].weight, padding=1) * bn
    torch.testing.assert_close(res, fused, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_review_kd_pairs_stages_by_depth_and_matches_teacher_preacts_and_embedding():
    s = Shapes((1, 8, 8), 10, feats=((2, 4, 4), (3, 4, 4), (4, 2, 2), (5, 1, 1), (8, 1, 1)), embedding=8)
    t = Shapes((1, 8, 8), 10, feats=((6, 8, 8), (6, 8, 8), (7, 4, 4), (9, 2, 2)), embedding=9)
    torch.manual_seed(0)
    loss = losses.create("review_kd", student=s, teacher=t)
    assert loss.levels == [(1, 1), (2, 2), (3, 4)]  # teacher stages 1..3 at the student's relative depths
    fs = [torch.randn(3, *shape) for shape in s.feats]
    tf = [torch.randn(3, *shape) for shape in t.feats]
    tp = [a - 1 for a in tf]
    emb_s, emb_t = torch.randn(3, 8), torch.randn(3, 9)
    value = loss(_out(fs, emb_s), _out(tf, emb_t, preacts=tp), None)
    fused = loss.fuse(_out(fs, emb_s))
    assert [tuple(f.shape[1:]) for f in fused] == [(6, 8, 8), (7, 4, 4), (9, 2, 2), (9, 1, 1)]
    expected = _np_hcl(
        [f.detach().double().numpy() for f in fused],
        [a.double().numpy() for a in (tp[1], tp[2], tp[3], emb_t[:, :, None, None])],
    )
    assert value.item() == pytest.approx(expected, rel=1e-5)
    no_preacts = loss(_out(fs, emb_s), _out(tf, emb_t), None)  # falls back to the post-activation maps
    assert no_preacts.item() != pytest.approx(value.item())


# --------------------------------------------------------------------------------------------------- TaT
def _np_reconstruct(q, k, v):
    out = np.zeros_like(v)
    for i in range(q.shape[0]):
        w = np.exp(k @ q[i] - (k @ q[i]).max())
        out[i] = (w / w.sum()) @ v
    return out


def test_one_to_all_reconstruction_by_hand():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    got = tat_reconstruct(torch.tensor(q), torch.tensor(k), torch.tensor(v)).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], _np_reconstruct(q[b], k[b], v[b]), rtol=1e-6)


def _tat_inputs():
    s = Shapes((1, 8, 8), 10, feats=((4, 3, 3),), embedding=4)
    t = Shapes((1, 8, 8), 10, feats=((3, 3, 3),), embedding=3)
    torch.manual_seed(1)
    return s, t, torch.randn(2, 4, 3, 3), torch.randn(2, 3, 3, 3)


def test_tat_global_loss_reconstructs_the_teacher_from_student_queries_and_values():
    s, t, fs, ft = _tat_inputs()
    loss = losses.create("tat", student=s, teacher=t)
    value = loss(_out([fs]), _out([ft]), None)
    with torch.no_grad():
        q = loss.query[0](fs).flatten(2).transpose(1, 2).double().numpy()
        v = loss.value[0](fs).flatten(2).transpose(1, 2).double().numpy()
    k = ft.flatten(2).transpose(1, 2).double().numpy()  # the key is the raw teacher feature (official)
    expected = np.mean([(_np_reconstruct(q[b], k[b], v[b]) - k[b]) ** 2 for b in range(2)])
    assert value.item() == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(5)
    big = losses.create("tat", student=s, teacher=t, patch=4)  # patch >= map: the global path
    big.load_state_dict(loss.state_dict())
    assert big(_out([fs]), _out([ft]), None).item() == pytest.approx(value.item(), rel=1e-6)


def test_tat_patch_group_and_anchor_terms_by_hand():
    s, t, fs, ft = _tat_inputs()
    loss = losses.create("tat", student=s, teacher=t, patch=2, beta=0.5)
    value = loss(_out([fs]), _out([ft]), None)
    with torch.no_grad():
        q, v = loss.query[0](fs).double().numpy(), loss.value[0](fs).double().numpy()
        pooled = F.adaptive_avg_pool2d(fs, 2)
        qa, va = loss.query[0](pooled).double().numpy(), loss.value[0](pooled).double().numpy()
    k = ft.double().numpy()
    err, count = 0.0, 0
    for b in range(2):
        for r0 in (0, 2):
            for c0 in (0, 2):  # 2×2 windows over the 3×3 map; positions past the edge do not exist
                pos = [(r, c) for r in range(r0, min(r0 + 2, 3)) for c in range(c0, min(c0 + 2, 3))]
                qq = np.stack([q[b, :, r, c] for r, c in pos])
                kk = np.stack([k[b, :, r, c] for r, c in pos])
                vv = np.stack([v[b, :, r, c] for r, c in pos])
                err += ((_np_reconstruct(qq, kk, vv) - kk) ** 2).sum()
                count += len(pos) * 3
    ka = F.adaptive_avg_pool2d(ft, 2).flatten(2).transpose(1, 2).double().numpy()
    qa, va = (a.reshape(2, 3, 4).transpose(0, 2, 1) for a in (qa, va))
    anchor = np.mean([(_np_reconstruct(qa[b], ka[b], va[b]) - ka[b]) ** 2 for b in range(2)])
    assert value.item() == pytest.approx(err / count + 0.5 * anchor, rel=1e-5)
