"""Shared checks of the distillation methods that need more than features (CRD, FT, SemCKD, ReviewKD, TaT,
SRRL, SimKD, CAT-KD, FreeKD, Jacobian): declarations, cross-family builds, SGD on digits, and the trainer
hooks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autokd import data, losses, models
from autokd.losses.classifier import SimKDStudent
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer

NAMES = ["crd", "ft", "semckd", "review_kd", "tat", "srrl", "simkd", "cat_kd", "freekd", "jacobian"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tests run next to other suites on 2 cores: oversubscribed OpenMP threads slow them down badly
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _setup(loss, t, s, shape, num_samples):
    loss.setup(
        teacher_model=t,
        student_model=s,
        num_samples=num_samples,
        num_classes=10,
        input_shape=shape,
        cache_dir=None,
    )
    return loss


def test_all_registered():
    assert set(NAMES) <= set(losses.names())


@pytest.mark.parametrize("name", NAMES)
def test_declares_paper_weight_and_search_ranges(name):
    cls = losses.get(name)
    assert cls.paper and cls.__doc__ and "official" in cls.__doc__.lower()
    lo, hi = cls.weight_range
    assert 0 < lo <= cls.default_weight <= hi
    for key, h in cls.hparams.items():
        assert h.search_spec()
        if h.kind == "categorical":
            assert h.default in h.choices, key
    assert cls.level == "feature"  # they all need more than logits (excluded from logit-only tests)


# -- mismatched families at CIFAR resolution ---------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_pair():
    torch.manual_seed(0)
    t = models.create("resnet32x4", num_classes=10, in_channels=3).eval().requires_grad_(False)
    s = models.create("shufflenetv2", num_classes=10, in_channels=3)
    shape = (3, 32, 32)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        t_out = t.forward_outputs(x)
    return t, s, shape, x, t_out


@pytest.mark.parametrize("name", NAMES)
def test_builds_for_resnet32x4_teacher_and_shufflenetv2_student(name, cifar_pair):
    t, s, shape, x, t_out = cifar_pair
    kw = {"patch": 4} if name == "tat" else {}  # exercise the patch-group/anchor path on 8×8 teacher maps
    loss = losses.create(name, student=models.shapes(s, shape), teacher=models.shapes(t, shape), **kw)
    _setup(loss, t, s, shape, num_samples=100)
    s.zero_grad(set_to_none=True)
    value = loss(s.forward_outputs(x), t_out, torch.tensor([1, 7]), index=torch.tensor([3, 42]), x=x)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters())
    assert all(p.grad is None for p in t.parameters())


# -- a few SGD steps on digits ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    bundle = data.create("digits", train_fraction=0.2)
    torch.manual_seed(0)
    teacher = models.create("resnet8", num_classes=10, in_channels=1)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):  # a briefly trained teacher: its features are not all alike
        for x, y, _ in bundle.loader("train", 64, shuffle=True, seed=0):
            opt.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            opt.step()
    teacher.eval().requires_grad_(False)
    x, y, idx = next(iter(bundle.loader("train", 32, shuffle=True, seed=1)))
    return bundle, teacher, (x, y, idx)


# CAT-KD: the student's last map is 1×1 on 8×8 inputs, so normalised CAMs carry only their sign (no gradient);
# unnormalised, a CAM moves by lr·|f|² per step with a 1280-d feature f, hence a small learning rate. FreeKD:
# the student's 1×1 map upsampled to the teacher's 2×2 has no high band, so only the (L1) low band moves.
SGD_PARAMS = {"cat_kd": {"normalize": False}}
SGD_LR = {"cat_kd": 1e-3, "freekd": 0.1}


@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_lower_the_loss_on_digits(name, digits):
    bundle, teacher, (x, y, idx) = digits
    shape = bundle.input_shape
    torch.manual_seed(0)
    student = models.create("mobilenetv2_x0_25", num_classes=10, in_channels=1)
    loss = losses.create(
        name,
        student=models.shapes(student, shape),
        teacher=models.shapes(teacher, shape),
        **SGD_PARAMS.get(name, {}),
    )
    _setup(loss, teacher, student, shape, num_samples=len(bundle.train))
    if name == "crd":
        # with its memory banks frozen (eval mode) the NCE objective is stationary; filling the banks with the
        # untrained student's near-identical embeddings first raises it, as in the official code
        loss.eval()
    params = [p for p in list(student.parameters()) + list(loss.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=SGD_LR.get(name, 0.05), momentum=0.9)
    with torch.no_grad():
        t_out = teacher.forward_outputs(x)
    values = []
    for _ in range(10):
        v = loss(student.forward_outputs(x), t_out, y, index=idx, x=x)
        assert torch.isfinite(v)
        opt.zero_grad()
        v.backward()
        opt.step()
        values.append(float(v.detach()))
    assert sum(values[-3:]) / 3 < values[0], values


# -- the trainer's hooks: setup context, pretrain, index/input, student_head --------------------------------
def test_trainer_runs_pretrain_passes_index_and_input_and_evaluates_the_simkd_student():
    bundle = data.create("digits", train_fraction=0.2)
    torch.manual_seed(0)
    teacher = models.create("cnn", num_classes=10, in_channels=1, width=8).eval()
    terms = [
        TermSpec(loss="simkd", weight=1.0),
        TermSpec(loss="ft", weight=1.0, params={"pretrain_epochs": 1}),
        TermSpec(loss="crd", weight=0.1),
        TermSpec(loss="jacobian", weight=0.1),
        TermSpec(loss="freekd", weight=0.1),
    ]
    recipe = Recipe(
        student=StudentSpec(name="cnn", kwargs={"width": 2}),
        ce_weight=0.0,
        terms=terms,
        optim=OptimSpec(epochs=1, batch_size=64),
    )
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(recipe, measure=False)
    by_key = {t.key: t.loss for t in res.distiller.terms}
    assert isinstance(res.student, SimKDStudent) and res.student.student is res.distiller.student
    assert len(by_key["ft"].pretrain_history) == 1 and len(by_key["freekd"].pretrain_history) == 1
    assert by_key["crd"].num_data == len(bundle.train) and float(by_key["crd"].z.min()) > 0
    assert all(torch.isfinite(torch.tensor(v)) for k, v in res.history[-1].items() if k.startswith("train_"))
    assert 0.0 <= res.metrics["val_acc"] <= 1.0
    trainable = {id(p) for p in res.distiller.trainable_parameters()}
    assert not any(id(p) in trainable for p in by_key["ft"].paraphraser.parameters())
    assert not any(id(p) in trainable for p in teacher.parameters())
