"""Jacobian matching: input-gradients against finite differences and closed forms on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autokd import losses, models
from autokd.errors import ConfigError
from autokd.losses.jacobian import input_gradient
from autokd.outputs import Outputs, Shapes

SH = Shapes((1, 2, 3), 4, feats=((2, 2, 3),), embedding=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _linear(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()


def test_input_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64)
    classes = torch.tensor([2, 0, 3])
    grad, _ = input_gradient(model, x, classes, create_graph=False)
    eps = 1e-6
    for b in range(3):
        for k in range(6):
            d = torch.zeros(6, dtype=torch.float64)
            d[k] = eps
            d = d.view(1, 2, 3)
            with torch.no_grad():
                up = model((x[b] + d)[None])[0, classes[b]]
                down = model((x[b] - d)[None])[0, classes[b]]
            assert grad[b].flatten()[k].item() == pytest.approx(((up - down) / (2 * eps)).item(), abs=1e-7)


def test_loss_on_linear_models_is_the_distance_of_normalised_weight_rows():
    s, t = _linear(0), _linear(1)
    x = torch.randn(5, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    ws, wt = s[1].weight.detach().numpy(), t[1].weight.detach().numpy()
    top = t(x).argmax(1).numpy()

    def expected(classes):
        rows_s = ws[classes] / np.linalg.norm(ws[classes], axis=1, keepdims=True)
        rows_t = wt[classes] / np.linalg.norm(wt[classes], axis=1, keepdims=True)
        return ((rows_s - rows_t) ** 2).sum(1).mean()

    for target, classes in (("teacher_top", top), ("label", y.numpy())):
        loss = losses.create("jacobian", student=SH, teacher=SH, target=target)
        loss.setup(teacher_model=t, student_model=s)
        value = loss(Outputs(s(x)), Outputs(t(x)), y, x=x)
        assert value.item() == pytest.approx(expected(classes), rel=1e-9)


def test_student_trains_through_its_input_gradient_and_the_teacher_gets_nothing():
    torch.manual_seed(0)
    t = models.create("cnn", num_classes=10, in_channels=1, width=4)  # train mode, grads on: worst case
    s = models.create("cnn", num_classes=10, in_channels=1, width=2)
    shape = (1, 8, 8)
    loss = losses.create("jacobian", student=models.shapes(s, shape), teacher=models.shapes(t, shape))
    loss.setup(teacher_model=t, student_model=s)
    x = torch.randn(6, *shape)
    s_out, t_out = s.forward_outputs(x), t.forward_outputs(x)
    stats = [{n: b.clone() for n, b in m.named_buffers()} for m in (s, t)]
    value = loss(s_out, t_out, torch.zeros(6, dtype=torch.long), x=x)
    for m, before in zip((s, t), stats, strict=True):
        for n, b in m.named_buffers():
            assert torch.equal(before[n], b), n  # the extra forwards leave BatchNorm statistics alone
    assert s.training and t.training  # modes restored
    value.backward()
    assert all(p.grad is None for p in t.parameters())
    assert s.blocks[0][0].weight.grad.abs().sum() > 0
    assert x.grad is None and not x.requires_grad


def test_batch_statistics_mode_is_a_per_sample_jacobian():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)
    ).double()
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64)
    classes = torch.tensor([0, 1, 2, 0])
    grad, _ = input_gradient(model, x, classes, create_graph=False, bn_stats="batch")
    assert model.training and float(model[2].running_mean.abs().sum()) == 0.0
    # reference: the same function with the batch's statistics frozen, differentiated sample by sample
    h = model[1](x.flatten(1)).detach()
    mean, var = h.mean(0), h.var(0, unbiased=False)
    bn = model[2]

    def f(xb):
        z = (model[1](xb.flatten(1)) - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        return model[4](torch.tanh(z))

    for b in range(4):
        xb = x[b : b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xb)[0, classes[b]], xb)
        torch.testing.assert_close(grad[b], g[0])


def test_needs_input_and_models():
    loss = losses.create("jacobian", student=SH, teacher=SH)
    with pytest.raises(ConfigError, match="setup"):
        loss(Outputs(torch.zeros(1, 4)), Outputs(torch.zeros(1, 4)), None, x=torch.zeros(1, 1, 2, 3))
    with pytest.raises(ConfigError, match="input"):
        loss(Outputs(torch.zeros(1, 4)), Outputs(torch.zeros(1, 4)), None)
