"""Independent references for the logit-level losses: each value is recomputed by hand (plain python /
numpy) or by writing the formula a second, different way; plus the invariances and schedules each method
promises."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autokd import losses
from autokd.losses import logit as L
from autokd.outputs import Outputs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tensors are tiny: intra-op threads only add wake-up latency (seconds on a loaded 2-core box)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _softmax(row, T=1.0):
    m = max(row)
    e = [math.exp((v - m) / T) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _kl(q, p):
    """KL(q || p) for python lists of probabilities."""
    return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True) if a > 0)


def _call(loss, s, t, y=None):
    return loss(Outputs(s), Outputs(t), y)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 5, generator=g) * 2
    t = torch.randn(6, 5, generator=g) * 3
    y = torch.randint(0, 5, (6,), generator=g)
    return s, t, y


# --- defaults and ranges as documented ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("logit_mse", {}),
        ("noisy_teacher", {"temperature": 4.0, "sigma": 0.1, "alpha": 0.5}),
        ("dkd", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20}),
        ("dist", {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}),
        ("logit_std", {"temperature": 2.0}),
        ("norm_kd", {"temperature": 2.0}),
        ("dtkd", {"alpha": 3.0, "beta": 1.0, "temperature": 4.0, "warmup": 20, "sharpness": "max"}),
        ("ctkd", {"mode": "global", "min_temperature": 1.0, "temperature_range": 20.0, "lambda_min": 0.0,
                  "lambda_max": 1.0, "curriculum_epochs": 10}),
        ("mlkd", {"temperature": 4.0}),
        ("tf_kd", {"mode": "virtual", "temperature": 20.0, "correct_prob": 0.99, "multiplier": 1.0}),
        ("annealing_kd", {"max_temperature": 10, "phase1_fraction": 2.0 / 3.0}),
    ],
)
def test_defaults(name, expected):
    cls = losses.get(name)
    assert {k: h.default for k, h in cls.hparams.items()} == expected
    assert cls.level == "logit" and cls.__doc__ and cls.paper
    if name == "dkd":
        assert (cls.hparams["beta"].low, cls.hparams["beta"].high) == (1.0, 10.0)


# --- logit_mse ------------------------------------------------------------------------------------------
def test_logit_mse_hand_value_and_zero_for_equal(batch):
    s, t, _ = batch
    got = _call(losses.create("logit_mse"), s, t).item()
    assert got == pytest.approx(float(np.mean((_np(s) - _np(t)) ** 2)), rel=1e-6)
    assert _call(losses.create("logit_mse"), t, t.clone()).item() == 0.0


# --- noisy_teacher --------------------------------------------------------------------------------------
def test_noisy_teacher_eval_is_deterministic_kd(batch):
    s, t, _ = batch
    loss = losses.create("noisy_teacher", temperature=3.0, sigma=0.5, alpha=1.0).eval()
    a, b = _call(loss, s, t), _call(loss, s, t)
    assert torch.equal(a, b)
    assert torch.allclose(a, _call(losses.create("kd", temperature=3.0), s, t), atol=1e-7)


def test_noisy_teacher_training_noise():
    s, t = torch.randn(8, 10), torch.randn(8, 10) * 3
    loss = losses.create("noisy_teacher", temperature=2.0, sigma=0.5, alpha=1.0).train()
    kd = _call(losses.create("kd", temperature=2.0), s, t)
    a, b = _call(loss, s, t), _call(loss, s, t)
    assert not torch.equal(a, b) and not torch.allclose(a, kd)
    # alpha = 0 (never perturb) is plain KD even in training mode
    assert torch.allclose(_call(losses.create("noisy_teacher", temperature=2.0, alpha=0.0), s, t), kd)


def test_perturb_logits_statistics():
    g = torch.Generator().manual_seed(0)
    z = torch.full((4000, 10), 2.0)
    out = L.perturb_logits(z, sigma=0.3, alpha=0.25, generator=g)
    rel = out / z - 1.0  # ξ where perturbed, 0 elsewhere
    perturbed = rel.abs().sum(1) > 0
    assert perturbed.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert rel[perturbed].std().item() == pytest.approx(0.3, rel=0.05)
    assert rel[~perturbed].abs().max().item() == 0.0


# --- dkd ------------------------------------------------------------------------------------------------
def _dkd_by_loops(s, t, y, alpha, beta, T):
    tckd = nckd = 0.0
    for rs, rt, gt in zip(s.tolist(), t.tolist(), y.tolist(), strict=True):
        ps, pt = _softmax(rs, T), _softmax(rt, T)
        tckd += _kl([pt[gt], 1 - pt[gt]], [ps[gt], 1 - ps[gt]])
        others = [k for k in range(len(rs)) if k != gt]
        qs = [ps[k] / (1 - ps[gt]) for k in others]
        qt = [pt[k] / (1 - pt[gt]) for k in others]
        nckd += _kl(qt, qs)
    n = len(y)
    return alpha * tckd / n * T * T + beta * nckd / n * T * T


def test_dkd_matches_loops_over_classes(batch):
    s, t, y = batch
    loss = losses.create("dkd", alpha=0.7, beta=3.0, temperature=2.0, warmup=1)
    got = _call(loss, s, t, y).item()
    assert got == pytest.approx(_dkd_by_loops(s, t, y, 0.7, 3.0, 2.0), rel=1e-5)


def test_dkd_warmup_ramp(batch):
    s, t, y = batch
    loss = losses.create("dkd", warmup=5)
    full = L.dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    values = []
    for epoch in range(8):
        loss.set_progress(epoch, 50)
        values.append(_call(loss, s, t, y))
    # mdistiller's min(epoch/warmup, 1) with its 1-based epoch: (e+1)/5 for our 0-based e, then 1
    for epoch, v in enumerate(values):
        assert torch.allclose(v, min((epoch + 1) / 5, 1.0) * full, rtol=1e-6)
    steps = [(values[i + 1] - values[i]).item() for i in range(4)]
    assert steps == pytest.approx([full.item() / 5] * 4, rel=1e-5)  # linear
    assert L.warmup_weight(0, 0) == 1.0


def test_dkd_finite_where_prob_sum_log_is_not():
    s = torch.tensor([[3000.0, -3000.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 3000.0, -3000.0]])
    y = torch.tensor([0])
    v = L.dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(s.grad).all()
    # the probability-sum-then-log form is not finite here: our log-sum-exp form is the safe equivalent
    ps = F.softmax(s.detach(), 1)
    assert not torch.isfinite(torch.log(torch.stack([ps[0, 1:].sum(), ps[0, 0]]))).all()


# --- dist -----------------------------------------------------------------------------------------------
def test_dist_matches_numpy_corrcoef(batch):
    s, t, _ = batch
    T, beta, gamma = 4.0, 2.0, 0.5
    ys, yt = _np(F.softmax(s / T, 1)), _np(F.softmax(t / T, 1))
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(ys.shape[0])])
    intra = 1 - np.mean([np.corrcoef(ys[:, k], yt[:, k])[0, 1] for k in range(ys.shape[1])])
    expected = T * T * (beta * inter + gamma * intra)
    got = _call(losses.create("dist", beta=beta, gamma=gamma, temperature=T), s, t).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(_call(losses.create("dist"), t, t.clone()).item()) < 1e-6


# --- logit_std ------------------------------------------------------------------------------------------
def _kd_np(s, t, T):
    return sum(_kl(_softmax(rt, T), _softmax(rs, T)) for rs, rt in zip(s, t, strict=True)) / len(s) * T * T


def test_logit_std_hand_value_and_invariances(batch):
    s, t, _ = batch
    T = 2.0
    zs = ((_np(s) - _np(s).mean(1, keepdims=True)) / _np(s).std(1, ddof=1, keepdims=True)).tolist()
    zt = ((_np(t) - _np(t).mean(1, keepdims=True)) / _np(t).std(1, ddof=1, keepdims=True)).tolist()
    loss = losses.create("logit_std", temperature=T)
    base = _call(loss, s, t)
    assert base.item() == pytest.approx(_kd_np(zs, zt, T), rel=1e-5)
    g = torch.Generator().manual_seed(1)
    shift_s, shift_t = torch.randn(6, 1, generator=g) * 10, torch.randn(6, 1, generator=g) * 10
    scale_s, scale_t = torch.rand(6, 1, generator=g) * 5 + 0.1, torch.rand(6, 1, generator=g) * 5 + 0.1
    moved = _call(loss, s * scale_s + shift_s, t * scale_t + shift_t)
    assert torch.allclose(moved, base, rtol=1e-4)
    # a student that is an affine copy of the teacher has nothing left to learn
    assert _call(loss, 3 * t - 7, t).item() < 1e-6


# --- norm_kd --------------------------------------------------------------------------------------------
def test_norm_kd_hand_value_and_student_scale_invariance(batch):
    s, t, _ = batch
    tn = 1.5
    total = 0.0
    for rs, rt in zip(_np(s), _np(t), strict=True):
        ts, tt = rs.std(ddof=1) * tn, rt.std(ddof=1) * tn
        total += _kl(_softmax((rt / tt).tolist()), _softmax((rs / ts).tolist())) * tt * tt
    loss = losses.create("norm_kd", temperature=tn)
    got = _call(loss, s, t)
    assert got.item() == pytest.approx(total / len(s), rel=1e-5)
    # each model is normalised by its own std: a per-sample shift/scale of the student changes nothing
    assert torch.allclose(_call(loss, s * 4.0 - 2.0, t), got, rtol=1e-4)
    # ... while the teacher's std sets the T² factor: scaling the teacher by a scales the loss by a²
    assert torch.allclose(_call(loss, s, 3.0 * t), 9.0 * got, rtol=1e-4)


# --- dtkd -----------------------------------------------------------------------------------------------
def _dtkd_np(s, t, alpha, beta, tau, sharp):
    out = 0.0
    for rs, rt in zip(s.tolist(), t.tolist(), strict=True):
        xs, xt = sharp(rs), sharp(rt)
        ts, tt = 2 * xs / (xs + xt) * tau, 2 * xt / (xs + xt) * tau
        out += _kl(_softmax([v / tt for v in rt]), _softmax([v / ts for v in rs])) * ts * tt
    return alpha * out / len(s) + beta * _kd_np(s.tolist(), t.tolist(), tau)


def test_dtkd_matches_hand_computation():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(5, 7, generator=g) + 2.0  # positive maxima: the regime the official formula is for
    t = torch.randn(5, 7, generator=g) * 3 + 4.0
    loss = losses.create("dtkd", alpha=2.0, beta=0.5, temperature=3.0, warmup=1)
    assert _call(loss, s, t).item() == pytest.approx(_dtkd_np(s, t, 2.0, 0.5, 3.0, max), rel=1e-5)
    lse = losses.create("dtkd", alpha=2.0, beta=0.5, temperature=3.0, warmup=1, sharpness="logsumexp")
    expected = _dtkd_np(s, t, 2.0, 0.5, 3.0, lambda r: math.log(sum(math.exp(v) for v in r)))
    assert _call(lse, s, t).item() == pytest.approx(expected, rel=1e-5)
    ts, tt = L.dtkd_temperatures(s, t, 3.0)
    assert torch.allclose(ts + tt, torch.full_like(ts, 6.0))  # ±δ around the base temperature
    # warm-up as DKD's
    loss_w = losses.create("dtkd", warmup=4)
    loss_w.set_progress(1, 10)
    full = L.dtkd_loss(s, t, 3.0, 1.0, 4.0)
    assert torch.allclose(_call(loss_w, s, t), 0.5 * full)


def test_dtkd_non_positive_max_stays_finite():
    s = torch.full((2, 4), -3.0, requires_grad=True)
    t = torch.randn(2, 4)
    v = L.dtkd_loss(s, t, 3.0, 1.0, 4.0)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(s.grad).all()


# --- ctkd -----------------------------------------------------------------------------------------------
def test_ctkd_lambda_cosine_curriculum():
    f = L.ctkd_lambda
    assert f(4, 0.0, 1.0, 10) == pytest.approx(0.5)  # official epoch 5 of 10
    assert f(9, 0.0, 1.0, 10) == pytest.approx(1.0) and f(30, 0.2, 1.0, 10) == pytest.approx(1.0)
    assert f(0, 0.0, 1.0, 10) == pytest.approx((1 - math.cos(math.pi / 10)) / 2)
    # the official CosineDecay(max_value=0, min_value=-1) value is exactly -lambda
    for i in range(1, 11):
        official = (math.cos(i * math.pi / 10) + 1.0) * 0.5 * (0 - (-1)) + (-1)
        assert f(i - 1, 0.0, 1.0, 10) == pytest.approx(-official)


def test_ctkd_global_grl_flips_the_temperature_gradient(batch):
    s, t, _ = batch
    loss = losses.create("ctkd")
    loss.set_progress(4, 100)
    lam = loss.lambda_
    assert lam == pytest.approx(0.5)
    s1 = s.clone().requires_grad_(True)
    _call(loss, s1, t).backward()
    # the same loss written without any GRL: T = 1 + 20 sigmoid(p), KD(T) batch-mean × T²
    p = torch.ones(1, requires_grad=True)
    s2 = s.clone().requires_grad_(True)
    T = 1.0 + 20.0 * torch.sigmoid(p)
    ref = sum(
        (F.softmax(t[i] / T, 0) * (F.log_softmax(t[i] / T, 0) - F.log_softmax(s2[i] / T, 0))).sum()
        for i in range(len(s))
    ) / len(s) * T**2
    ref = ref.squeeze()
    ref.backward()
    assert loss.global_t.grad.item() == pytest.approx(-lam * p.grad.item(), rel=2e-3)  # float32 cancellation
    assert p.grad.abs().item() > 0
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)  # the student is not reversed


def test_ctkd_instance_mode_parameters_and_reversal(batch):
    s, t, _ = batch
    loss = losses.create("ctkd", mode="instance")
    assert loss.mlp is None
    loss.setup(num_classes=5)
    names = {n for n, _ in loss.named_parameters()}
    assert names and all(n.startswith("mlp.") for n in names)
    assert set(loss.state_dict()) == names
    loss.set_progress(2, 10)
    lam = loss.lambda_
    ref_mlp = copy.deepcopy(loss.mlp)
    _call(loss, s, t).backward()
    raw = ref_mlp(torch.cat([t, s], 1))
    temp = 1.0 + 20.0 * torch.sigmoid(raw)
    kl = (F.softmax(t / temp, 1) * (F.log_softmax(t / temp, 1) - F.log_softmax(s / temp, 1))).sum(1)
    (kl * temp.squeeze(1) ** 2).mean().backward()
    for p, q in zip(loss.mlp.parameters(), ref_mlp.parameters(), strict=True):
        assert torch.allclose(p.grad, -lam * q.grad, rtol=1e-4, atol=1e-6)
    # built from the student's Shapes at construction (so an optimiser created right after sees it)
    from autokd.outputs import Shapes

    built = losses.create("ctkd", mode="instance", student=Shapes((1, 8, 8), num_classes=7))
    assert built.mlp is not None and built.mlp[0].in_features == 14


# --- mlkd -----------------------------------------------------------------------------------------------
def test_mlkd_matches_official_structure():
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g) * 2
    S, Tt = _np(s), _np(t)

    def sm(x, T):
        e = np.exp((x - x.max(1, keepdims=True)) / T)
        return e / e.sum(1, keepdims=True)

    pt1 = sm(Tt, 1.0)
    conf = pt1.max(1)
    mask = (conf <= np.percentile(conf, 50)).astype(float)
    cconf = pt1.sum(0)
    cmask = (cconf <= np.percentile(cconf, 50)).astype(float)
    n, k = S.shape
    kd_weak = kd_strong = cc_weak = bc_weak = 0.0
    for T in (4.0, 3.0, 5.0, 2.0, 6.0):
        ps, pt = sm(S, T), sm(Tt, T)
        kd = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), 1)) * T * T
        cc = np.sum((pt.T @ pt - ps.T @ ps) ** 2) / k
        bc = np.sum((pt @ pt.T - ps @ ps.T) ** 2) / n
        kd_weak += np.mean(kd * mask)  # the official (scalar * mask).mean()
        kd_strong += kd
        cc_weak += np.mean(cc * cmask)
        bc_weak += np.mean(bc * mask)
    expected = kd_weak + kd_strong + cc_weak + bc_weak
    got = _call(losses.create("mlkd"), s, t).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(_call(losses.create("mlkd"), t, t.clone()).item()) < 1e-5


# --- tf_kd ----------------------------------------------------------------------------------------------
def test_tf_kd_virtual_distribution_sums_to_one():
    y = torch.tensor([0, 3, 2])
    p = L.virtual_teacher(y, 5, 0.9)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert torch.allclose(p[torch.arange(3), y], torch.full((3,), 0.9))
    assert torch.allclose(p[0, 1:], torch.full((4,), 0.025))
    assert torch.allclose(F.softmax(p / 20.0, 1).sum(1), torch.ones(3))


def test_tf_kd_virtual_hand_value(batch):
    s, t, y = batch
    T, a, m = 10.0, 0.95, 7.0
    total = 0.0
    for rs, gt in zip(s.tolist(), y.tolist(), strict=True):
        pd = [a if c == gt else (1 - a) / 4 for c in range(5)]
        total += _kl(_softmax(pd, T), _softmax(rs))
    expected = total / (6 * 5) * m  # official nn.KLDivLoss(): mean over N*K
    loss = losses.create("tf_kd", temperature=T, correct_prob=a, multiplier=m)
    assert _call(loss, s, t * 1e6, y).item() == pytest.approx(expected, rel=1e-5)  # teacher ignored


def test_tf_kd_self_is_kd_over_k_times_multiplier(batch):
    s, t, y = batch
    got = _call(losses.create("tf_kd", mode="self", temperature=6.0, multiplier=50.0), s, t, y)
    kd = _call(losses.create("kd", temperature=6.0), s, t)
    assert torch.allclose(got, kd / 5 * 50.0, rtol=1e-5)


# --- annealing_kd ---------------------------------------------------------------------------------------
def _official_factors(e1, tau):
    out, T = [], 1
    for epoch in range(e1):
        if epoch % int(e1 / tau) == 0 and epoch > 0:
            T += 1
        out.append(T / tau)
    return out


@pytest.mark.parametrize("total, frac, tau", [(30, 2 / 3, 10), (300, 2 / 3, 10), (40, 0.5, 4), (12, 0.75, 3)])
def test_annealing_factor_schedule(total, frac, tau):
    e1 = round(frac * total)
    got = [L.annealing_factor(e, total, tau, frac) for e in range(total)]
    assert got[:e1] == pytest.approx(_official_factors(e1, tau))
    assert got[0] == pytest.approx(1 / tau) and got[e1 - 1] == pytest.approx(1.0)
    assert all(f is None for f in got[e1:])
    assert all(a <= b for a, b in zip(got[: e1 - 1], got[1:e1], strict=True))


def test_annealing_kd_values_per_phase(batch):
    s, t, _ = batch
    loss = losses.create("annealing_kd", max_temperature=5, phase1_fraction=0.5)
    loss.set_progress(3, 20)  # phase 1: E1 = 10, step 2 -> T = 2, factor 0.4
    assert loss.factor == pytest.approx(0.4)
    expected = float(np.mean((_np(s) - 0.4 * _np(t)) ** 2))
    assert _call(loss, s, t).item() == pytest.approx(expected, rel=1e-6)
    loss.set_progress(10, 20)  # phase 2: zero, still backward-able
    s1 = s.clone().requires_grad_(True)
    v = _call(loss, s1, t)
    v.backward()
    assert v.item() == 0.0 and torch.count_nonzero(s1.grad) == 0


# --- a few SGD steps on the student's logits lower each loss -------------------------------------------
@pytest.mark.parametrize(
    "name, kw, epoch",
    [
        ("logit_mse", {}, 0),
        ("noisy_teacher", {}, 0),
        ("dkd", {"warmup": 1}, 0),
        ("dist", {"temperature": 4.0}, 0),
        ("logit_std", {}, 0),
        ("norm_kd", {}, 0),
        ("dtkd", {"warmup": 1}, 0),
        ("ctkd", {}, 0),
        ("ctkd", {"mode": "instance"}, 0),
        ("mlkd", {}, 0),
        ("tf_kd", {}, 0),
        ("tf_kd", {"mode": "self", "temperature": 4.0}, 0),
        ("annealing_kd", {}, 0),
    ],
)
def test_sgd_on_student_logits_lowers_the_loss(name, kw, epoch):
    g = torch.Generator().manual_seed(11)
    t = torch.randn(16, 10, generator=g) * 3 + 1.0
    y = t.argmax(1)
    s = (torch.randn(16, 10, generator=g) + 1.0).requires_grad_(True)
    loss = losses.create(name, **kw)
    loss.setup(num_classes=10)
    loss.set_progress(epoch, 30)
    if name == "noisy_teacher":
        loss.eval()
    first = _call(loss, s, t, y).item()
    for _ in range(30):  # normalised gradient steps on the student's logits only (CTKD's T stays fixed)
        (g,) = torch.autograd.grad(_call(loss, s, t, y), s)
        with torch.no_grad():
            s -= 0.5 * g / (g.norm() + 1e-12)
    last = _call(loss, s, t, y).item()
    assert math.isfinite(last) and last < 0.9 * first, (first, last)
