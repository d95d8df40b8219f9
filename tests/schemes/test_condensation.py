"""KCD (condensed knowledge set) and FerKD (surgical label adaptation) against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from autokd import data, schemes
from autokd.errors import ConfigError
from autokd.losses.logit import kd_loss
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.schemes.ferkd import partition_by_confidence, softened_hard_labels
from autokd.schemes.kcd import KCD, condense, knowledge_scores, summary_weights
from autokd.train import Trainer


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", train_fraction=0.2)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=3, batch_size=32))
    return Trainer(bundle, device="cpu").fit(r, measure=False).student.eval()


def _recipe(scheme, params=None, epochs=2, temperature=4.0):
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": temperature})],
                  scheme=SchemeSpec(name=scheme, params=params or {}), optim=OptimSpec(epochs=epochs, batch_size=32))


# -- KCD ------------------------------------------------------------------------------------------------
def test_kcd_scores_are_mean_values_with_the_seen_epochs_factor():
    s = knowledge_scores(torch.tensor([2.0, 3.0, 4.0, 0.0]), torch.tensor([2, 3, 1, 0]), interval=2)
    want = [1.0 * (2 / 2) ** 0.03, 1.0 * (3 / 2) ** 0.03, 4.0 * (1 / 2) ** 0.03, 0.0]
    assert s.tolist() == pytest.approx(want)


def test_kcd_condense_keeps_the_top_and_returns_the_dropped_ranks():
    scores = torch.tensor([float(v) for v in [5, 1, 9, 3, 7, 2, 8, 0, 6, 4, 19, 11, 13, 17, 15, 12, 14, 16, 18, 10]])
    # N = 20, keep 0.7, 6 rounds: drop int(20 * 0.3 / 6) = 1 per round, never below int(0.7 * 20) = 14
    kept, lost = condense(scores, 20, 0.7, 6)
    assert len(kept) == 19 and lost.tolist() == [7]  # the lowest score (0) drops
    assert kept.tolist()[:3] == [10, 18, 13]  # scores 19, 18, 17 first
    kept, lost = condense(scores, 15, 0.7, 6)
    assert len(kept) == 14 and lost.tolist() == [int(torch.argsort(-scores)[14])]
    kept, lost = condense(scores, 14, 0.7, 6)  # at the floor: nothing more drops
    assert len(kept) == 14 and lost.numel() == 0


def test_kcd_summary_weights_follow_the_official_ramp():
    assert summary_weights(4, 0.7).tolist() == pytest.approx([1.0, 0.925, 0.85, 0.775])


def test_kcd_values_are_student_entropy_or_teacher_student_kl():
    s = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    t = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    ent = schemes.create("kcd").sample_values(s, None)
    p = F.softmax(s[1], 0)
    assert ent.tolist() == pytest.approx([math.log(3), float(-(p * p.log()).sum())], rel=1e-6)
    kl = schemes.create("kcd", value="kd").sample_values(s, t)
    q = F.softmax(t[0], 0)
    assert kl.tolist() == pytest.approx([float((q * (q.log() - math.log(1 / 3))).sum()), 0.0], abs=1e-6)


def _kcd_on(bundle, **params):
    kcd = schemes.create("kcd", **params)
    r = _recipe("kcd", params, epochs=6)
    kcd.setup(distiller=SimpleNamespace(teacher=None), recipe=r, data=bundle, epochs=6, device=torch.device("cpu"))
    return kcd


def test_kcd_condensation_summarises_dropped_samples_into_the_weakest_kept(bundle):
    kcd = _kcd_on(bundle, rounds=3, keep=0.6)
    n = kcd.n
    assert kcd.interval == 2 and kcd.is_full()
    g = torch.Generator().manual_seed(0)
    kcd.value_sum = torch.rand(n, generator=g, dtype=torch.float64)
    kcd.seen = torch.ones(n, dtype=torch.long)
    kcd.on_epoch_end(0, 6)  # epoch 1 of 6: not a condensation epoch
    assert kcd.is_full()
    kcd.on_epoch_end(1, 6)
    drop = int(n * 0.4 / 3)
    order = torch.argsort(kcd.value_sum, descending=True)
    assert kcd.kept.tolist() == order[: n - drop].tolist()
    lost, tail = order[n - drop:], order[n - 2 * drop: n - drop]
    w = summary_weights(drop, 0.7)
    x = bundle.train.x
    got = kcd.inputs(tail)
    for k in range(drop):
        want = w[k] * x[tail[k]] + (1 - w[k]) * x[lost[k]]
        assert torch.allclose(got[k], want.float(), atol=1e-6)
    assert torch.equal(kcd.inputs(order[:3]), x[order[:3]])  # the most valuable are untouched
    arrays, kcd._arrays = kcd._arrays, None  # the path of augmented datasets: mix freshly loaded components
    assert torch.allclose(kcd.inputs(tail), got, atol=1e-6)
    kcd._arrays = arrays
    # the teacher runs online on a batch holding a summarised input, the cached source serves the others
    marker = Outputs(logits=torch.full((2, 10), 7.0))
    kcd.distiller = SimpleNamespace(teacher_outputs=lambda xb: marker)
    assert kcd.teacher_outputs(x[:2], tail[:2], default=lambda: pytest.fail("cached outputs used")) is marker
    cached = Outputs(logits=torch.zeros(2, 10))
    assert kcd.teacher_outputs(x[:2], order[:2], default=lambda: cached) is cached
    # the loader now serves the condensed set: ceil(kept / batch) batches, each sample once
    loader = kcd.wrap_loader(bundle.loader("train", 32, shuffle=True))
    kcd.on_epoch_start(2, 6, len(loader))
    seen = torch.cat([idx for _, _, idx in loader])
    assert len(loader) == math.ceil(len(kcd.kept) / 32) and sorted(seen.tolist()) == sorted(kcd.kept.tolist())


def test_kcd_trains_on_fewer_steps_and_matches_kd_before_the_first_condensation(bundle, teacher, monkeypatch):
    steps = []
    orig = KCD.extra_losses

    def count(self, x, y, idx, step):
        steps.append((self.epoch, len(idx)))
        return orig(self, x, y, idx, step)

    monkeypatch.setattr(KCD, "extra_losses", count)
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("kcd", {"rounds": 3}, epochs=6),
                                                             measure=False)
    kd = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("standard", epochs=6), measure=False)
    n = len(bundle.train)
    sizes = [sum(k for e, k in steps if e == epoch) for epoch in range(6)]
    drop = int(n * 0.3 / 3)
    assert sizes == [n, n, n - drop, n - drop, n - 2 * drop, n - 2 * drop]
    assert len(res.scheme.events) == 2  # after epochs 2 and 4; none after the last epoch
    # the first epochs are plain KD (same batches, same losses; the LR schedule is the same too)
    for k in ("train_kd", "train_ce", "val_acc"):
        assert res.history[0][k] == pytest.approx(kd.history[0][k], rel=1e-6)
    seen = res.scheme.seen  # recorded values: every sample in the first 2 epochs, the kept ones until the end
    assert int(seen.sum()) == sum(sizes) and int(seen.min()) >= 2 and int(seen.max()) == 6
    # the teacher's outputs on summarised inputs: computed once per round, the source serves the others
    kcd = res.scheme
    idx = kcd.kept[-8:]  # the least valuable kept samples: summarised
    assert bool(kcd.mixed[idx].all())
    idx = torch.cat([idx, kcd.kept[:4]])
    x = kcd.inputs(idx)
    original = bundle.train.x[idx]
    assert not torch.allclose(x[:8], original[:8])
    with torch.no_grad():
        out = kcd.teacher_outputs(x, idx, default=lambda: Outputs(logits=teacher(original)))
        assert torch.allclose(out.logits, teacher(x), atol=1e-5)
    with pytest.raises(ConfigError, match="value: kd"):
        Trainer(bundle, device="cpu").fit(
            Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), scheme=SchemeSpec(name="kcd",
                                                                                        params={"value": "kd"}),
                   optim=OptimSpec(epochs=1)), measure=False)


# -- FerKD ----------------------------------------------------------------------------------------------
def test_ferkd_partition_drops_the_extremes_and_calibrates_the_next_least_confident():
    conf = torch.tensor([0.9, 0.1, 0.5, 0.99, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4])
    keep, cal = partition_by_confidence(conf, drop_easy=0.1, drop_hard=0.1, calibrate=0.2)
    assert (~keep).nonzero().flatten().tolist() == [1, 3]  # 0.1 (hardest) and 0.99 (easiest)
    assert cal.nonzero().flatten().tolist() == [4, 6]  # 0.3 and 0.2
    keep, cal = partition_by_confidence(torch.tensor([0.5]), 0.5, 0.5, 0.5)  # nothing would remain
    assert keep.all() and not cal.any()


def test_ferkd_softened_hard_labels():
    q = softened_hard_labels(torch.tensor([1, 3]), 4, 0.2)
    assert torch.allclose(q, torch.tensor([[0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]]))


def test_ferkd_adapts_the_batch_and_the_kd_term_sees_the_calibrated_labels(bundle):
    torch.manual_seed(1)
    t_logits = torch.randn(10, 10) * 3
    y = torch.arange(10)
    t_logits[y, y] = torch.linspace(-2, 6, 10)  # confidence grows with the sample index
    src = SimpleNamespace(batch=lambda x, idx, needs_feats=False: Outputs(logits=t_logits[idx]))
    fer = schemes.create("ferkd", smoothing=0.1)
    kd_term = SimpleNamespace(loss=SimpleNamespace(temperature=4.0))
    fer.setup(distiller=SimpleNamespace(teacher=object(), needs_feats=False, terms=[kd_term]), data=bundle,
              device=torch.device("cpu"), teacher_source=src)
    x, idx = torch.randn(10, 1, 8, 8), torch.arange(10)
    conf = F.softmax(t_logits, 1)[y, y]
    keep, cal = partition_by_confidence(conf, 0.1, 0.1, 0.2)
    xk, yk, ik = fer.adapt(x, y, idx)
    assert torch.equal(ik, idx[keep]) and torch.equal(yk, y[keep]) and torch.equal(xk, x[keep])
    out = fer.teacher_outputs(xk, ik, default=lambda: pytest.fail("the source was asked twice"))
    p = F.softmax(out.logits / 4.0, 1)
    cal_k = cal[keep]
    q = softened_hard_labels(yk[cal_k], 10, 0.1)
    assert torch.allclose(p[cal_k], q, atol=1e-6)  # KD at T = 4 sees exactly the softened hard label
    assert torch.equal(out.logits[~cal_k], t_logits[keep][~cal_k])  # the others keep the teacher's
    s = torch.randn(len(ik), 10)
    want = (4.0 ** 2) * ((q * (q.log() - F.log_softmax(s[cal_k] / 4, 1))).sum(1).sum()
                         + (F.softmax(t_logits[keep][~cal_k] / 4, 1) * (F.log_softmax(t_logits[keep][~cal_k] / 4, 1)
                                                                        - F.log_softmax(s[~cal_k] / 4, 1))).sum()
                         ) / len(ik)
    assert torch.allclose(kd_loss(s, out.logits, 4.0), want, atol=1e-5)
    assert fer.dropped == 2 and fer.calibrated == 2


def test_ferkd_trains_with_fewer_samples_per_batch(bundle, teacher):
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("ferkd", {"drop_easy": 0.2}, epochs=2),
                                                             measure=False)
    sizes = [len(idx) for _, _, idx in bundle.loader("train", 32)]
    want = 2 * sum(math.floor(n * 0.2) + math.floor(n * 0.1) if n - math.floor(n * 0.2) - math.floor(n * 0.1) >= 1
                   else 0 for n in sizes)
    assert res.scheme.dropped == want and res.scheme.calibrated > 0
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    with pytest.raises(ConfigError, match="needs a distillation term"):
        Trainer(bundle, device="cpu").fit(Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}),
                                                 scheme=SchemeSpec(name="ferkd"), optim=OptimSpec(epochs=1)))
