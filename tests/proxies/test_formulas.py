"""Each proxy against an independent computation (numpy / hand-written formulas / a second autograd path)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import models, proxies
from autokd.outputs import Outputs
from autokd.proxies.kd_ridge import loo_ridge_r2
from autokd.proxies.size import count_flops


# ------------------------------------------------------------------------------------------------ naswot
class TinyReluNet(nn.Module):
    """2 -> 3 (functional ReLU) -> 2 (nn.ReLU module, in place) -> 2."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(2, 3), nn.Linear(3, 2), nn.Linear(2, 2)
        self.act = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.l1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
            self.l1.bias.copy_(torch.tensor([0.0, -0.5, 0.25]))
            self.l2.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [-0.5, 1.0, 1.0]]))
            self.l2.bias.copy_(torch.tensor([0.1, -0.2]))

    def forward(self, x):
        return self.l3(self.act(self.l2(F.relu(self.l1(x)))))


def test_naswot_matches_hand_computed_hamming_kernel():
    net = TinyReluNet()
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.3], [0.5, -2.0], [2.0, 0.6]])
    w1, b1 = net.l1.weight.detach().numpy(), net.l1.bias.detach().numpy()
    w2, b2 = net.l2.weight.detach().numpy(), net.l2.bias.detach().numpy()
    xs = x.numpy()
    h1 = xs @ w1.T + b1
    h2 = np.maximum(h1, 0) @ w2.T + b2
    codes = np.concatenate([h1 > 0, h2 > 0], 1).astype(int)
    n, units = codes.shape
    k = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = units - np.sum(codes[i] != codes[j])
    sign, expected = np.linalg.slogdet(k)
    assert sign > 0  # the hand-built example is non-singular
    got = proxies.create("naswot")(net, None, (x, torch.zeros(4, dtype=torch.long)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_naswot_sees_functional_relus_of_zoo_models():
    from autokd.proxies.naswot import ReluCodes

    net = models.create("cnn", 10, in_channels=1, width=2, depth=2).eval()
    with torch.no_grad(), ReluCodes() as rec:
        out = net.forward_outputs(torch.randn(5, 1, 8, 8))
    assert len(rec.codes) == 2  # SmallCNN applies F.relu, never an nn.ReLU module
    for c, f in zip(rec.codes, out.feats, strict=True):
        assert torch.equal(c, (f > 0).flatten(1))


# ------------------------------------------------------------------------------------------------ synflow
class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 4, bias=False)
        self.bn = nn.BatchNorm1d(4)
        self.l2 = nn.Linear(4, 2, bias=False)
        with torch.no_grad():  # a BN that would change the result if it were not removed
            self.bn.weight.fill_(3.0)
            self.bn.running_var.fill_(4.0)
            self.bn.running_mean.fill_(-1.0)

    def forward(self, x):
        return self.l2(F.relu(self.bn(self.l1(x))))


def test_synflow_matches_hand_formula_on_two_linear_layers():
    net = TwoLayer()
    w1 = np.abs(net.l1.weight.detach().double().numpy())
    w2 = np.abs(net.l2.weight.detach().double().numpy())
    # R = 1ᵀ|W2||W1|1; ∂R/∂|W1|_ij = (1ᵀ|W2|)_i, ∂R/∂|W2|_ki = (|W1|1)_i
    expected = float((w1 * (np.ones(2) @ w2)[:, None]).sum() + (w2 * (w1 @ np.ones(3))[None, :]).sum())
    before = copy.deepcopy(net.state_dict())
    got = proxies.create("synflow")(net, None, (torch.randn(5, 3), torch.zeros(5, dtype=torch.long)))
    assert got == pytest.approx(expected, rel=1e-12)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # signs, BN, dtype untouched
    assert net.l1.weight.dtype == torch.float32 and isinstance(net.bn, nn.BatchNorm1d)


# ------------------------------------------------------------------------------------------------ gradients
def _linear_case():
    torch.manual_seed(3)
    net = nn.Linear(4, 3)
    x = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    w = net.weight.detach().double().numpy()
    b = net.bias.detach().double().numpy()
    xs = x.double().numpy()
    z = xs @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y.numpy()]
    dz = (p - onehot) / len(xs)  # ∂ mean-CE / ∂ logits
    gw = dz.T @ xs  # ∂L/∂W
    return net, x, y, w, z, dz, gw


def test_snip_grad_norm_fisher_match_hand_formulas_on_a_linear_model():
    net, x, y, w, z, dz, gw = _linear_case()
    batch = (x, y)
    assert proxies.create("snip")(net, None, batch) == pytest.approx(np.abs(w * gw).sum(), rel=1e-5)
    assert proxies.create("grad_norm")(net, None, batch) == pytest.approx(np.sqrt((gw**2).sum()), rel=1e-5)
    # fisher: the activation is the linear layer's output a = z, g = ∂L/∂a; Σ_c ½ mean_n (a g)²
    assert proxies.create("fisher")(net, None, batch) == pytest.approx(0.5 * ((z * dz) ** 2).mean(0).sum(),
                                                                        rel=1e-4)


def test_grasp_matches_an_explicit_hessian_vector_product():
    net, x, y, *_ = _linear_case()
    bias = net.bias.detach()

    def loss(weight):
        return F.cross_entropy(x @ weight.T + bias, y)

    w0 = net.weight.detach().clone()
    g = torch.func.grad(loss)(w0)
    h = torch.autograd.functional.hessian(loss, w0).reshape(w0.numel(), w0.numel())
    expected = float((-w0.flatten() * (h @ g.flatten())).sum())
    assert proxies.create("grasp")(net, None, (x, y)) == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_jacob_cov_matches_numpy():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(6, 5)
    jac = torch.autograd.functional.jacobian(lambda t: net(t).sum(1), x)  # (6, 6, 5)
    j = torch.stack([jac[i, i] for i in range(6)]).double().numpy()
    corr = np.corrcoef(j)
    lam = np.linalg.eigvalsh(corr)
    expected = -np.sum(np.log(lam + 1e-5) + 1.0 / (lam + 1e-5))
    got = proxies.create("jacob_cov")(net, None, (x, torch.zeros(6, dtype=torch.long)))
    assert got == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------------------------ zen
class ZenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.bn, self.l2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)

    def forward_outputs(self, x):
        f = F.relu(self.bn(self.l1(x)))
        return Outputs(logits=self.l2(f), feats=[f])


def test_zen_matches_its_formula():
    from autokd.proxies.zen import gaussian_init

    net = ZenNet()
    x = torch.randn(16, 4)
    got = proxies.create("zen")(net, None, (x, torch.zeros(16, dtype=torch.long)), seed=5)
    m = copy.deepcopy(net).train()
    torch.manual_seed(5)
    gaussian_init(m)
    z, eps = torch.randn(16, 4), torch.randn(16, 4)
    with torch.no_grad():
        pre = m.l1(z)
        f1 = m.forward_outputs(z).feats[0]
        f2 = m.forward_outputs(z + 0.01 * eps).feats[0]
    delta = (f1 - f2).abs().sum(1).mean().double()
    expected = math.log(float(delta)) + 0.5 * math.log(float(pre.double().var(0, unbiased=True).mean()))
    assert got == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------------ size
def test_params_and_flops_are_exact():
    net = models.create("cnn", 10, in_channels=1, width=2, depth=2)
    batch = (torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    # conv 1->2 (18) + BN (4) + conv 2->4 (72) + BN (8) + linear 4->10 (50)
    assert proxies.create("params")(net, None, batch) == 152
    # 2 FLOPs per MAC: conv1 2·(2·8·8·1·9) + conv2 2·(4·4·4·2·9) + linear 2·(4·10)
    assert proxies.create("flops")(net, None, batch) == 2304 + 2304 + 80
    assert count_flops(nn.Conv2d(3, 5, 3, padding=1, bias=False), (3, 6, 6)) == 2 * 5 * 6 * 6 * 3 * 9


# ------------------------------------------------------------------------------------------------ diswot
def _pair():
    torch.manual_seed(0)
    student = models.create("cnn", 10, in_channels=1, width=2)
    teacher = models.create("resnet", 10, in_channels=1, depth=8, width=4).eval()
    x = torch.randn(12, 1, 8, 8)
    y = torch.arange(12) % 10
    return student, teacher, x, y


def _normalised_rows(g: np.ndarray) -> np.ndarray:
    return np.stack([row / max(np.linalg.norm(row), 1e-12) for row in g])


def _semantic_by_autograd(model, x, y, train: bool) -> np.ndarray:
    """DisWOT's released form: the classifier weight's gradient after a CE backward."""
    m = copy.deepcopy(model).train(train)
    m.zero_grad()
    F.cross_entropy(m.forward_outputs(x).logits, y).backward()
    g = m.classifier.weight.grad.double().numpy()
    return _normalised_rows(g @ g.T)


def _relation_by_numpy(model, x, train: bool) -> np.ndarray:
    m = copy.deepcopy(model).train(train)
    with torch.no_grad():
        f = m.forward_outputs(x).feats[-1].double().numpy().reshape(len(x), -1)
    return _normalised_rows(f @ f.T)


def test_diswot_scores_match_the_formulas_written_another_way():
    student, teacher, x, y = _pair()
    sem = -np.linalg.norm(_semantic_by_autograd(student, x, y, True)
                          - _semantic_by_autograd(teacher, x, y, False))
    rel = -np.linalg.norm(_relation_by_numpy(student, x, True) - _relation_by_numpy(teacher, x, False))
    batch = (x, y)
    assert proxies.create("diswot_semantic")(student, teacher, batch) == pytest.approx(sem, rel=1e-5)
    assert proxies.create("diswot_relation")(student, teacher, batch) == pytest.approx(rel, rel=1e-5)
    assert proxies.create("diswot")(student, teacher, batch) == pytest.approx(sem + rel, rel=1e-5)
    # a student identical to the teacher (same weights, same BN mode) is at distance 0
    same = copy.deepcopy(teacher)
    assert proxies.create("diswot_relation").score(same.eval(), teacher, x, y) == pytest.approx(0.0, abs=1e-9)


def test_diswot_needs_a_teacher():
    from autokd.errors import ConfigError

    student, _, x, y = _pair()
    with pytest.raises(ConfigError, match="teacher"):
        proxies.create("diswot")(student, None, (x, y))


# ------------------------------------------------------------------------------------------------ kd_ridge
def test_kd_ridge_loo_matches_refitting_without_each_sample():
    rng = np.random.default_rng(0)
    feats = torch.tensor(rng.normal(size=(9, 5)))
    targets = torch.tensor(rng.random((9, 3)))
    lam = 0.1
    f = feats.numpy() / np.linalg.norm(feats.numpy(), axis=1, keepdims=True)
    yc = targets.numpy() - targets.numpy().mean(0)
    k = f @ f.T
    sq = 0.0
    for i in range(9):
        rest = [j for j in range(9) if j != i]
        alpha = np.linalg.solve(k[np.ix_(rest, rest)] + lam * np.eye(8), yc[rest])
        sq += float(((k[i, rest] @ alpha - yc[i]) ** 2).sum())
    expected = 1 - sq / float((yc**2).sum())
    assert loo_ridge_r2(feats, targets, lam) == pytest.approx(expected, rel=1e-9)


def test_kd_ridge_proxy_uses_last_stage_and_teacher_soft_targets():
    student, teacher, x, y = _pair()
    m = copy.deepcopy(student).train()
    with torch.no_grad():
        feat = m.forward_outputs(x).feats[-1]
        soft = (teacher.forward_outputs(x).logits.double() / 4.0).softmax(1)
    expected = loo_ridge_r2(feat, soft, 0.1)
    assert proxies.create("kd_ridge")(student, teacher, (x, y)) == pytest.approx(expected, rel=1e-6)
