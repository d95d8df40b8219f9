"""Corrections against the official code: FitNet's ConvReg regressor, AT's resolution-aware default weight, and
the official defaults of ReviewKD and CAT-KD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autokd import losses, models
from autokd.losses.base import DistillLoss
from autokd.models.connectors import HintRegressor
from autokd.outputs import Shapes


def _shapes(feats, in_hw=32):
    return Shapes(input_shape=(3, in_hw, in_hw), num_classes=100, feats=tuple(feats), embedding=feats[-1][0])


# ------------------------------------------------------------------------------------------------ FitNet
def test_fitnet_regressor_for_resnet32x4_to_resnet8x4_has_the_official_parameter_count():
    t = models.shapes(models.create("resnet32x4", 100), (3, 32, 32))
    s = models.shapes(models.create("resnet8x4", 100), (3, 32, 32))
    loss = losses.create("fitnet", student=s, teacher=t)
    assert loss.layer_pairs == [(2, 2)]  # CRD's / mdistiller's hint_layer = 2: 128 × 16 × 16 on both sides
    conv = loss.connectors[0].conv
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is not None
    # ConvReg: Conv2d(128, 128, kernel 1, bias) + BatchNorm2d(128): 128·128 + 128 + 2·128
    assert sum(p.numel() for p in loss.parameters()) == 128 * 128 + 128 + 2 * 128 == 16768


@pytest.mark.parametrize(
    "s_shape,t_shape,kind,kernel",
    [
        ((8, 16, 16), (12, 8, 8), nn.Conv2d, (3, 3)),  # student twice as large: 3×3 stride 2
        ((8, 4, 4), (12, 8, 8), nn.ConvTranspose2d, (4, 4)),  # half as large: 4×4 transposed, stride 2
        ((8, 6, 5), (12, 4, 4), nn.Conv2d, (3, 2)),  # larger: kernel (1 + 6 − 4, 1 + 5 − 4)
        ((8, 3, 3), (12, 8, 8), nn.Conv2d, (1, 1)),  # smaller, not half (the official code refuses): resize + 1×1
    ],
)
def test_hint_regressor_reaches_the_teachers_shape_the_convreg_way(s_shape, t_shape, kind, kernel):
    reg = HintRegressor(s_shape, t_shape)
    assert type(reg.conv) is kind and reg.conv.kernel_size == kernel
    out = reg(torch.randn(3, *s_shape))
    assert out.shape == (3, *t_shape) and (out >= 0).all()


def test_fitnet_value_is_mse_of_conv_bn_relu_by_hand():
    loss = losses.create("fitnet", student=_shapes([(4, 8, 8), (6, 6, 6)]), teacher=_shapes([(4, 8, 8), (5, 4, 4)]),
                         pairs=[(1, 1)])
    reg = loss.connectors[0]
    assert reg.conv.kernel_size == (3, 3) and reg.conv.stride == (1, 1)  # 6 -> 4: kernel 1 + 6 − 4
    torch.manual_seed(0)
    f_s, f_t = torch.randn(4, 6, 6, 6), torch.rand(4, 5, 4, 4)
    feats_s = [torch.zeros(4, 4, 8, 8), f_s]
    feats_t = [torch.zeros(4, 4, 8, 8), f_t]
    from autokd.outputs import Outputs

    value = loss(Outputs(torch.zeros(4, 100), feats=feats_s), Outputs(torch.zeros(4, 100), feats=feats_t), None)
    w, b = reg.conv.weight.detach().double().numpy(), reg.conv.bias.detach().double().numpy()
    x = f_s.double().numpy()
    conv = np.zeros((4, 5, 4, 4))
    for i in range(4):
        for j in range(4):
            conv[:, :, i, j] = np.einsum("ockl,nckl->no", w, x[:, :, i:i + 3, j:j + 3]) + b
    mean, var = conv.mean(axis=(0, 2, 3), keepdims=True), conv.var(axis=(0, 2, 3), keepdims=True)
    hint = np.maximum((conv - mean) / np.sqrt(var + 1e-5), 0)  # BN at init: γ = 1, β = 0; then ReLU
    assert value.item() == pytest.approx(((hint - f_t.double().numpy()) ** 2).mean(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ AT weight
def test_at_default_weight_is_1000_on_cifar_resnets_and_scales_with_the_compared_positions():
    cifar_t = models.shapes(models.create("resnet32x4", 100), (3, 32, 32))
    cifar_s = models.shapes(models.create("resnet8x4", 100), (3, 32, 32))
    at = losses.get("at")
    assert at.default_weight_for(cifar_s, cifar_t) == pytest.approx(1000.0)
    # digits: cnn teacher stages 8², 4², 2²; resnet8 student 8², 8², 4², 2²; auto pairs compare 4² and 2² maps
    t = models.shapes(models.create("cnn", 10, in_channels=1, width=32), (1, 8, 8))
    s = models.shapes(models.create("resnet", 10, in_channels=1, depth=8, width=8), (1, 8, 8))
    expected = 1000.0 * (1 / 1024 + 1 / 256 + 1 / 64) / (1 / 16 + 1 / 4)
    assert at.default_weight_for(s, t) == pytest.approx(expected) == pytest.approx(65.625)
    lo, hi = at.weight_range_for(s, t)
    assert (lo, hi) == pytest.approx((10.0 * 0.065625, 1.0e4 * 0.065625))
    # explicit pairs are honoured: one pair of 2×2 maps
    assert at.default_weight_for(s, t, [(2, 3)]) == pytest.approx(1000.0 * (21 / 1024) / (1 / 4))
    assert at.default_weight_for() == 1000.0  # no shapes: the reference weight


def test_at_loss_grows_as_the_inverse_number_of_positions_the_rule_compensates():
    # two unit attention maps with the same cosine at 4× the positions give a 4× smaller loss
    from autokd.losses.feature import at_loss

    torch.manual_seed(0)
    small_s, small_t = torch.rand(2, 3, 2, 2), torch.rand(2, 3, 2, 2)
    big_s = small_s.repeat_interleave(2, 2).repeat_interleave(2, 3)  # each position copied 4×: same cosine
    big_t = small_t.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert at_loss(small_s, small_t).item() == pytest.approx(4 * at_loss(big_s, big_t).item(), rel=1e-5)


def test_default_weight_for_is_the_class_default_for_shape_free_methods():
    s = _shapes([(4, 8, 8), (8, 4, 4)])
    for name in ("kd", "fitnet", "sp", "pkt", "review_kd", "kdsvd", "semckd"):
        cls = losses.get(name)
        assert cls.default_weight_for(s, s) == cls.default_weight
        assert cls.weight_range_for(s, s) == tuple(cls.weight_range)
    assert DistillLoss.default_weight == 1.0


# ------------------------------------------------------------------------------------------------ defaults
def test_official_defaults_of_review_kd_and_cat_kd():
    assert losses.get("review_kd").default_weight == 5.0  # official script and mdistiller, resnet32x4 -> 8x4
    cat = losses.get("cat_kd")
    assert cat.default_weight == 15.0 and cat.hparams["normalize"].default is False  # IF_NORMALIZE: False
    assert cat.hparams["pool_size"].default == 2
