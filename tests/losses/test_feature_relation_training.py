"""Every feature/relation loss of feature.py, relation.py, ranking.py, svd.py and projection.py (and BINGO),
parametrised over their registered names:
connectors get gradients and the teacher never does; a few SGD steps on real digits data lower the loss with a
student of another family; auto-pairing on mismatched families (resnet32x4 teacher, ShuffleNetV2/MobileNetV2
students, 8×8 and 32×32 inputs) gives valid pairs on which every loss builds and runs forward/backward."""

from __future__ import annotations

import pytest
import torch

from autokd import data, losses, models
from autokd.losses import feature, projection, ranking, relation, svd
from autokd.pairs import auto_pairs

MODULES = {m.__name__ for m in (feature, relation, ranking, svd, projection)}
NAMES = sorted(n for n in losses.names() if losses.get(n).__module__ in MODULES or n == "bingo")
EXPECTED = {"fitnet", "at", "nst", "fsp", "ab", "vid", "ofd", "ickd", "pkt", "cc", "sp", "rkd", "irg",
            "cc_crd", "darkrank", "kdsvd", "kpn", "bingo"}


def test_all_methods_registered_with_weights():
    assert set(NAMES) == EXPECTED
    for n in NAMES:
        cls = losses.get(n)
        assert cls.level in ("feature", "relation")
        low, high = cls.weight_range
        assert 0 < low <= cls.default_weight <= high, n
        assert cls.__doc__ and "Weight" in cls.__doc__, n


def _build(name, student, teacher, in_shape, pairs=None):
    loss = losses.create(name, student=models.shapes(student, in_shape), teacher=models.shapes(teacher, in_shape),
                         pairs=pairs)
    loss.setup(teacher_model=teacher, student_model=student, input_shape=in_shape)
    return loss


# --------------------------------------------------------------------------- gradients: connectors yes, teacher no
@pytest.mark.parametrize("name", NAMES)
def test_connectors_get_gradients_and_teacher_none(name):
    torch.manual_seed(0)
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    student = models.create("shufflenetv2_x0_5", 10, in_channels=1)
    loss = _build(name, student, teacher, (1, 8, 8))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    t_out = teacher.forward_outputs(x)  # not detached on purpose
    v = loss(student.forward_outputs(x), t_out, y)
    v.backward()
    assert torch.isfinite(v)
    assert all(p.grad is None for p in teacher.parameters())
    for pname, p in loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)
    trainable = [p for p in loss.parameters()]
    if trainable:
        assert any(p.grad.abs().sum() > 0 for p in trainable)


# --------------------------------------------------------------------------- a few SGD steps on digits lower it
@pytest.fixture(scope="module")
def digits_setup():
    torch.manual_seed(0)
    bundle = data.create("digits", train_fraction=0.2)
    loader = bundle.loader("train", 32, shuffle=False)
    x, y, _ = next(iter(loader))
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1, momentum=0.9)
    teacher.train()
    for _ in range(2):  # a briefly trained teacher: its features carry some class structure
        for xb, yb, _ in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(teacher(xb), yb).backward()
            opt.step()
    teacher.eval().requires_grad_(False)
    with torch.no_grad():
        t_out = teacher.forward_outputs(x)
    return teacher, x, y, t_out


def _sgd_run(name, teacher, x, y, t_out, step_fraction):
    torch.manual_seed(1)
    student = models.create("shufflenetv2_x0_5", 10, in_channels=1)  # MobileNetV2: see the mismatched tests
    loss = _build(name, student, teacher, (1, 8, 8))
    student.train()
    loss.train()
    params = list(student.parameters()) + list(loss.parameters())
    v = loss(student.forward_outputs(x), t_out, y)
    v.backward()
    first = v.item()
    # The losses differ by orders of magnitude (their paper weights absorb that), so the SGD step size is set
    # once from the first gradient (a Polyak step aiming at a `step_fraction` first-order decrease), then kept.
    grad_sq = sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None)
    opt = torch.optim.SGD(params, lr=step_fraction * abs(first) / grad_sq)
    opt.step()
    for _ in range(4):
        opt.zero_grad()
        loss(student.forward_outputs(x), t_out, y).backward()
        opt.step()
    return first, loss(student.forward_outputs(x), t_out, y).item()


@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_on_digits_lower_the_loss(name, digits_setup):
    teacher, x, y, t_out = digits_setup
    # Batch-norm statistics move with every step; on losses that are already tiny (PKT is ~1e-4 here) a 5 %
    # step can be lost in that noise, so a 1 % step is tried as well. A wrong gradient fails both.
    runs = [_sgd_run(name, teacher, x, y, t_out, f) for f in (0.05, 0.01)]
    assert any(last < first for first, last in runs), (name, runs)


# --------------------------------------------------------------------------- mismatched families
MISMATCHED = [
    ("shufflenetv2_x0_5", (1, 8, 8)),
    ("shufflenetv2_x0_5", (3, 32, 32)),
    ("mobilenetv2_x0_25", (1, 8, 8)),
    ("mobilenetv2_x0_25", (3, 32, 32)),
]


@pytest.fixture(scope="module")
def resnet32x4_outputs():
    cache = {}

    def get(in_shape):
        if in_shape not in cache:
            torch.manual_seed(0)
            teacher = models.create("resnet32x4", 10, in_channels=in_shape[0]).eval()
            x = torch.randn(4, *in_shape)
            with torch.no_grad():
                cache[in_shape] = (teacher, x, teacher.forward_outputs(x))
        return cache[in_shape]

    return get


@pytest.mark.parametrize("student_name,in_shape", MISMATCHED, ids=lambda v: v if isinstance(v, str) else
                         "x".join(map(str, v)))
def test_auto_pairs_valid_on_mismatched_families(student_name, in_shape, resnet32x4_outputs):
    teacher, _, _ = resnet32x4_outputs(in_shape)
    student = models.create(student_name, 10, in_channels=in_shape[0])
    t_sh, s_sh = models.shapes(teacher, in_shape), models.shapes(student, in_shape)
    pairs = auto_pairs(t_sh, s_sh)
    assert len(pairs) == min(t_sh.num_stages, s_sh.num_stages) - 1
    assert pairs[-1] == (t_sh.num_stages - 1, s_sh.num_stages - 1)
    ts, ss = [p[0] for p in pairs], [p[1] for p in pairs]
    assert ts == sorted(set(ts)) and ss == sorted(set(ss)) and min(ts) >= 1 and min(ss) >= 1


@pytest.mark.parametrize("student_name,in_shape", MISMATCHED, ids=lambda v: v if isinstance(v, str) else
                         "x".join(map(str, v)))
def test_every_loss_runs_on_mismatched_families(student_name, in_shape, resnet32x4_outputs):
    teacher, x, t_out = resnet32x4_outputs(in_shape)
    torch.manual_seed(0)
    student = models.create(student_name, 10, in_channels=in_shape[0])
    y = torch.randint(0, 10, (len(x),))
    s_out = student.forward_outputs(x)
    total = 0.0
    for name in NAMES:
        loss = _build(name, student, teacher, in_shape, pairs=None)
        v = loss(s_out, t_out, y)
        assert v.dim() == 0 and torch.isfinite(v), name
        total = total + v
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_ofd_on_resnet_teacher_uses_bn_margins(resnet32x4_outputs):
    teacher, _, _ = resnet32x4_outputs((1, 8, 8))
    student = models.create("shufflenetv2_x0_5", 10, in_channels=1)
    loss = _build("ofd", student, teacher, (1, 8, 8))
    assert loss.margin_sources == ["bn", "bn", "bn"]
