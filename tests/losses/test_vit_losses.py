"""DeiT, CiT, TinyMIM and attention-map distillation against hand-written formulas; their wiring (task head,
head selection, helper teachers, cached transformer teachers); CNN->ViT and ViT->ViT training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autokd import Distiller, data, losses, models
from autokd.errors import ConfigError
from autokd.losses.vit import tinymim_teacher_block
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import Trainer, make_teacher_source

IN = (1, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _vit(seed=0, **kw):
    torch.manual_seed(seed)
    base = {"patch_size": 2, "depth": 2, "width": 16, "heads": 2, "img_size": 8}
    return models.create("vit", 10, in_channels=1, **{**base, **kw})


def _kl_rows(p_t: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
    """Σ p_t (log p_t − log p_s) over the last axis, written out."""
    return (p_t * (p_t.log() - p_s.log())).sum(-1)


# ------------------------------------------------------------------------------------------------- deit
def test_deit_hard_is_ce_of_the_distillation_head_on_the_teachers_argmax():
    torch.manual_seed(0)
    dist, t = torch.randn(6, 10), torch.randn(6, 10)
    loss = losses.create("deit")
    v = loss(Outputs(torch.zeros(6, 10), heads={"dist_0": dist}), Outputs(t), None)
    hand = -torch.stack([dist[i].softmax(0)[t[i].argmax()].log() for i in range(6)]).mean()
    assert torch.allclose(v, hand, atol=1e-6)


def test_deit_soft_is_the_official_sum_over_numel_times_tau_squared():
    torch.manual_seed(1)
    dist, t = torch.randn(6, 10) * 3, torch.randn(6, 10) * 3
    v = losses.create("deit", variant="soft", temperature=2.0)(Outputs(dist, heads={"dist_0": dist}), Outputs(t), None)
    hand = _kl_rows((t / 2).softmax(1), (dist / 2).softmax(1)).sum() * 4 / (6 * 10)
    assert torch.allclose(v, hand, atol=1e-6)


def test_deit_cross_entropy_goes_to_the_class_head_and_heads_are_selected():
    student, teacher = _vit(distill_tokens=2), models.create("cnn", 10, in_channels=1, width=4)
    recipe = Recipe(student=StudentSpec(name="vit"), ce_weight=0.5, terms=[TermSpec(loss="deit", weight=0.5)])
    dist = Distiller(teacher, student, recipe, input_shape=IN)
    assert student.head_mask.tolist() == [1.0, 1.0, 0.0]  # dist_1 is trained by no term: left out of inference
    x, y = torch.randn(8, *IN), torch.randint(0, 10, (8,))
    step = dist.step(x, y)
    out = student.forward_outputs(x)
    t = teacher(x)
    assert torch.allclose(step.losses["ce"], F.cross_entropy(out.heads["cls"], y), atol=1e-6)
    assert torch.allclose(step.losses["deit"], F.cross_entropy(out.heads["dist_0"], t.argmax(1)), atol=1e-6)
    assert torch.allclose(step.losses["loss"], 0.5 * step.losses["ce"] + 0.5 * step.losses["deit"], atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(student(x), (out.heads["cls"] + out.heads["dist_0"]) / 2, atol=1e-5)
    # without a token term, CE trains the fused prediction (every head)
    plain = Distiller(teacher, _vit(distill_tokens=1), Recipe(student=StudentSpec(name="vit"), terms=[
        TermSpec(loss="kd")]), input_shape=IN)
    fused = plain.student(x)
    assert torch.allclose(plain.step(x, y).losses["ce"], F.cross_entropy(fused, y), atol=1e-6)


def test_token_losses_refuse_students_without_their_heads():
    plain = models.shapes(_vit(), IN)
    with pytest.raises(ConfigError, match="distill_tokens: 1"):
        losses.create("deit", student=plain, teacher=plain)
    with pytest.raises(ConfigError, match="distill_tokens: 2"):
        losses.create("cit", student=models.shapes(_vit(distill_tokens=1), IN), teacher=plain)
    with pytest.raises(ConfigError, match="helper_teacher"):
        losses.create("cit").setup(student_model=None)


# -------------------------------------------------------------------------------------------------- cit
def test_cit_sums_one_kl_per_teacher_on_its_own_token():
    torch.manual_seed(2)
    inv = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    asked = []

    def helper(name, kwargs, epochs):
        asked.append((name, kwargs, epochs))
        return inv

    loss = losses.create("cit", temperature=2.0, inv_teacher="rednet_w8", inv_teacher_epochs=3)
    loss.setup(helper_teacher=helper)
    assert asked == [("rednet_w8", {}, 3)]
    x = torch.randn(5, *IN)
    d0, d1, t = torch.randn(5, 10), torch.randn(5, 10), torch.randn(5, 10)
    v = loss(Outputs(torch.zeros(5, 10), heads={"dist_0": d0, "dist_1": d1}), Outputs(t), None, x=x)
    with torch.no_grad():
        ti = inv(x)
    hand = 4 * (_kl_rows((t / 2).softmax(1), (d0 / 2).softmax(1)).mean()
                + _kl_rows((ti / 2).softmax(1), (d1 / 2).softmax(1)).mean())
    assert torch.allclose(v, hand, atol=1e-5)
    assert not any(isinstance(m, torch.nn.Linear) for m in loss.modules())  # the helper is not a trained part


def test_trainer_trains_the_helper_teacher_once_and_caches_it(tmp_path):
    bundle = data.create("digits", seed=0, train_fraction=0.1)
    trainer = Trainer(bundle, device="cpu", cache_dir=tmp_path)
    a = trainer.helper_teacher("rednet_w8", {}, 1)
    files = list(tmp_path.glob("helper-teacher-*.pt"))
    assert len(files) == 1 and not any(p.requires_grad for p in a.parameters())
    rng = torch.get_rng_state()
    b = trainer.helper_teacher("rednet_w8", {}, 1)
    assert torch.equal(torch.get_rng_state(), rng)  # loading (or training) leaves the student's RNG alone
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert trainer.helper_teacher("rednet_w8", {}, 2) is not None and len(list(tmp_path.glob("helper-*.pt"))) == 2
    with pytest.raises(ConfigError, match="rednet_w9"):
        trainer.helper_teacher("rednet_w9")


# ---------------------------------------------------------------------------------------------- tinymim
def _merged(t):
    n, h, length, d = t.shape
    return t.transpose(1, 2).reshape(n, length, h * d)


def _relation_kl_by_heads(s_a, s_b, t_a, t_b, heads):
    """Mean over samples, heads and rows of KL(softmax(t_a t_bᵀ/√d_t) ‖ softmax(s_a s_bᵀ/√d_s)), heads taken as
    contiguous channel slices of the merged (N, L, D) projections, one head at a time."""
    vals = []
    for h in range(heads):
        ds, dt = s_a.shape[-1] // heads, t_a.shape[-1] // heads
        sa, sb = s_a[..., h * ds:(h + 1) * ds], s_b[..., h * ds:(h + 1) * ds]
        ta, tb = t_a[..., h * dt:(h + 1) * dt], t_b[..., h * dt:(h + 1) * dt]
        p_s = torch.softmax(sa @ sb.transpose(1, 2) / math.sqrt(ds), -1)
        p_t = torch.softmax(ta @ tb.transpose(1, 2) / math.sqrt(dt), -1)
        vals.append(_kl_rows(p_t, p_s))
    return torch.stack(vals).mean()


def test_tinymim_equal_grids_and_heads_by_hand():
    s, t = _vit(1, depth=2, heads=2), _vit(2, depth=4, width=32, heads=2)
    x = torch.randn(4, *IN)
    so, to = s.forward_outputs(x), t.forward_outputs(x).detach()
    loss = losses.create("tinymim", student=models.shapes(s, IN), teacher=models.shapes(t, IN))
    assert loss.layer_pairs == [(2, 1)]  # teacher deeper: block ceil(0.75·4) = 3 (index 2), student's last
    sq, sk, sv = map(_merged, so.attention[1])
    tq, tk, tv = map(_merged, to.attention[2])
    hand = _relation_kl_by_heads(sq, sk, tq, tk, 2) + _relation_kl_by_heads(sv, sv, tv, tv, 2)
    assert torch.allclose(loss(so, to, None), hand, atol=1e-5)


def test_tinymim_reshapes_heads_drops_distillation_tokens_and_resamples_the_teacher_grid():
    # student: 2 heads, two distillation tokens, patch 4 -> 2×2 grid; teacher: 4 heads, patch 2 -> 4×4 grid
    s = _vit(3, patch_size=4, heads=2, distill_tokens=2)
    t = _vit(4, depth=2, width=32, heads=4)
    x = torch.randn(3, *IN)
    so, to = s.forward_outputs(x), t.forward_outputs(x).detach()
    loss = losses.create("tinymim", student=models.shapes(s, IN), teacher=models.shapes(t, IN), temperature=1.0)
    assert loss.layer_pairs == [(1, 1)]

    def student_tokens(a):
        m = _merged(a)
        return torch.cat([m[:, :1], m[:, 3:]], 1)  # class token + 4 patches (distillation tokens dropped)

    def teacher_tokens(a):
        m = _merged(a)
        g = m[:, 1:].reshape(3, 4, 4, 32)
        pooled = (g[:, 0::2, 0::2] + g[:, 0::2, 1::2] + g[:, 1::2, 0::2] + g[:, 1::2, 1::2]) / 4  # 2×2 means
        return torch.cat([m[:, :1], pooled.reshape(3, 4, 32)], 1)

    sq, sk, sv = map(student_tokens, so.attention[1])
    tq, tk, tv = map(teacher_tokens, to.attention[1])
    hand = _relation_kl_by_heads(sq, sk, tq, tk, 4) + _relation_kl_by_heads(sv, sv, tv, tv, 4)
    assert torch.allclose(loss(so, to, None), hand, atol=1e-5)
    two = losses.create("tinymim", student=models.shapes(s, IN), teacher=models.shapes(t, IN), heads=2)
    hand2 = _relation_kl_by_heads(sq, sk, tq, tk, 2) + _relation_kl_by_heads(sv, sv, tv, tv, 2)
    assert torch.allclose(two(so, to, None), hand2, atol=1e-5)
    with pytest.raises(ConfigError, match="3 heads"):
        losses.create("tinymim", student=models.shapes(s, IN), teacher=models.shapes(t, IN), heads=3)


def test_tinymim_layer_choice_and_searched_pairs():
    assert tinymim_teacher_block(24, 12) == 17  # ViT-L -> ViT-B: block 18 of 24 (the official code)
    assert tinymim_teacher_block(12, 12) == 11 and tinymim_teacher_block(6, 4) == 4
    s, t = models.shapes(_vit(depth=2), IN), models.shapes(_vit(depth=4), IN)
    assert losses.create("tinymim", student=s, teacher=t, pairs=[(1, 0), (3, 1)]).layer_pairs == [(1, 0), (3, 1)]
    cnn = models.shapes(models.create("cnn", 10, in_channels=1, width=4), IN)
    with pytest.raises(ConfigError, match="teacher exposes no attention"):
        losses.create("tinymim", student=s, teacher=cnn)
    with pytest.raises(ConfigError, match="student exposes no attention"):
        losses.create("vit_attention", student=cnn, teacher=t)


# ------------------------------------------------------------------------------------------ vit_attention
def test_vit_attention_per_head_mean_and_mse_by_hand():
    s, t = _vit(5, depth=2, heads=2), _vit(6, depth=2, width=32, heads=2)
    x = torch.randn(3, *IN)
    so, to = s.forward_outputs(x), t.forward_outputs(x).detach()
    sh, th = models.shapes(s, IN), models.shapes(t, IN)
    kl = losses.create("vit_attention", student=sh, teacher=th, pairs=[(1, 1)])
    sq, sk, _ = map(_merged, so.attention[1])
    tq, tk, _ = map(_merged, to.attention[1])
    assert torch.allclose(kl(so, to, None), _relation_kl_by_heads(sq, sk, tq, tk, 2), atol=1e-5)

    def maps(q, k, heads):
        d = q.shape[-1] // heads
        return torch.stack([torch.softmax(q[..., h * d:(h + 1) * d] @ k[..., h * d:(h + 1) * d].transpose(1, 2)
                                          / math.sqrt(d), -1) for h in range(heads)], 1)

    a_s, a_t = maps(sq, sk, 2), maps(tq, tk, 2)
    mse = losses.create("vit_attention", student=sh, teacher=th, pairs=[(1, 1)], distance="mse")
    assert torch.allclose(mse(so, to, None), ((a_s - a_t) ** 2).mean(), atol=1e-6)
    mean = losses.create("vit_attention", student=sh, teacher=th, pairs=[(1, 1)], heads="mean")
    assert torch.allclose(mean(so, to, None), _kl_rows(a_t.mean(1), a_s.mean(1)).mean(), atol=1e-5)
    t4 = _vit(7, depth=2, width=32, heads=4)  # head counts differ: head-averaged maps
    t4o = t4.forward_outputs(x).detach()
    tq4, tk4, _ = map(_merged, t4o.attention[1])
    mixed = losses.create("vit_attention", student=sh, teacher=models.shapes(t4, IN), pairs=[(1, 1)])
    want = _kl_rows(maps(tq4, tk4, 4).mean(1), a_s.mean(1)).mean()
    assert torch.allclose(mixed(so, t4o, None), want, atol=1e-5)
    assert losses.create("vit_attention", student=sh, teacher=th).layer_pairs == [(1, 1)]


# ------------------------------------------------------------------------------------------------ training
def _train(teacher, student, terms, ce_weight=1.0, steps=40):
    torch.manual_seed(0)
    x, y = torch.randn(32, *IN), torch.randint(0, 10, (32,))
    dist = Distiller(teacher, student, Recipe(student=StudentSpec(name="vit"), ce_weight=ce_weight, terms=terms),
                     input_shape=IN)
    opt = torch.optim.Adam(dist.trainable_parameters(), lr=3e-3)
    keys = [t.key for t in dist.terms]
    first = None
    for _ in range(steps):
        out = dist.step(x, y).losses
        if first is None:
            first = {k: float(out[k].detach()) for k in keys}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    last = {k: float(dist.step(x, y).losses[k].detach()) for k in keys}
    return first, last


def test_cnn_to_vit_distillation_lowers_its_losses():
    torch.manual_seed(0)
    teacher = models.create("cnn", 10, in_channels=1, width=8)
    first, last = _train(teacher, _vit(distill_tokens=1),
                         [TermSpec(loss="deit", weight=0.5), TermSpec(loss="fitnet", weight=1.0, pairs="auto")],
                         ce_weight=0.5)
    assert last["deit"] < 0.5 * first["deit"] and last["fitnet"] < 0.7 * first["fitnet"], (first, last)


def test_vit_to_vit_relation_distillation_lowers_its_losses():
    teacher = _vit(9, depth=3, width=32, heads=4)
    first, last = _train(teacher, _vit(10), [TermSpec(loss="tinymim", weight=1.0),
                                             TermSpec(loss="vit_attention", weight=1.0, pairs={"depths": [1.0]})],
                         ce_weight=0.0)
    assert last["tinymim"] < 0.7 * first["tinymim"] and last["vit_attention"] < 0.7 * first["vit_attention"], (
        first, last)


def test_cached_transformer_teacher_keeps_its_attention(tmp_path):
    bundle = data.create("digits", seed=0, train_fraction=0.1)
    teacher = _vit(11).eval()
    src = make_teacher_source("cached", teacher, bundle, torch.device("cpu"), cache_dir=tmp_path, key="vit")
    x, _, idx = next(iter(bundle.loader("train", 8, shuffle=True, seed=0)))
    cached = src.batch(x, idx, needs_feats=True)
    with torch.no_grad():
        online = teacher.forward_outputs(x)
    assert torch.allclose(cached.attention[1].v, online.attention[1].v, atol=1e-5)
    assert torch.allclose(cached.heads["cls"], online.heads["cls"], atol=1e-5)
    again = make_teacher_source("cached", teacher, bundle, torch.device("cpu"), cache_dir=tmp_path, key="vit")
    assert torch.equal(again.batch(x, idx, needs_feats=True).attention[0].q, cached.attention[0].q)


def test_cit_recipe_fits_with_the_trainer(tmp_path):
    bundle = data.create("digits", seed=0, train_fraction=0.1)
    teacher = models.create("cnn", 10, in_channels=1, width=4)
    trainer = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path)
    recipe = Recipe(student=StudentSpec(name="cit_t8"), terms=[TermSpec(loss="cit", params={"inv_teacher": "rednet_w8"})],
                    optim=OptimSpec(name="adamw", lr=1e-3, epochs=1, batch_size=32))
    res = trainer.fit(recipe, measure=False)
    assert res.student.head_mask.tolist() == [1.0, 1.0, 1.0] and 0 <= res.metrics["val_acc"] <= 1
    assert len(list(tmp_path.glob("helper-teacher-*.pt"))) == 1
    assert res.history[0]["train_cit"] > 0
