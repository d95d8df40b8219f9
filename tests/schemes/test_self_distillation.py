"""Schemes whose student grows helpers of its own: Rocket Launching's booster, SLA's joint head, BYOT / MSD's
auxiliary classifiers, HSAKD's self-supervised branches. Numbers against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from autokd import Distiller, models, schemes
from autokd.schemes._heads import aggregate_joint, joint_labels, rotate4, shallow_stages
from autokd.schemes.hsakd import HSAKD, RotatedTeacher, interleave_rotations
from autokd.schemes.rocket import hint_loss
from autokd.schemes.self_distill import byot_head_loss
from autokd.schemes.sla import RotationAggregated, rotated_embeddings
from autokd.train import Trainer

CPU = torch.device("cpu")


def kl_by_hand(target_logits, logits, t):
    """T²·mean_n Σ_k p_t log(p_t / p_s), softmax at temperature t, written out."""
    total = 0.0
    for zt, zs in zip(target_logits.tolist(), logits.tolist(), strict=True):
        et = [math.exp(v / t) for v in zt]
        es = [math.exp(v / t) for v in zs]
        pt = [v / sum(et) for v in et]
        ps = [v / sum(es) for v in es]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    return t * t * total / len(target_logits)


def ce_by_hand(logits, labels):
    total = 0.0
    for z, y in zip(logits.tolist(), labels.tolist(), strict=True):
        total += math.log(sum(math.exp(v) for v in z)) - z[y]
    return total / len(labels)


def _setup(name, bundle, recipe, teacher=None, tmp_path=None, **params):
    """A scheme set up around a fresh student as the trainer would (without training)."""
    torch.manual_seed(0)
    student = models.from_spec(recipe.student, 10, 1)
    distiller = Distiller.from_recipe(recipe, teacher if recipe.terms else None, student, input_shape=(1, 8, 8))
    scheme = schemes.create(name, **params)
    trainer = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path)
    scheme.setup(distiller=distiller, recipe=recipe, data=bundle, device=CPU, epochs=1, teacher=teacher,
                 teacher_source=trainer.teacher_source, cache_dir=tmp_path, trainer=trainer)
    return scheme, distiller


def _batch(bundle, n=16):
    x, y, idx = next(iter(bundle.loader("train", n, shuffle=False)))
    return x, y, idx


# -- rotations -------------------------------------------------------------------------------------------
def test_rotate4_rows_and_joint_labels():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]])
    r = rotate4(x)
    assert r.shape == (8, 1, 2, 2)
    assert r[0, 0].tolist() == [[1, 2], [3, 4]]
    assert r[1, 0].tolist() == [[2, 4], [1, 3]]  # 90° counter-clockwise
    assert r[2, 0].tolist() == [[4, 3], [2, 1]]
    assert r[3, 0].tolist() == [[3, 1], [4, 2]]
    assert r[6, 0].tolist() == [[8, 7], [6, 5]]  # sample 1, 180°
    assert joint_labels(torch.tensor([2, 7])).tolist() == [8, 9, 10, 11, 28, 29, 30, 31]


def test_sla_aggregation_is_the_mean_over_rotations_of_the_class_joint_logits():
    g = torch.Generator().manual_seed(0)
    n, k = 3, 5
    joint = torch.randn(4 * n, 4 * k, generator=g)
    agg = aggregate_joint(joint)
    for i in range(n):
        for c in range(k):
            want = sum(joint[4 * i + r, 4 * c + r].item() for r in range(4)) / 4
            assert agg[i, c].item() == pytest.approx(want, abs=1e-6)


# -- rocket --------------------------------------------------------------------------------------------
def test_rocket_hint_is_the_official_squared_sum_over_the_batch():
    zl = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    zb = torch.tensor([[0.5, 2.5, 0.0], [1.0, -1.0, 1.0]])
    want = ((0.5 ** 2 + 0.5 ** 2 + 0.5 ** 2) + (1.0 + 0.0 + 4.0)) / 2
    assert hint_loss(zl, zb).item() == pytest.approx(want)


def test_rocket_gradient_block_booster_learns_from_its_ce_only(bundle, make_recipe):
    r = make_recipe("rocket", terms=False, ce_weight=1.0)
    scheme, distiller = _setup("rocket", bundle, r, weight=0.5)
    x, y, idx = _batch(bundle)
    step = distiller.step(x, y, full_outputs=True)
    extra = scheme.extra_losses(x, y, idx, step)
    total = step.losses["loss"] + extra["rocket"] + extra["rocket_booster"]
    booster = list(scheme.booster.parameters())
    g_total = torch.autograd.grad(total, booster, retain_graph=True)
    g_ce = torch.autograd.grad(extra["rocket_booster"], booster, retain_graph=True)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g_total, g_ce, strict=True))
    g_hint = torch.autograd.grad(extra["rocket"], booster, retain_graph=True, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in g_hint)
    # the hint moves the light net (its head and the shared stages); the booster's CE reaches the shared stages
    light_head = distiller.student.classifier.weight
    assert torch.count_nonzero(torch.autograd.grad(extra["rocket"], light_head, retain_graph=True)[0]) > 0
    shared = distiller.student.blocks[0][0].weight
    assert torch.count_nonzero(torch.autograd.grad(extra["rocket_booster"], shared, retain_graph=True)[0]) > 0
    # the booster continues from the student's deepest stage (all shared) at twice its width, two blocks deep
    assert scheme.branch_stage == 2 and scheme.booster.feature_dim == 2 * distiller.student.embedding_dim
    assert extra["rocket"].item() == pytest.approx(0.5 * hint_loss(step.student.logits, scheme.booster_logits(step)).item())


def test_rocket_trains_without_a_teacher_and_exports_the_light_net(bundle, make_recipe):
    res = Trainer(bundle, device="cpu").fit(make_recipe("rocket", {"shared_stages": 2}, terms=False, ce_weight=1.0),
                                            measure=False)
    h = res.history[-1]
    assert math.isfinite(h["train_loss"]) and h["train_rocket"] > 0 and h["train_rocket_booster"] > 0
    assert h["train_loss"] == pytest.approx(h["train_task"] + h["train_distill"] + h["train_rocket_booster"], rel=1e-5)
    assert res.student is res.distiller.student and res.scheme.branch_stage == 1
    assert res.metrics["params"] == models.count_params(res.distiller.student)  # the booster is not exported


# -- sla -----------------------------------------------------------------------------------------------
def test_sla_losses_match_a_hand_computation(bundle, make_recipe):
    r = make_recipe("sla", terms=False, ce_weight=1.0)
    scheme, distiller = _setup("sla", bundle, r, temperature=2.0)
    distiller.eval()  # batch-independent BatchNorm: the split forward equals one forward of the 4N batch
    x, y, idx = _batch(bundle, 6)
    step = distiller.step(x, y, full_outputs=True)
    out = scheme.extra_losses(x, y, idx, step)
    with torch.no_grad():
        emb = distiller.student.forward_outputs(rotate4(x)).embedding
        assert torch.allclose(rotated_embeddings(distiller.student, x, step.student.embedding), emb, atol=1e-5)
        joint = scheme.joint_head(emb)
        agg = torch.stack([torch.stack([sum(joint[4 * i + k, 4 * c + k] for k in range(4)) / 4 for c in range(10)])
                           for i in range(6)])
    assert out["sla_joint"].item() == pytest.approx(ce_by_hand(joint, joint_labels(y)), rel=1e-5)
    assert out["sla_sd"].item() == pytest.approx(kl_by_hand(agg, step.student.logits.detach(), 2.0), rel=1e-4)
    # the self-distillation target is detached: it trains the single head, not the joint head
    g = torch.autograd.grad(out["sla_sd"], scheme.joint_head.weight, allow_unused=True)[0]
    assert g is None or torch.count_nonzero(g) == 0


def test_sla_exports_the_single_head_or_the_rotation_aggregate(bundle, make_recipe):
    single = Trainer(bundle, device="cpu").fit(make_recipe("sla", terms=False, ce_weight=1.0), measure=False)
    assert single.student is single.distiller.student and single.history[-1]["train_sla_joint"] > 0
    res = Trainer(bundle, device="cpu").fit(make_recipe("sla", {"inference": "aggregated"}, terms=False,
                                                        ce_weight=1.0), measure=False)
    model = res.student.eval()
    assert isinstance(model, RotationAggregated) and math.isfinite(res.history[-1]["train_loss"])
    x, _, _ = _batch(bundle, 5)
    with torch.no_grad():
        want = aggregate_joint(res.scheme.joint_head(res.distiller.student.forward_outputs(rotate4(x)).embedding))
        assert torch.allclose(model(x), want, atol=1e-6)
    assert res.metrics["params"] == models.count_params(res.distiller.student) + 10 * 4 * (8 + 1)


# -- self_distill (BYOT / MSD) --------------------------------------------------------------------------
def test_byot_head_loss_combination_by_hand():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    zc = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, 1.0]])
    f = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    fc = torch.tensor([[0.0, 2.0], [1.0, 3.0]])
    y = torch.tensor([0, 1])
    a, t, lam = 0.3, 2.0, 0.05
    want = (1 - a) * ce_by_hand(z, y) + a * kl_by_hand(zc, z, t) + lam * ((1 + 0) + (1 + 4)) / 2
    got = byot_head_loss(z, f, y, zc, fc, alpha=a, temperature=t, feature_weight=lam)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_byot_sums_the_shallow_heads_and_leaves_the_deepest_classifier_alone(bundle, make_recipe):
    r = make_recipe("self_distill", terms=False, ce_weight=1.0, kwargs={"depth": 4})
    scheme, distiller = _setup("self_distill", bundle, r, alpha=0.2, temperature=3.0, feature_weight=0.1)
    assert scheme.stages == [1, 2] == shallow_stages(models.shapes(distiller.student, (1, 8, 8)))
    x, y, idx = _batch(bundle)
    step = distiller.step(x, y, full_outputs=True)
    out = scheme.extra_losses(x, y, idx, step)["self_distill"]
    logits, feats = scheme.heads(step)
    want = sum(byot_head_loss(z, f, y, step.student.logits, step.student.embedding, alpha=0.2, temperature=3.0,
                              feature_weight=0.1) for z, f in zip(logits, feats, strict=True))
    assert out.item() == pytest.approx(want.item(), rel=1e-6)
    g = torch.autograd.grad(out, distiller.student.classifier.weight, retain_graph=True, allow_unused=True)[0]
    assert g is None or torch.count_nonzero(g) == 0  # the deepest is the teacher: its outputs are detached
    assert torch.count_nonzero(torch.autograd.grad(out, distiller.student.blocks[1][0].weight)[0]) > 0


def test_msd_every_classifier_learns_from_the_others_and_the_feature_weight_anneals(bundle, make_recipe):
    r = make_recipe("self_distill", terms=False, ce_weight=1.0, kwargs={"depth": 4})
    scheme, distiller = _setup("self_distill", bundle, r, variant="msd", alpha=0.5, temperature=2.0,
                               feature_weight=0.2)
    x, y, idx = _batch(bundle)
    step = distiller.step(x, y, full_outputs=True)
    out = scheme.extra_losses(x, y, idx, step)["self_distill"]
    (z1, z2), (f1, f2) = scheme.heads(step)
    zc, fc = step.student.logits, step.student.embedding
    with torch.no_grad():
        want = 0.0
        for z, f, others in ((z1, f1, (z2, zc)), (z2, f2, (z1, zc))):
            want += 0.5 * ce_by_hand(z, y) + 0.5 * sum(kl_by_hand(o, z, 2.0) for o in others) / 2
            want += 0.2 * ((f - fc) ** 2).sum(1).mean().item()
        want += 0.5 * (kl_by_hand(z1, zc, 2.0) + kl_by_hand(z2, zc, 2.0)) / 2
    assert out.item() == pytest.approx(want, rel=1e-4)
    assert torch.count_nonzero(torch.autograd.grad(out, distiller.student.classifier.weight)[0]) > 0
    lams = []
    for e in range(4):
        scheme.on_epoch_start(e, 4, 10)
        lams.append(scheme.feature_weight())
    assert lams == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


@pytest.mark.parametrize("variant", ["byot", "msd"])
def test_self_distill_trains_without_a_teacher(variant, bundle, make_recipe):
    res = Trainer(bundle, device="cpu").fit(make_recipe("self_distill", {"variant": variant}, terms=False,
                                                        ce_weight=1.0), measure=False)
    h = res.history[-1]
    assert math.isfinite(h["train_loss"]) and h["train_self_distill"] > 0
    assert res.student is res.distiller.student and len(res.scheme.branches) == 1  # cnn depth 3: stage 1


# -- hsakd ---------------------------------------------------------------------------------------------
def test_hsakd_teacher_branches_are_trained_once_and_cached(bundle, teacher, make_recipe, tmp_path, monkeypatch):
    from autokd.schemes import hsakd

    calls = []
    orig = hsakd.train_teacher_heads

    def counted(*a, **kw):
        calls.append(kw["epochs"])
        return orig(*a, **kw)

    monkeypatch.setattr(hsakd, "train_teacher_heads", counted)
    r = make_recipe("hsakd", {"teacher_head_epochs": 2})
    first = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert calls == [2] and "trained" in first.scheme.events[0]
    assert len(list(tmp_path.glob("hsakd-teacher-heads-*.pt"))) == 1
    second = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert calls == [2] and "loaded" in second.scheme.events[0]
    sd1, sd2 = first.scheme.teacher_heads.state_dict(), second.scheme.teacher_heads.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]
    assert first.student is first.distiller.student and first.scheme.pairs == [(1, 1), (2, 2)]


def test_hsakd_teacher_branches_learn_the_joint_task(bundle, teacher):
    from autokd.schemes.hsakd import _heads, train_teacher_heads

    shapes = models.shapes(teacher, (1, 8, 8))
    torch.manual_seed(0)
    heads = _heads(shapes, [1, 2], 40)
    history = train_teacher_heads(teacher, heads, [1, 2], bundle, CPU, epochs=3, batch_size=32, lr=0.2)
    assert history[-1] < 0.8 * history[0] and history == sorted(history, reverse=True)


def test_hsakd_loss_is_the_sum_of_augmented_kls_over_the_four_rotations(bundle, teacher, make_recipe, tmp_path):
    r = make_recipe("hsakd", {"teacher_head_epochs": 1}, terms=False, ce_weight=1.0)
    scheme, distiller = _setup("hsakd", bundle, r, teacher=teacher, tmp_path=tmp_path, teacher_head_epochs=1,
                               temperature=2.0, weight=0.5)
    assert isinstance(scheme, HSAKD)
    distiller.eval()  # batch-independent BatchNorm, so the split student forward equals one 4N forward
    x, y, idx = _batch(bundle, 8)
    step = distiller.step(x, y, full_outputs=True)
    out = scheme.extra_losses(x, y, idx, step)["hsakd"]
    with torch.no_grad():
        s = distiller.student.forward_outputs(rotate4(x))
        t = teacher.forward_outputs(rotate4(x))
        pairs = [(s.logits, t.logits)] + [
            (hs(s.feats[si]), ht(t.feats[ti]))
            for hs, ht, (ti, si) in zip(scheme.student_heads, scheme.teacher_heads, scheme.pairs, strict=True)]
        want = 0.5 * sum(kl_by_hand(tz, sz, 2.0) for sz, tz in pairs)
    assert out.item() == pytest.approx(want, rel=1e-4)
    rotated = RotatedTeacher(teacher, scheme.teacher_heads, [p[0] for p in scheme.pairs])
    with torch.no_grad():
        parts = RotatedTeacher.split(rotated(x), 10, 2)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(parts, rotated.parts(x), strict=True))
    first, rest = torch.randn(2, 3), torch.randn(6, 3)
    inter = interleave_rotations(first, rest)
    assert torch.equal(inter[0], first[0]) and torch.equal(inter[1], rest[0]) and torch.equal(inter[5], rest[1])
    assert torch.equal(inter[7], rest[5])


def test_hsakd_needs_a_teacher_and_square_inputs(bundle, make_recipe):
    from autokd.errors import ConfigError
    from autokd.schemes._heads import check_square

    with pytest.raises(ConfigError, match="needs a teacher"):
        Trainer(bundle, device="cpu").fit(make_recipe("hsakd", terms=False, ce_weight=1.0), measure=False)
    with pytest.raises(ConfigError, match="square images"):
        check_square((3, 8, 6), "sla")


@pytest.mark.parametrize("name", ["rocket", "sla", "self_distill", "hsakd"])
def test_helper_heads_reach_the_optimiser_and_train(name, bundle, teacher, make_recipe, tmp_path):
    r = make_recipe(name, terms=False, ce_weight=1.0)
    scheme, distiller = _setup(name, bundle, r, teacher=teacher, tmp_path=tmp_path)
    opt = scheme.build_optimizer(distiller, r.optim)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    helper = scheme.extra_parameters()
    assert helper and all(id(p) in in_opt for p in helper)
    before = [p.detach().clone() for p in helper]
    x, y, idx = _batch(bundle)
    step = distiller.step(x, y, full_outputs=True)
    loss = step.losses["loss"] + sum(scheme.extra_losses(x, y, idx, step).values())
    scheme.backward_step({"loss": loss}, opt)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, helper, strict=True))
