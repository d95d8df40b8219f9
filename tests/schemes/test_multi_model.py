"""Schemes built from several trained models: tolerant generations, DGKD's densely guided assistants and
ResKD's student + res-student. Numbers against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import Distiller, losses, models, schemes
from autokd.distiller import Step
from autokd.errors import ConfigError
from autokd.outputs import Outputs
from autokd.recipe import Recipe
from autokd.schemes.dgkd import DGKD, drop_guides, interpolated_assistants
from autokd.schemes.reskd import ResidualStudent, ResKD, gap_loss
from autokd.schemes.tolerant import generation_kl, top_score_difference
from autokd.train import Trainer


# -- tolerant generations ---------------------------------------------------------------------------------
def test_top_score_difference_by_hand():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 4.0, 1.0, 1.0]])
    # sample 0: 3 - mean(2, 1) = 1.5; sample 1: 4 - mean(1, 1) = 3
    assert top_score_difference(z, 3).item() == pytest.approx((1.5 + 3.0) / 2)
    assert top_score_difference(F.log_softmax(z, 1), 3).item() == pytest.approx(2.25, rel=1e-6)  # same on log p
    # K = 5 of 6 classes, unsorted: top 7, next four 5, 4, 2, -1 (the 6th, -3, is left out): 7 - 10/4 = 4.5
    assert top_score_difference(torch.tensor([[2.0, -3.0, 7.0, -1.0, 5.0, 4.0]]), 5).item() == pytest.approx(4.5)
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 4.0, 1.0, 2.0]], requires_grad=True)
    g = torch.autograd.grad(top_score_difference(z, 3), z)[0]  # +1/N on the top score, -1/(N(k-1)) on the next
    assert g.tolist() == [[0.5, -0.25, -0.25, 0.0], [0.0, 0.5, -0.25, -0.25]]


def test_generation_kl_by_hand_and_as_the_kd_term_the_generations_train_with():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    p = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    for t in (1.0, 2.0):
        ps, pp = F.softmax(s / t, 1).double(), F.softmax(p / t, 1).double()
        by_hand = (pp * (pp.log() - ps.log())).sum(1).mean().item() * t * t  # Σ_c p ln(p/q), batch mean, × T²
        assert generation_kl(s, p, t).item() == pytest.approx(by_hand, rel=1e-6)
        kd = losses.create("kd", temperature=t)  # what student generations 1..G-2 train with
        assert kd(Outputs(logits=s), Outputs(logits=p), None).item() == pytest.approx(by_hand, rel=1e-6)
    # the paper's T = 1: the plain softmax KL; sample 1 has a uniform predecessor
    q = F.softmax(torch.tensor([0.5, 0.5, 2.0]), 0)
    assert generation_kl(s[1:], p[1:]).item() == pytest.approx(-math.log(3) - q.log().mean().item(), rel=1e-6)


def test_tolerant_generations_train_a_patriarch_then_students_from_their_predecessor(bundle, make_recipe, tmp_path,
                                                                                    monkeypatch):
    recipes: list[Recipe] = []
    orig = Trainer.fit

    def fit(self, recipe, **kw):
        recipes.append(recipe)
        return orig(self, recipe, **kw)

    monkeypatch.setattr(Trainer, "fit", fit)
    params = {"generations": 3, "eta": 0.7, "top_k": 4, "weight": 0.4, "temperature": 2.0}
    r = make_recipe("tolerant_generations", params, terms=False, ce_weight=0.5)  # the paper's setting: no teacher
    first = Trainer(bundle, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    patriarch, gen1 = recipes[1], recipes[2]
    assert patriarch.ce_weight == 0.7 and patriarch.terms == [] and patriarch.seed == r.seed + 1
    assert patriarch.scheme.name == "tolerant_generations" and patriarch.scheme.params["generations"] == 1
    assert gen1.scheme.name == "standard" and gen1.ce_weight == 0.5 and gen1.seed == r.seed + 2
    assert [(t.loss, t.weight, t.params) for t in gen1.terms] == [("kd", 0.4, {"temperature": 2.0})]
    assert [e.split(":")[0] for e in first.scheme.events] == ["tolerant_generations-gen0", "tolerant_generations-gen1"]
    assert len(list(tmp_path.glob("tolerant_generations-gen*.pt"))) == 2
    assert all(h["train_generation"] > 0 for h in first.history)
    # the trained student's extra loss is 0.4 × the T = 2 KL to generation 1
    x, y, idx = next(iter(bundle.loader("train", 16, shuffle=False)))
    z = torch.randn(16, 10)
    out = first.scheme.extra_losses(x, y, idx, Step({}, Outputs(logits=z)))
    with torch.no_grad():
        assert out["generation"].item() == pytest.approx(0.4 * generation_kl(z, first.scheme.generations[1](x), 2.0).item(),
                                                         rel=1e-5)
    recipes.clear()
    second = Trainer(bundle, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert len(recipes) == 1 and all("loaded" in e for e in second.scheme.events)


def test_tolerant_generations_with_terms_keep_the_study_teacher_for_them(bundle, teacher, make_recipe):
    # the recipe's KD term distils from the real teacher; the generation KL from the patriarch comes on top
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(make_recipe("tolerant_generations"), measure=False)
    h = res.history[-1]
    assert h["train_kd"] > 0 and h["train_generation"] > 0
    assert h["train_distill"] == pytest.approx(0.9 * h["train_kd"] + h["train_generation"], rel=1e-5)


def test_tolerant_patriarch_mode_adds_the_weighted_top_score_difference(bundle, make_recipe):
    res = Trainer(bundle, device="cpu").fit(
        make_recipe("tolerant_generations", {"generations": 1, "eta": 0.6, "top_k": 3}, terms=False, ce_weight=0.6,
                    epochs=2), measure=False)
    for h in res.history:
        assert h["train_tsd"] > 0 and h["train_distill"] == pytest.approx(h["train_tsd"])
        assert h["train_loss"] == pytest.approx(0.6 * h["train_ce"] + h["train_tsd"], rel=1e-5)
    scheme, x = res.scheme, torch.randn(4, 1, 8, 8)
    z = torch.randn(4, 10)
    out = scheme.extra_losses(x, torch.zeros(4, dtype=torch.long), torch.arange(4), Step({}, Outputs(logits=z)))
    assert out["tsd"].item() == pytest.approx(0.4 * top_score_difference(z, 3).item())
    with pytest.raises(ConfigError, match="top_k must be <= the number of classes"):
        Trainer(bundle, device="cpu").fit(make_recipe("tolerant_generations", {"generations": 1, "top_k": 11},
                                                      terms=False))


# -- dgkd --------------------------------------------------------------------------------------------------
def test_dgkd_drop_rate_over_many_steps():
    g = torch.Generator().manual_seed(3)
    steps, n = 6000, 3
    dropped = [0] * n
    for _ in range(steps):
        kept = drop_guides(n, 1, g)
        assert len(kept) == n - 1 and kept == sorted(set(kept))
        for i in set(range(n)) - set(kept):
            dropped[i] += 1
    assert all(abs(d / steps - 1 / 3) < 0.025 for d in dropped)  # each guide dropped with probability 1/3
    assert drop_guides(1, 1, g) == [0] and drop_guides(3, 5, g) in ([0], [1], [2])  # one guide always teaches
    assert drop_guides(3, 0, g) == [0, 1, 2]


def test_dgkd_drops_are_reproducible_with_the_seed():
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [drop_guides(4, 2, a) for _ in range(20)] == [drop_guides(4, 2, b) for _ in range(20)]


def test_dgkd_default_assistants_interpolate_widths_geometrically():
    t, s = models.create("cnn", 10, 1, width=32), models.create("cnn", 10, 1, width=3)
    specs = interpolated_assistants(t, s, 2)
    # 32·(3/32)^(1/3) = 14.5 -> 15 and 32·(3/32)^(2/3) = 6.6 -> 7
    assert [a["kwargs"]["width"] for a in specs] == [round(32 * (3 / 32) ** (1 / 3)), round(32 * (3 / 32) ** (2 / 3))]
    assert [a["kwargs"]["width"] for a in specs] == [15, 7] and specs[0]["name"] == "cnn"
    with pytest.raises(ConfigError, match="no default assistants"):
        interpolated_assistants(models.create("resnet8", 10, 1), s, 2)


def test_dgkd_trains_assistants_densely_and_caches_them(bundle, teacher, make_recipe, tmp_path, count_fits):
    r = make_recipe("dgkd", {"assistants": 2, "assistant_epochs": 1})
    first = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    # the student's fit, then A1 (guides: teacher) and A2 (guides: teacher + A1, loaded from the cache)
    assert count_fits == ["cnn(width=2)", "cnn(depth=3,width=5)", "cnn(depth=3,width=3)"]
    assert len(list(tmp_path.glob("dgkd-assistant-*.pt"))) == 2 and len(first.scheme.assistants) == 2
    assert first.history[-1]["train_kd"] == 0 and first.history[-1]["train_dgkd"] > 0
    count_fits.clear()
    second = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert count_fits == ["cnn(width=2)"] and all("loaded" in e for e in second.scheme.events)
    assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]


def test_dgkd_loss_is_the_sum_of_the_kept_guides_terms(bundle, teacher, make_recipe, tmp_path):
    r = make_recipe("dgkd", {"assistants": 2, "assistant_epochs": 1, "drop": 1})
    torch.manual_seed(0)
    student = models.from_spec(r.student, 10, 1)
    distiller = Distiller.from_recipe(r, teacher, student, input_shape=(1, 8, 8))
    scheme = schemes.create("dgkd", **r.scheme.params)
    assert isinstance(scheme, DGKD)
    trainer = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path)
    scheme.setup(distiller=distiller, recipe=r, data=bundle, device=torch.device("cpu"), epochs=1, teacher=teacher,
                 teacher_source=trainer.teacher_source, trainer=trainer)
    x, y, idx = next(iter(bundle.loader("train", 16, shuffle=False)))
    step = distiller.step(x, y, term_scales=scheme.term_scales(0, 1, ["kd"]))
    assert step.losses["kd"] == 0 and step.losses["distill"] == 0
    guides = [teacher] + scheme.assistants
    seen = set()
    for _ in range(6):
        out = scheme.extra_losses(x, y, idx, step)["dgkd"]
        assert len(scheme.kept) == 2
        seen.add(tuple(scheme.kept))
        with torch.no_grad():
            want = 0.0
            for g in scheme.kept:
                pt = F.softmax(guides[g](x) / 4, 1)
                ls = F.log_softmax(step.student.logits / 4, 1)
                want += 0.9 * 16 * (pt * (pt.log() - ls)).sum(1).mean().item()
        assert out.item() == pytest.approx(want, rel=1e-4)
    assert len(seen) >= 2


# -- reskd -------------------------------------------------------------------------------------------------
def test_reskd_gap_loss_and_combined_inference_by_hand():
    zr = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    zt = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    zs = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # gap = [[1, -1], [0, 1]]; (zr - gap)² summed = (0.25 + 0.25) + (1 + 1) = 2.5, over N = 2
    assert gap_loss(zr, zt, zs).item() == pytest.approx(1.25)
    s, r = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([[4.0, 0, 0], [0, 0, 0]]))
        s.bias.zero_()
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # sample 0: confident student, sample 1: unsure
    always = ResidualStudent(s, r, 0.0)(x)
    assert torch.allclose(always, s(x) + r(x))
    adaptive = ResidualStudent(s, r, 0.9)(x)  # softmax([4, 0]) max = 0.982 >= 0.9: R skipped for sample 0
    assert torch.allclose(adaptive[0], s(x)[0]) and torch.allclose(adaptive[1], (s(x) + r(x))[1])


def test_reskd_res_student_learns_the_gap_alongside_then_after_the_frozen_student(bundle, teacher, make_recipe,
                                                                                 monkeypatch):
    snaps = []
    orig = ResKD.after_step

    def record(self):
        snaps.append((self.student_frozen, [p.detach().clone() for p in self.student.parameters()],
                      self.res_student.classifier.weight.detach().clone(), self.student.training))
        orig(self)

    monkeypatch.setattr(ResKD, "after_step", record)
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(
        make_recipe("reskd", {"residual_fraction": 0.4}, epochs=2), measure=False)
    scheme = res.scheme
    total = 2 * len(bundle.loader("train", 32))
    assert len(snaps) == total and scheme.switch_step == total - round(0.4 * total)
    before = [s for s in snaps if not s[0]]
    after = [s for s in snaps if s[0]]
    assert len(before) == scheme.switch_step and len(after) == total - scheme.switch_step
    assert torch.count_nonzero(before[0][2]) > 0  # R trains from the first step (its classifier starts at zero)
    assert not torch.equal(after[0][2], after[-1][2])  # ... and on, alone, once S is frozen
    frozen = after[0][1]
    assert all(all(torch.equal(a, b) for a, b in zip(frozen, s[1], strict=True)) for s in after)  # S frozen
    assert all(not s[3] for s in after)  # ... in eval mode
    assert not all(torch.equal(a, b) for a, b in zip(before[0][1], before[-1][1], strict=True))  # S trained before
    assert isinstance(res.student, ResidualStudent) and res.student.res_student is scheme.res_student
    assert res.metrics["params"] == models.count_params(res.distiller.student) + models.count_params(
        scheme.res_student)
    assert scheme.res_student.width == 1  # half the student's width 2
    # R regresses the gap: better than the zero residual it started from
    x, _, idx = next(iter(bundle.loader("train", 64, shuffle=False)))
    with torch.no_grad():
        res.distiller.student.eval(), scheme.res_student.eval()
        zs, zt, zr = res.distiller.student(x), teacher(x), scheme.res_student(x)
    assert gap_loss(zr, zt, zs) < gap_loss(torch.zeros_like(zr), zt, zs)
    h = res.history[-1]
    assert math.isfinite(h["train_reskd"]) and h["train_reskd"] > 0
    assert h["train_loss"] == pytest.approx(h["train_task"] + h["train_distill"] + h["train_reskd"], rel=1e-5)


def test_reskd_needs_a_teacher(bundle, make_recipe):
    with pytest.raises(ConfigError, match="needs a teacher"):
        Trainer(bundle, device="cpu").fit(make_recipe("reskd", terms=False, ce_weight=1.0))
