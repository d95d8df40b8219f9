"""Tests every registered loss (parametrised over the registry, so new losses are covered automatically)."""

from __future__ import annotations

import pytest
import torch

from autokd import losses, models
from autokd.errors import ConfigError, UnknownNameError
from autokd.outputs import Outputs

IN_SHAPE = (1, 8, 8)
TOKEN_SHAPE = (12,)  # losses declaring inputs = "tokens" run on text models over token ids


def _pair(name=None):
    torch.manual_seed(0)
    needs = losses.get(name).needs if name else frozenset()
    if needs & {"heads", "attention"}:  # transformer methods: ViT student with two distillation tokens
        s = models.create("vit", 10, in_channels=1, patch_size=2, depth=2, width=16, heads=2, img_size=8,
                          distill_tokens=2)
        t = models.create("vit", 10, in_channels=1, patch_size=2, depth=3, width=24, heads=4, img_size=8)
        return s, t
    if name is not None and losses.get(name).inputs == "tokens":
        s = models.create("textcnn", 10, vocab_size=30, embed_dim=4, channels=8)
        t = models.create("textcnn", 10, vocab_size=30, embed_dim=16, channels=16)
        return s, t
    s = models.create("cnn", 10, in_channels=1, width=4)
    t = models.create("cnn", 10, in_channels=1, width=8)
    return s, t


def _inputs(name, n=16):
    if losses.get(name).inputs == "tokens":
        return torch.randint(0, 30, (n, *TOKEN_SHAPE)), TOKEN_SHAPE
    return torch.randn(n, *IN_SHAPE), IN_SHAPE


def _helper_teacher(name, kwargs=None, epochs=None):
    return models.create(name, 10, in_channels=1, **(kwargs or {})).eval()


def _build(name, s, t):
    cls = losses.get(name)
    kw = {}
    if cls.level != "logit" or "feats" in cls.needs:
        kw["pairs"] = None
    shape = _inputs(name, 1)[1]
    loss = losses.create(name, student=models.shapes(s, shape), teacher=models.shapes(t, shape), **kw)
    loss.setup(teacher_model=t, student_model=s, num_samples=16, num_classes=10, input_shape=shape,
               cache_dir=None, helper_teacher=_helper_teacher)
    return loss


def _scaled(out: Outputs, scale: float) -> Outputs:
    return Outputs(out.logits * scale, out.feats, out.preacts, out.embedding)


@pytest.mark.parametrize("name", losses.names())
def test_scalar_finite_and_teacher_gets_no_grad(name):
    s, t = _pair(name)
    x, _ = _inputs(name)
    y = torch.randint(0, 10, (16,))
    loss = _build(name, s, t)
    t_out = t.forward_outputs(x)  # NOT detached: the loss must not push gradients into the teacher
    for p in t.parameters():
        p.grad = None
    value = loss(s.forward_outputs(x), t_out, y, index=torch.arange(16), x=x)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert all(p.grad is None for p in t.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters())


def _heads(z):
    """Every head a token-distillation loss may read, all equal to ``z`` (plain logit losses ignore them)."""
    return {"cls": z, "dist_0": z, "dist_1": z}


@pytest.mark.parametrize("name", [n for n in losses.names() if losses.get(n).level == "logit"])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("magnitude", [1.0, 100.0])
def test_logit_losses_stable_at_extremes(name, temperature, magnitude):
    cls = losses.get(name)
    kw = {"temperature": temperature} if "temperature" in cls.hparams else {}
    loss = losses.create(name, **kw)
    if "helper_teachers" in cls.needs:  # CiT: an extra teacher on the 8-pixel inputs below
        loss.setup(helper_teacher=lambda *a: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 10)))
    x = torch.randn(8, 8)
    torch.manual_seed(1)
    s = (torch.randn(8, 10) * magnitude).requires_grad_(True)
    t = torch.randn(8, 10) * magnitude
    y = torch.randint(0, 10, (8,))
    v = loss(Outputs(s, heads=_heads(s)), Outputs(t), y, x=x * magnitude)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(s.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s2 = (torch.randn(8, 10) * magnitude).bfloat16().requires_grad_(True)
        v2 = loss(Outputs(s2, heads=_heads(s2)), Outputs(t.bfloat16()), y, x=x * magnitude)
    v2.backward()
    assert torch.isfinite(v2) and torch.isfinite(s2.grad.float()).all()


@pytest.mark.parametrize("name", losses.names())
def test_declares_paper_and_hparams(name):
    cls = losses.get(name)
    assert cls.paper and cls.name == name
    assert cls.inputs in ("any", "tokens")
    for k, h in cls.hparams.items():
        assert k == k.lower() and " " not in k
        if h.kind in ("float", "int"):
            assert h.low <= h.default <= h.high, (k, h)


def test_unknown_loss_suggests_close_match():
    with pytest.raises(UnknownNameError, match="did you mean 'kd'"):
        losses.create("kdd")


def test_unknown_hparam_names_allowed():
    with pytest.raises(ConfigError, match="no hyper-parameter 'temp'.*allowed: temperature"):
        losses.create("kd", temp=3)
