"""The sync-free, mixed-precision loop on the CPU: bf16/fp16 autocast paths, losses in fp32, divergence found
at the first bad step without a per-step sync, accuracy counted on the device."""

from __future__ import annotations

import pytest
import torch

from autokd import Distiller, data, models
from autokd.errors import ConfigError
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.train import Trainer, TrainingDiverged, evaluate
from autokd.train.precision import available_cores, limit_threads, make_scaler, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", seed=0, train_fraction=0.3)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=2, batch_size=32))
    return Trainer(bundle, device="cpu").fit(r, measure=False).student.eval().requires_grad_(False)


def _recipe(precision="fp32", lr=0.05, scheme="standard", epochs=2):
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 4}), ce_weight=0.1,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                  scheme=SchemeSpec(name=scheme),
                  optim=OptimSpec(epochs=epochs, batch_size=32, lr=lr, precision=precision), seed=1)


def test_resolve_precision_on_cpu():
    assert resolve_precision("auto", CPU) is None and resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert make_scaler(CPU, torch.bfloat16) is None and make_scaler(CPU, None) is None
    with pytest.raises(ConfigError, match="optim.precision"):
        resolve_precision("fp8", CPU)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_close_to_fp32(bundle, teacher, precision):
    try:
        dtype = resolve_precision(precision, CPU)
    except ConfigError as e:  # this torch has no CPU autocast for the dtype: the error says so in one line
        assert "not supported on cpu" in str(e)
        return
    if precision == "fp16":
        assert isinstance(make_scaler(CPU, dtype), torch.amp.GradScaler)
    tr = Trainer(bundle, teacher=teacher, device="cpu")
    ref = tr.fit(_recipe("fp32"), measure=False).history
    low = tr.fit(_recipe(precision), measure=False).history
    for a, b in zip(ref, low, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
        assert b["train_kd"] == pytest.approx(a["train_kd"], rel=0.1)
        assert abs(b["val_acc"] - a["val_acc"]) < 0.1


def test_losses_are_computed_in_fp32_under_autocast(bundle, teacher):
    r = _recipe()
    student = models.from_spec(r.student, 10, 1)
    d = Distiller(teacher, student, r, input_shape=(1, 8, 8))
    x, y, _ = next(iter(bundle.loader("train", 64, shuffle=False)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = d.step(x, y)
        s_low, t_low = step.student.logits, teacher(x)
    assert s_low.dtype == torch.bfloat16 and step.losses["kd"].dtype == torch.float32
    # the same KL·T² written out by hand on the fp32 copies of the bf16 logits
    pt = torch.softmax(t_low.float() / 4, 1)
    ref = (pt * (pt.log() - torch.log_softmax(s_low.float() / 4, 1))).sum(1).mean() * 16
    torch.testing.assert_close(step.losses["kd"].detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_fp16_refuses_schemes_with_their_own_backward_step(bundle, teacher):
    with pytest.raises(ConfigError, match="fp16.*'dot'"):
        Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("fp16", scheme="dot"), measure=False)


def test_divergence_is_found_at_its_first_step_whatever_the_check_interval(bundle, teacher):
    steps = []
    for every in (1, 7):
        with pytest.raises(TrainingDiverged) as e:
            Trainer(bundle, teacher=teacher, device="cpu", check_every=every).fit(_recipe(lr=1e9), measure=False)
        steps.append((e.value.epoch, e.value.step))
    assert steps[0] == steps[1]
    with pytest.raises(ConfigError, match="check_every"):
        Trainer(bundle, device="cpu", check_every=0)


def test_epoch_means_do_not_depend_on_the_check_interval(bundle, teacher):
    a = Trainer(bundle, teacher=teacher, device="cpu", check_every=1).fit(_recipe(), measure=False).history
    b = Trainer(bundle, teacher=teacher, device="cpu", check_every=1000).fit(_recipe(), measure=False).history
    strip = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in a]
    assert strip == [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in b]


def test_evaluate_counts_like_a_plain_loop(bundle, teacher):
    loader = bundle.loader("val", 100, shuffle=False)
    with torch.no_grad():
        hits = sum(int((teacher(x).argmax(1) == y).sum()) for x, y, _ in loader)
    assert evaluate(teacher, loader, CPU) == hits / len(bundle.val)


def test_threads_never_exceed_the_cores_available():
    before = torch.get_num_threads()
    try:
        assert limit_threads() <= available_cores()
        assert limit_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
