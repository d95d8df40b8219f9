"""Each training scheme shows its mechanism acting on a short digits run (tiny CNNs, 1-4 epochs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autokd import data, models, schemes
from autokd.distiller import Step
from autokd.errors import ConfigError
from autokd.outputs import Outputs
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.schemes import DOTOptimizer
from autokd.schemes.online import DLB, DML, sigmoid_rampup
from autokd.schemes.schedules import schedule_scale
from autokd.train import Trainer, check_recipe
from autokd.train.trainer import Trainer as _Trainer

ALL = {"standard", "eskd", "weight_schedule", "dot", "takd", "dml", "ban", "dlb", "mean_teacher", "rocket", "sla",
       "self_distill", "tolerant_generations", "dgkd", "reskd", "hsakd", "kcd", "ferkd", "orc", "hwm", "nasty"}


@pytest.fixture(scope="module")
def bundle():
    return data.create("digits", train_fraction=0.2)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    r = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 8}), optim=OptimSpec(epochs=2, batch_size=32))
    return Trainer(bundle, device="cpu").fit(r, measure=False).student.eval()


def _recipe(scheme="standard", params=None, epochs=2, width=2, ce_weight=0.1, terms=True, **optim):
    kd = [TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})] if terms else []
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": width}), ce_weight=ce_weight, terms=kd,
                  scheme=SchemeSpec(name=scheme, params=params or {}),
                  optim=OptimSpec(epochs=epochs, batch_size=optim.pop("batch_size", 32), **optim))


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    orig = _Trainer.fit

    def fit(self, recipe, **kw):
        calls.append(recipe.student.label())
        return orig(self, recipe, **kw)

    monkeypatch.setattr(_Trainer, "fit", fit)
    return calls


# -- registry and parameters -----------------------------------------------------------------------
def test_names_lists_every_scheme():
    assert ALL <= set(schemes.names())
    for name in schemes.names():
        cls = schemes.get(name)
        assert cls.__doc__ and cls.paper
        for key, spec in cls.hparams.items():
            assert hasattr(spec, "default") and spec.search_spec() is not None, (name, key)
        schemes.create(name)  # the defaults are valid


def test_unknown_scheme_param_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as e:
        schemes.create("eskd", stop_fractoin=0.3)
    msg = str(e.value)
    assert "\n" not in msg and "'stop_fractoin'" in msg and "allowed: stop_fraction" in msg
    with pytest.raises(ConfigError, match="allowed: ensemble, generations"):
        schemes.create("ban", gens=3)
    with pytest.raises(ConfigError, match="must be a number"):
        schemes.create("dot", delta="big")
    with pytest.raises(ConfigError, match="must be one of"):
        schemes.create("weight_schedule", mode="exp")
    d = _recipe("dml", {}, terms=False).to_dict()
    d["scheme"]["params"] = {"peer": 2}
    with pytest.raises(ConfigError, match="scheme.*has no hyper-parameter 'peer'"):  # before anything trains
        check_recipe(Recipe.from_dict(d))


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_scheme_trains_a_digits_student(name, bundle, teacher, tmp_path):
    res = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(_recipe(name, epochs=1),
                                                                                 measure=False)
    h = res.history[-1]
    assert math.isfinite(h["train_loss"]) and 0 <= h["val_acc"] <= 1 and res.scheme.name == name


# -- eskd / weight_schedule -------------------------------------------------------------------------
def test_eskd_kd_term_is_exactly_zero_after_its_stop_epoch(bundle, teacher):
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("eskd", {"stop_fraction": 0.5}, epochs=4),
                                                             measure=False)
    kd = [h["train_kd"] for h in res.history]
    assert kd[0] > 0 and kd[1] > 0 and kd[2] == 0.0 and kd[3] == 0.0
    assert res.history[3]["train_loss"] == pytest.approx(res.history[3]["train_task"])


def test_weight_schedule_follows_its_formula(bundle, teacher):
    ws = schemes.create("weight_schedule", mode="linear", warmup_fraction=0.5)
    assert [ws.term_scales(e, 4, ["kd"])["kd"] for e in range(4)] == [0.5, 1.0, 1.0, 1.0]
    cos = schemes.create("weight_schedule", mode="cosine", final_scale=0.2)
    expect = [0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert [cos.term_scales(e, 5, ["kd"])["kd"] for e in range(5)] == pytest.approx(expect)
    assert expect[0] == pytest.approx(1.0) and expect[-1] == pytest.approx(0.2)
    assert schemes.create("weight_schedule", mode="constant").term_scales(3, 5, ["kd"]) == {"kd": 1.0}
    only = schemes.create("weight_schedule", mode="linear", terms="kd_1")
    assert only.term_scales(0, 4, ["kd", "kd_1"]) == {"kd_1": schedule_scale("linear", 0, 4, 0.2, 0.0)}
    # in the loop: the logged weighted distillation = 0.9 × scale × KD, epoch by epoch
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(
        _recipe("weight_schedule", {"mode": "cosine", "final_scale": 0.2}, epochs=3), measure=False)
    for e, h in enumerate(res.history):
        scale = schedule_scale("cosine", e, 3, 0.2, 0.2)
        assert h["train_distill"] == pytest.approx(0.9 * scale * h["train_kd"], rel=1e-5)
    with pytest.raises(ConfigError, match="no term 'at'"):
        Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("weight_schedule", {"terms": "at"}, epochs=1))


# -- dot --------------------------------------------------------------------------------------------
def _toy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g)
    w = torch.randn(2, 3, generator=g)  # shared: task and distillation gradients
    a = torch.randn(2, generator=g)  # task only
    c = torch.randn(3, generator=g)  # distillation only (a connector)

    def losses(w, a, c):
        task = ((x @ w.T + a) ** 2).mean()
        distill = torch.sin((x * c) @ w.T).pow(2).mean()
        return task, distill

    return (w, a, c), losses


def test_dot_step_equals_a_hand_written_two_momentum_update():
    (w0, a0, c0), losses = _toy()
    lr, wd, m, delta = 0.1, 0.01, 0.9, 0.075
    mt, md, mavg = m - delta, m + delta, m  # the official code: larger momentum on the distillation loss
    params = [t.clone().requires_grad_(True) for t in (w0, a0, c0)]
    opt = DOTOptimizer(params, lr=lr, momentum_task=mt, momentum_kd=md, weight_decay=wd)
    dot = schemes.create("dot", delta=delta)
    # the independent computation: plain tensors and the formula
    w, a, c = (t.clone() for t in (w0, a0, c0))
    bw_t = bw_d = ba = bc = None
    for _ in range(3):
        task, distill = losses(*params)
        dot.backward_step({"task": task, "distill": distill, "loss": task + distill}, opt)
        wl, al, cl = (t.clone().requires_grad_(True) for t in (w, a, c))
        t_, d_ = losses(wl, al, cl)
        gw_t, ga = torch.autograd.grad(t_, [wl, al])
        gw_d, gc = torch.autograd.grad(d_, [wl, cl])
        dw_t, da, dc = gw_t + wd * w, ga + wd * a, gc + wd * c
        bw_t = dw_t if bw_t is None else mt * bw_t + dw_t
        bw_d = gw_d if bw_d is None else md * bw_d + gw_d
        ba = da if ba is None else mavg * ba + da
        bc = dc if bc is None else mavg * bc + dc
        w, a, c = w - lr * (bw_t + bw_d), a - lr * ba, c - lr * bc
        for got, want in zip(params, (w, a, c), strict=True):
            assert torch.allclose(got.detach(), want, atol=1e-6)
    st = opt.state[params[0]]
    assert not torch.allclose(st["momentum_task"], st["momentum_kd"])
    assert "momentum_kd" not in opt.state[params[1]] and "momentum_task" not in opt.state[params[2]]


def test_dot_with_zero_delta_is_sgd_with_momentum():
    (w0, a0, c0), losses = _toy()
    p1 = [t.clone().requires_grad_(True) for t in (w0, a0, c0)]
    p2 = [t.clone().requires_grad_(True) for t in (w0, a0, c0)]
    dot = DOTOptimizer(p1, lr=0.1, momentum_task=0.9, momentum_kd=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD(p2, lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        task, distill = losses(*p1)
        schemes.create("dot", delta=0.0).backward_step({"task": task, "distill": distill}, dot)
        sgd.zero_grad()
        sum(losses(*p2)).backward()
        sgd.step()
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(p1, p2, strict=True))


def test_dot_trains_with_two_different_momentum_buffers(bundle, teacher):
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("dot", epochs=1), measure=False)
    opt = res.scheme.optimizer
    assert opt.param_groups[0]["momentum_task"] == pytest.approx(0.825)
    assert opt.param_groups[0]["momentum_kd"] == pytest.approx(0.975)
    p = next(res.student.parameters())
    assert not torch.allclose(opt.state[p]["momentum_task"], opt.state[p]["momentum_kd"])
    with pytest.raises(ConfigError, match="needs optim.name: sgd"):
        Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("dot", epochs=1, name="adamw"))


# -- takd / ban: helpers trained once, cached like the teacher ----------------------------------------
def test_takd_trains_and_caches_the_assistant_once(bundle, teacher, tmp_path, count_fits):
    r = _recipe("takd", {"assistant_epochs": 1}, epochs=1)
    first = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert count_fits == ["cnn(width=2)", "cnn(depth=3,width=4)"]  # the student's fit, then the assistant's
    assert "trained" in first.scheme.events[0] and len(list(tmp_path.glob("takd-assistant-*.pt"))) == 1
    assistant = first.scheme.assistant
    assert isinstance(assistant, models.cnn.SmallCNN) and assistant.width == 4  # between 8 and 2
    count_fits.clear()
    second = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert count_fits == ["cnn(width=2)"] and "loaded" in second.scheme.events[0]  # no training
    sd1, sd2 = assistant.state_dict(), second.scheme.assistant.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]
    # the assistant's outputs replace the teacher's
    x, _, idx = next(iter(bundle.loader("train", 16, shuffle=False)))
    out = second.scheme.teacher_outputs(x, idx, default=lambda: pytest.fail("the teacher was used"))
    assert torch.allclose(out.logits, second.scheme.assistant(x), atol=1e-5)
    # a different assistant is another cache entry
    Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(
        _recipe("takd", {"assistant": "cnn", "assistant_kwargs": {"width": 3}, "assistant_epochs": 1}, epochs=1),
        measure=False)
    assert len(list(tmp_path.glob("takd-assistant-*.pt"))) == 2


def test_takd_and_ban_refuse_feature_terms_and_need_a_term(bundle, teacher):
    from types import SimpleNamespace

    from autokd.schemes._helpers import require_logit_terms

    fake = SimpleNamespace(terms=[SimpleNamespace(key="fitnet", loss=SimpleNamespace(needs={"feats"}))])
    with pytest.raises(ConfigError, match="term 'fitnet' needs the teacher's feats") as e:
        require_logit_terms("takd", fake, "the teacher assistant")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="needs at least one distillation term"):
        Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("ban", terms=False, epochs=1))
    with pytest.raises(ConfigError, match="no default assistant"):
        from autokd.schemes.takd import default_assistant

        default_assistant(models.create("resnet8", 10, in_channels=1), models.create("cnn", 10, in_channels=1))


def test_ban_trains_and_caches_generations(bundle, teacher, tmp_path, count_fits):
    r = _recipe("ban", {"generations": 3, "ensemble": True}, epochs=1)
    first = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert len(count_fits) == 3  # generations 0 and 1, then the final fit (generation 2)
    assert [e.split(":")[0] for e in first.scheme.events] == ["ban-gen0", "ban-gen1"]
    assert all("trained" in e for e in first.scheme.events)
    assert len(list(tmp_path.glob("ban-gen*.pt"))) == 2
    gens = first.scheme.generations
    x, _, idx = next(iter(bundle.loader("train", 16, shuffle=False)))
    out = first.scheme.teacher_outputs(x, idx, default=lambda: pytest.fail("the teacher was used"))
    with torch.no_grad():
        assert torch.allclose(out.logits, (gens[0](x) + gens[1](x)) / 2, atol=1e-5)  # the ensemble teacher
    count_fits.clear()
    second = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(r, measure=False)
    assert len(count_fits) == 1 and all("loaded" in e for e in second.scheme.events)
    assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]
    # generations: 2 reuses generation 0
    count_fits.clear()
    two = Trainer(bundle, teacher=teacher, device="cpu", cache_dir=tmp_path).fit(
        _recipe("ban", {"generations": 2}, epochs=1), measure=False)
    assert len(count_fits) == 1 and "loaded" in two.scheme.events[0]


# -- dml --------------------------------------------------------------------------------------------
def test_dml_peers_are_trained_with_the_student(bundle, teacher, monkeypatch):
    init = {}
    orig = DML.setup

    def setup(self, **kw):
        orig(self, **kw)
        init["peers"] = [p.detach().clone() for p in self.peers.parameters()]

    monkeypatch.setattr(DML, "setup", setup)
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(_recipe("dml", {"peers": 2}, epochs=1),
                                                             measure=False)
    peers = list(res.scheme.peers.parameters())
    assert len(res.scheme.peers) == 2 and len(peers) == len(init["peers"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in peers)
    assert all(not torch.equal(p.detach(), q) for p, q in zip(peers, init["peers"], strict=True) if p.dim() > 1)
    p0, p1 = (list(m.parameters())[0] for m in res.scheme.peers)
    assert not torch.equal(p0, p1)  # own initialisations
    h = res.history[-1]
    assert h["train_dml"] > 0 and h["train_dml_peers"] > 0
    assert h["train_distill"] == pytest.approx(0.9 * h["train_kd"] + h["train_dml"], rel=1e-5)
    assert h["train_loss"] == pytest.approx(h["train_task"] + h["train_distill"] + h["train_dml_peers"], rel=1e-5)
    # without a teacher: mutual learning only
    alone = Trainer(bundle, device="cpu").fit(_recipe("dml", terms=False, ce_weight=1.0, epochs=1), measure=False)
    assert alone.history[-1]["train_dml"] > 0


def test_dml_mutual_terms_follow_the_paper():
    scheme = schemes.create("dml", peers=1)
    peer = nn.Linear(4, 3)
    scheme.peers = nn.ModuleList([peer])
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    s = torch.randn(6, 3, requires_grad=True)
    out = scheme.extra_losses(x, y, torch.arange(6), Step({}, Outputs(logits=s)))
    p_logits = peer(x)

    def kl(target, logits):  # KL(p_target || p_logits), batch mean
        p = F.softmax(target, 1)
        return (p * (F.log_softmax(target, 1) - F.log_softmax(logits, 1))).sum(1).mean()

    assert torch.allclose(out["dml"], kl(p_logits.detach(), s), atol=1e-6)
    assert torch.allclose(out["dml_peers"], F.cross_entropy(p_logits, y) + kl(s.detach(), p_logits), atol=1e-6)


# -- dlb --------------------------------------------------------------------------------------------
def test_dlb_batches_overlap_by_half_and_targets_are_the_last_predictions(bundle, teacher, monkeypatch):
    steps = []
    orig = DLB.extra_losses

    def record(self, x, y, idx, step):
        n = self._overlap
        out = orig(self, x, y, idx, step)
        steps.append({"idx": idx.clone(), "n": n, "logits": step.student.logits.detach().clone(),
                      "targets": self.soft_targets, "dlb": out["dlb"].detach()})
        return out

    monkeypatch.setattr(DLB, "extra_losses", record)
    r = _recipe("dlb", epochs=2, batch_size=32)
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(r, measure=False)
    per_epoch = 2 * len(bundle.loader("train", 32))
    assert len(steps) == 2 * per_epoch
    assert steps[0]["n"] == 0 and steps[0]["targets"] is None and steps[0]["dlb"] == 0
    for prev, cur in zip(steps[:-1], steps[1:], strict=True):
        new_prev = prev["idx"][prev["n"]:]
        n = cur["n"]
        assert n == len(new_prev) and torch.equal(cur["idx"][:n], new_prev)  # the previous second half
        assert len(cur["idx"]) - n <= 16  # plus a new half
        assert torch.equal(cur["targets"], prev["logits"][prev["n"]:])  # the previous step's predictions
        want = F.kl_div(F.log_softmax(cur["logits"][:n] / 3, 1), F.softmax(cur["targets"] / 3, 1),
                        reduction="batchmean") * 9
        assert torch.allclose(cur["dlb"], want, atol=1e-5)
    full = [s for s in steps if s["n"] == 16 and len(s["idx"]) == 32]
    assert len(full) > len(steps) // 2  # batches of 32: 16 overlapping + 16 new
    assert res.history[-1]["train_dlb"] > 0


# -- mean teacher ------------------------------------------------------------------------------------
def test_mean_teacher_ema_equals_the_hand_computed_average(bundle):
    from autokd import Distiller

    r = _recipe("mean_teacher", terms=False, ce_weight=1.0)
    student = models.from_spec(r.student, 10, 1)
    distiller = Distiller(None, student, r, input_shape=(1, 8, 8))
    mt = schemes.create("mean_teacher", ema_decay=0.6)
    mt.setup(distiller=distiller, data=bundle, device=torch.device("cpu"), epochs=1)
    ema = [p.detach().clone() for p in student.parameters()]
    for step in range(1, 5):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))  # any optimiser step
        mt.after_step()
        alpha = min(1 - 1 / (step + 1), 0.6)  # 0.5, then capped at the decay
        ema = [alpha * e + (1 - alpha) * p.detach() for e, p in zip(ema, student.parameters(), strict=True)]
    assert all(torch.allclose(e, q, atol=1e-6) for e, q in zip(ema, mt.ema.parameters(), strict=True))


def test_mean_teacher_adds_a_ramped_consistency_term(bundle, teacher):
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5)) and sigmoid_rampup(5, 5) == 1.0
    assert sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-5 * 0.25)) and sigmoid_rampup(1, 0) == 1.0
    res = Trainer(bundle, teacher=teacher, device="cpu").fit(
        _recipe("mean_teacher", {"rampup_fraction": 0.5}, epochs=2), measure=False)
    mt = res.scheme
    assert mt.global_step == 2 * len(bundle.loader("train", 32)) and mt.ramp() == 1.0
    assert all(h["train_mean_teacher"] > 0 for h in res.history)
    assert any(not torch.equal(e, p) for e, p in zip(mt.ema.parameters(), res.student.parameters(), strict=True))
