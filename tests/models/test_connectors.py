"""Connectors: shapes, identities, resizing conventions and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autokd.models.connectors import (
    FeatureConnector,
    LinearConnector,
    feature_pairs_shapes,
    make_connector,
    match_spatial,
    pool_to_smaller,
)
from autokd.outputs import Shapes


def test_match_spatial_pools_down_and_interpolates_up():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert match_spatial(x, (4, 4)) is x
    down = match_spatial(x, (2, 2))
    ref = x.numpy().reshape(1, 1, 2, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(down.numpy(), ref)
    up = match_spatial(torch.ones(2, 3, 2, 2), (5, 5))
    assert up.shape == (2, 3, 5, 5) and torch.allclose(up, torch.ones_like(up))


def test_pool_to_smaller_pools_the_larger_of_two():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 2, 2)
    pa, pb = pool_to_smaller(a, b)
    assert pa.shape == (2, 3, 2, 2) and pb is b
    pb2, pa2 = pool_to_smaller(b, a)
    assert pb2 is b and torch.allclose(pa2, pa)
    # non-square: each dimension to the smaller one
    c, d = pool_to_smaller(torch.randn(1, 1, 4, 2), torch.randn(1, 1, 2, 4))
    assert c.shape[-2:] == d.shape[-2:] == (2, 2)


def test_feature_connector_shapes_and_identity():
    x = torch.randn(4, 6, 8, 8)
    conn = FeatureConnector((6, 8, 8), (10, 4, 4))
    y = conn(x)
    assert y.shape == (4, 10, 4, 4)
    assert isinstance(conn.proj[0], nn.Conv2d) and isinstance(conn.proj[1], nn.BatchNorm2d)
    same = FeatureConnector((6, 8, 8), (6, 8, 8))
    assert isinstance(same.proj, nn.Identity) and same(x) is x
    always = FeatureConnector((6, 8, 8), (6, 8, 8), always_conv=True, kernel_size=3, relu=True)
    out = always(x)
    assert out.shape == x.shape and (out >= 0).all()
    assert always.proj[0].kernel_size == (3, 3)
    nobn = FeatureConnector((6, 2, 2), (3, 2, 2), bn=False)
    assert nobn.proj[0].bias is not None and len(nobn.proj) == 1


def test_feature_connector_upsamples_smaller_student():
    conn = FeatureConnector((4, 2, 2), (8, 8, 8))
    assert conn(torch.randn(3, 4, 2, 2)).shape == (3, 8, 8, 8)


def test_linear_and_make_connector():
    assert isinstance(LinearConnector(5, 5).proj, nn.Identity)
    assert isinstance(LinearConnector(5, 5, always=True).proj, nn.Linear)
    lin = make_connector(7, 11)
    assert isinstance(lin, LinearConnector) and lin(torch.randn(2, 7)).shape == (2, 11)
    assert isinstance(make_connector((7,), (3,)), LinearConnector)
    feat = make_connector((3, 4, 4), (6, 2, 2), always_conv=True)
    assert isinstance(feat, FeatureConnector) and feat(torch.randn(2, 3, 4, 4)).shape == (2, 6, 2, 2)


def test_feature_pairs_shapes_with_preacts_fallback():
    s = Shapes((1, 8, 8), 10, feats=((4, 8, 8), (8, 4, 4)), preacts=())
    t = Shapes((1, 8, 8), 10, feats=((8, 8, 8), (16, 4, 4)), preacts=((8, 8, 8), (16, 4, 4)))
    assert feature_pairs_shapes(s, t, [(1, 0)]) == [((16, 4, 4), (4, 8, 8))]
    assert feature_pairs_shapes(s, t, [(0, 1)], "preacts") == [((8, 8, 8), (8, 4, 4))]


def test_connector_gets_gradients():
    conn = FeatureConnector((3, 4, 4), (5, 2, 2), always_conv=True)
    conn(torch.randn(4, 3, 4, 4)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conn.parameters())


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_connector_keeps_size_for_odd_kernels(kernel_size):
    conn = FeatureConnector((2, 5, 5), (4, 5, 5), kernel_size=kernel_size)
    assert conn(torch.randn(1, 2, 5, 5)).shape == (1, 4, 5, 5)
