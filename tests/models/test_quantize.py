"""Fake-quantized students (``student.quantize: {bits}``): values on the quantization grid, observers that move
only in train mode, and a 4-bit digits student that trains."""

from __future__ import annotations

import math

import pytest
import torch
from torch.ao.quantization import FakeQuantize

from autokd import data, models
from autokd.errors import ConfigError
from autokd.models.quantize import QuantConv2d, QuantLinear, calibrate, fake_quantize
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer, check_recipe, measure_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _quantized(bits: int, name: str = "cnn", **kw):
    torch.manual_seed(0)
    m = models.create(name, 10, in_channels=1, **kw)
    fake_quantize(m, bits)
    calibrate(m, torch.randn(64, 1, 8, 8))
    return m.eval()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_layer_inputs_and_weights_lie_on_the_grid(bits):
    m = _quantized(bits, width=4, convs=2)
    seen: dict[FakeQuantize, torch.Tensor] = {}
    handles = [fq.register_forward_hook(lambda mod, a, out: seen.__setitem__(mod, out))
               for fq in m.modules() if isinstance(fq, FakeQuantize)]
    x = torch.randn(16, 1, 8, 8) * 1.5  # also values outside the calibrated range: clamped to the grid's ends
    with torch.no_grad():
        m(x)
    for h in handles:
        h.remove()
    layers = [mod for mod in m.modules() if isinstance(mod, (QuantConv2d, QuantLinear))]
    assert len(layers) == 7 and len(seen) == 14  # 3 blocks x 2 convs + classifier, each: input and weight
    for layer in layers:
        # activations: one scale s and zero point z per tensor; values (q - z)·s with q in 0..2^b - 1
        a_fq = layer.input_fake_quant
        q = seen[a_fq] / a_fq.scale + a_fq.zero_point
        assert torch.allclose(q, q.round(), atol=1e-3) and q.min() >= -1e-3 and q.max() <= 2**bits - 1 + 1e-3
        assert len(torch.unique(q.round())) <= 2**bits
        # weights: per output channel, symmetric: integers in [-2^(b-1), 2^(b-1) - 1], zero point 0
        w_fq = layer.weight_fake_quant
        shape = [-1] + [1] * (layer.weight.dim() - 1)
        qw = seen[w_fq] / w_fq.scale.view(shape)
        assert (w_fq.zero_point == 0).all()
        assert torch.allclose(qw, qw.round(), atol=1e-3)
        assert qw.min() >= -(2 ** (bits - 1)) - 1e-3 and qw.max() <= 2 ** (bits - 1) - 1 + 1e-3
        # the scale covers the channel's largest |weight| (symmetric min/max observer)
        w_max = layer.weight.detach().abs().flatten(1).max(1).values
        expected = w_max / ((2**bits - 1) / 2)
        torch.testing.assert_close(w_fq.scale, expected, rtol=1e-4, atol=1e-6)


def test_post_relu_inputs_get_zero_point_zero_and_max_over_levels():
    m = _quantized(4, width=4)
    conv = m.blocks[1][0]  # its input is block 0's (pooled) ReLU output
    assert int(conv.input_fake_quant.zero_point) == 0
    obs = conv.input_fake_quant.activation_post_process
    assert math.isclose(float(conv.input_fake_quant.scale), float(obs.max_val) / 15, rel_tol=1e-5)


def test_observers_move_in_train_mode_only():
    m = _quantized(4, width=4)
    conv = m.blocks[0][0]
    before = conv.input_fake_quant.scale.clone()
    with torch.no_grad():
        m.eval()(torch.randn(8, 1, 8, 8) * 10)
        assert torch.equal(conv.input_fake_quant.scale, before)
        m.train()(torch.randn(8, 1, 8, 8) * 10)
    assert not torch.equal(conv.input_fake_quant.scale, before)


def test_parameters_are_kept_and_fp_state_roundtrips():
    torch.manual_seed(0)
    m = models.create("cnn", 10, in_channels=1, width=4)
    w = m.blocks[0][0].weight
    fake_quantize(m, 8)
    assert m.blocks[0][0].weight is w and m.quantize_bits == 8
    calibrate(m, torch.randn(32, 1, 8, 8))
    m2 = fake_quantize(models.create("cnn", 10, in_channels=1, width=4), 8)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(m2.eval()(x), m.eval()(x))
    assert measure_model(m, (1, 8, 8))["flops"] == measure_model(models.create("cnn", 10, 1, width=4), (1, 8, 8))["flops"]


def test_recipe_field_checked():
    assert check_recipe(Recipe(student=StudentSpec(name="cnn", quantize={"bits": 4}))).student.quantize.bits == 4
    with pytest.raises(ConfigError, match=r"student.quantize: bits must be in \[2, 8\], got 16"):
        check_recipe(Recipe(student=StudentSpec(name="cnn", quantize={"bits": 16})))
    with pytest.raises(ConfigError, match="quantize.bits"):
        Recipe.from_dict({"student": {"name": "cnn", "quantize": {"bits": 0}}})


def test_a_4bit_digits_student_trains_with_a_finite_loss():
    torch.manual_seed(0)
    bundle = data.create("digits", seed=0, val_fraction=0.2, test_fraction=0.3, train_fraction=0.5)
    teacher = Trainer(bundle, device="cpu").fit(
        Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}), optim=OptimSpec(epochs=2, batch_size=64)),
        measure=False).student.eval()
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}, quantize={"bits": 4}), ce_weight=1.0,
                    terms=[TermSpec(loss="quantization_mimic", weight=0.05)],
                    optim=OptimSpec(epochs=3, batch_size=64))
    fit = Trainer(bundle, teacher=teacher, device="cpu").fit(recipe, measure=False)
    losses = [h["train_loss"] for h in fit.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert fit.metrics["val_acc"] > 0.2  # ten classes: above chance after 3 epochs
    assert isinstance(fit.student.blocks[0][0], QuantConv2d) and fit.student.quantize_bits == 4
