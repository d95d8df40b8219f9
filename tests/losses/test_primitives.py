"""The Auto-KD / KD-Zero primitive space: transforms and distances against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autokd import losses, models
from autokd.losses.primitives import DISTANCES, TRANSFORMS
from autokd.outputs import Outputs


def test_identity_kl_equals_kd_and_identity_l2_equals_mse():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    g = losses.create("generic", distance="kl", temperature=3.0)
    kd = losses.create("kd", temperature=3.0)
    assert torch.allclose(g(Outputs(s), Outputs(t), None), kd(Outputs(s), Outputs(t), None), atol=1e-6)
    g2 = losses.create("generic", distance="l2")
    assert torch.allclose(g2(Outputs(s), Outputs(t), None), ((s - t) ** 2).mean(), atol=1e-6)


def test_transforms_match_numpy():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 4, 4)
    a = x.numpy()
    np.testing.assert_allclose(TRANSFORMS["spatial_attention"](x).numpy(), (a**2).mean(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(TRANSFORMS["channel_attention"](x).numpy(), (a**2).mean((2, 3), keepdims=True),
                               rtol=1e-5)
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(TRANSFORMS["softmax_c"](x).numpy(), e / e.sum(1, keepdims=True), rtol=1e-5)
    f = a.reshape(3, -1)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(TRANSFORMS["batch_gram"](x).numpy()[..., 0, 0], f @ f.T, rtol=1e-5, atol=1e-6)
    c = a.reshape(3, 4, 16)
    np.testing.assert_allclose(TRANSFORMS["channel_gram"](x).numpy().reshape(3, 4, 4),
                               np.einsum("ncd,nkd->nck", c, c) / 16, rtol=1e-5, atol=1e-6)
    mm = TRANSFORMS["minmax"](x).reshape(3, -1)
    assert torch.allclose(mm.min(1).values, torch.zeros(3)) and torch.allclose(mm.max(1).values, torch.ones(3),
                                                                                 atol=1e-5)
    n = TRANSFORMS["norm_hw"](x)
    assert torch.allclose(n.mean((2, 3)), torch.zeros(3, 4), atol=1e-5)
    assert TRANSFORMS["multiscale_pool"](x).shape == (3, 4 * (1 + 4 + 16), 1, 1)
    assert TRANSFORMS["local_pool"](x).shape == (3, 4, 2, 2)


def test_distances_match_independent_formulas():
    torch.manual_seed(1)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    cos = np.mean([1 - np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(s.numpy(), t.numpy(),
                                                                                           strict=True)])
    assert abs(DISTANCES["cosine"](s, t, 1.0).item() - cos) < 1e-5
    pear = np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(s.numpy(), t.numpy(), strict=True)])
    assert abs(DISTANCES["pearson"](s, t, 1.0).item() - pear) < 1e-5
    corr = np.mean((np.corrcoef(s.numpy()) - np.corrcoef(t.numpy())) ** 2)
    assert abs(DISTANCES["correlation"](s, t, 1.0).item() - corr) < 1e-5
    assert abs(DISTANCES["l1"](s, t, 1.0).item() - np.abs(s.numpy() - t.numpy()).mean()) < 1e-6


def test_random_mask_is_shared_by_teacher_and_student():
    torch.manual_seed(0)
    feat = torch.randn(4, 3, 8, 8)
    g = losses.create("generic", transform1="random_mask", distance="l2", mask_ratio=0.5)
    # identical inputs stay identical under a shared mask: the distance is exactly zero
    assert g(Outputs(feat.mean((2, 3))), Outputs(feat.mean((2, 3))), None).item() == 0.0


@pytest.mark.parametrize("location", ["logits", "embedding", "feat_last", "feat_mid"])
def test_every_location_builds_on_mismatched_families(location):
    t = models.create("resnet8", 10, in_channels=1)
    s = models.create("mobilenetv2_x0_25", 10, in_channels=1)
    sh_t, sh_s = models.shapes(t, (1, 8, 8)), models.shapes(s, (1, 8, 8))
    x = torch.randn(4, 1, 8, 8)
    for tr in itertools.islice(TRANSFORMS, 0, None, 3):
        g = losses.create("generic", student=sh_s, teacher=sh_t, location=location, transform1=tr,
                          distance="pearson")
        v = g(s.forward_outputs(x), t.forward_outputs(x), None)
        v.backward()
        assert torch.isfinite(v)


@pytest.mark.parametrize("distance", list(DISTANCES))
def test_every_transform_distance_combination_is_finite(distance):
    t = models.create("cnn", 10, in_channels=1, width=8)
    s = models.create("cnn", 10, in_channels=1, width=4)
    sh_t, sh_s = models.shapes(t, (1, 8, 8)), models.shapes(s, (1, 8, 8))
    x = torch.randn(8, 1, 8, 8)
    t_out = t.forward_outputs(x)
    for tr1, tr2 in [(a, b) for a in TRANSFORMS for b in ("identity", "softmax_c", "batch_gram")]:
        g = losses.create("generic", student=sh_s, teacher=sh_t, location="feat_last", transform1=tr1,
                          transform2=tr2, distance=distance)
        v = g(s.forward_outputs(x), t_out, None)
        v.backward()
        assert torch.isfinite(v), (tr1, tr2, distance)
