from __future__ import annotations

import pytest
import torch

from autokd import data, models
from autokd.errors import CheckpointError, ConfigError
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import CachedTeacher, OnlineTeacher, Trainer, obtain_teacher
from autokd.train.teacher import load_checkpoint


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", seed=0, train_fraction=0.3)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    t = models.create("cnn", bundle.num_classes, in_channels=1, width=8)
    tr = Trainer(bundle, device="cpu")
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=2, batch_size=32))
    fit = tr.fit(r, measure=False)
    t.load_state_dict(fit.student.state_dict())
    return t.eval()


def _kd_recipe(seed=0, epochs=2):
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                  optim=OptimSpec(epochs=epochs, batch_size=32, lr=0.05), seed=seed)


def test_deterministic_for_a_seed(bundle, teacher):
    tr = Trainer(bundle, teacher=teacher, device="cpu")
    a = tr.fit(_kd_recipe(seed=3), measure=False)
    b = tr.fit(_kd_recipe(seed=3), measure=False)
    c = tr.fit(_kd_recipe(seed=4), measure=False)
    def strip(hist):
        return [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in hist]

    assert strip(a.history) == strip(b.history)
    assert all(torch.equal(p, q) for p, q in zip(a.student.state_dict().values(), b.student.state_dict().values(),
                                                  strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.student.state_dict().values(),
                                                      c.student.state_dict().values(), strict=True))


def test_cached_teacher_gives_the_same_losses_as_online(bundle, teacher, tmp_path):
    online = OnlineTeacher(teacher)
    cached = CachedTeacher(teacher, bundle, torch.device("cpu"), cache_dir=tmp_path, key="k")
    loader = bundle.loader("train", 32, shuffle=True, seed=1)
    kd = _kd_recipe()
    student = models.from_spec(kd.student, 10, 1)
    from autokd import Distiller

    d = Distiller(teacher, student, kd, input_shape=(1, 8, 8))
    for x, y, idx in loader:
        a = d(x, y, teacher_outputs=online.batch(x, idx))
        b = d(x, y, teacher_outputs=cached.batch(x, idx))
        assert torch.allclose(a["kd"], b["kd"], atol=1e-5)
        fa, fb = online.batch(x, idx, needs_feats=True), cached.batch(x, idx, needs_feats=True)
        assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(fa.feats, fb.feats, strict=True))
    assert list(tmp_path.glob("teacher_outputs_k-*.pt"))  # persisted for other processes
    # the whole fit is identical too
    ta = Trainer(bundle, teacher=teacher, teacher_source=online, device="cpu").fit(_kd_recipe(), measure=False)
    tb = Trainer(bundle, teacher=teacher, teacher_source=cached, device="cpu").fit(_kd_recipe(), measure=False)
    assert [h["val_acc"] for h in ta.history] == [h["val_acc"] for h in tb.history]
    assert abs(ta.history[-1]["train_kd"] - tb.history[-1]["train_kd"]) < 1e-4


def test_report_callback_stops_training(bundle, teacher):
    seen = []

    def report(epoch, acc):
        seen.append((epoch, acc))
        return epoch == 1

    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_kd_recipe(epochs=5), report=report, measure=False)
    assert res.stopped and len(res.history) == 2 and [e for e, _ in seen] == [0, 1]
    assert seen[-1][1] == res.metrics["val_acc"]


def test_metrics_include_size_flops_latency(bundle, teacher):
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_kd_recipe(epochs=1))
    m = res.metrics
    assert m["params"] == sum(p.numel() for p in res.student.parameters())
    assert m["flops"] > 0 and m["latency_ms"] > 0 and 0 <= m["val_acc"] <= 1


def test_device_validation():
    from autokd.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    small = models.create("cnn", 10, in_channels=1, width=4)
    torch.save(small.state_dict(), tmp_path / "w.pt")
    big = models.create("cnn", 10, in_channels=1, width=8)
    with pytest.raises(CheckpointError, match="does not fit architecture"):
        load_checkpoint(big, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(big, tmp_path / "missing.pt")
    load_checkpoint(small, tmp_path / "w.pt")


def test_teacher_is_trained_once_and_reused(bundle, tmp_path):
    from autokd.config import TeacherSpec

    spec = TeacherSpec(name="cnn", kwargs={"width": 4}, epochs=1)
    logs = []
    t1, info1 = obtain_teacher(spec, bundle, tmp_path, torch.device("cpu"), log=logs.append)
    assert (tmp_path / "teacher.pt").is_file() and any("training" in m for m in logs)
    logs.clear()
    t2, info2 = obtain_teacher(spec, bundle, tmp_path, torch.device("cpu"), log=logs.append)
    assert any("reusing" in m for m in logs) and info1["hash"] == info2["hash"]
    assert all(torch.equal(a, b) for a, b in zip(t1.state_dict().values(), t2.state_dict().values(), strict=True))
    # a different config retrains, keeping the previous teacher
    spec2 = TeacherSpec(name="cnn", kwargs={"width": 4}, epochs=2)
    obtain_teacher(spec2, bundle, tmp_path, torch.device("cpu"), log=logs.append)
    assert (tmp_path / f"teacher-{info1['hash']}.pt").is_file()
    # and a checkpoint path loads with weights_only
    spec3 = TeacherSpec(name="cnn", kwargs={"width": 4}, checkpoint=str(tmp_path / "teacher.pt"))
    t3, info3 = obtain_teacher(spec3, bundle, tmp_path, torch.device("cpu"))
    assert info3["source"].endswith("teacher.pt")


# -- the learning-rate schedule follows training progress ----------------------------------------------
@pytest.mark.parametrize("schedule,warmup", [("cosine", 0), ("cosine", 2), ("step", 1), ("constant", 0)])
def test_lr_schedule_equals_the_per_step_formula_for_a_fixed_length(schedule, warmup):
    import math

    from autokd.train.trainer import LRSchedule

    optim = OptimSpec(lr=0.1, schedule=schedule, warmup_epochs=warmup, milestones=[0.5, 0.75], gamma=0.1)
    epochs, spe = 6, 7
    total, warm = epochs * spe, warmup * spe

    def reference(s):  # the per-step LambdaLR factor of global step s
        if warm and s < warm:
            return (s + 1) / warm
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
        if schedule == "step":
            return 0.1 ** sum(s / spe >= m * epochs for m in (0.5, 0.75))
        return 1.0

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = LRSchedule(opt, optim, epochs)
    used = []
    for e in range(epochs):
        sched.start_epoch(e, spe)
        for _ in range(spe):
            used.append(opt.param_groups[0]["lr"])
            sched.step()
    assert used == pytest.approx([0.1 * reference(s) for s in range(total)], rel=1e-9, abs=1e-12)


def test_lr_schedule_reaches_its_end_when_the_epochs_shrink():
    from autokd.train.trainer import LRSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = LRSchedule(opt, OptimSpec(lr=1.0, schedule="cosine"), epochs=3)
    lengths, seen = [10, 6, 3], []
    for e, n in enumerate(lengths):
        sched.start_epoch(e, n)
        for _ in range(n):
            seen.append((e, opt.param_groups[0]["lr"]))
            sched.step()
    # each epoch starts at its own point of the cosine, whatever the length of the earlier epochs
    starts = [lr for i, (e, lr) in enumerate(seen) if i == 0 or seen[i - 1][0] != e]
    assert starts == pytest.approx([1.0, 0.75, 0.25])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the schedule is finished
    assert all(a >= b for (_, a), (_, b) in zip(seen[:-1], seen[1:], strict=True))
