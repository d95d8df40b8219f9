"""The augmented-view teacher cache (FKD): crop+flip views as parameters, cached-view KD equal to online KD on
the same views, top-k soft labels, keying (a changed teacher, K or seed is rebuilt, never reused)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autokd import Distiller, data, models
from autokd.config import StudyConfig
from autokd.data.augment import CropFlip
from autokd.errors import ConfigError
from autokd.recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from autokd.train import OnlineTeacher, Trainer, make_teacher_source
from autokd.train.views import ViewsTeacher

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundle():
    return data.create("fake", image_size=8, channels=3, n=160, num_classes=6, augment="crop_flip", seed=1)


@pytest.fixture(scope="module")
def teacher(bundle):
    torch.manual_seed(0)
    return models.create("cnn", bundle.num_classes, in_channels=3, width=8).eval()


def _kd_recipe(seed=0, epochs=2):
    return Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                  terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                  optim=OptimSpec(epochs=epochs, batch_size=32, lr=0.05), seed=seed)


def test_crop_flip_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 6, 7)).astype(np.float32)
    aug = CropFlip(pad=2)
    params = aug.sample(5, torch.Generator().manual_seed(3))
    got = aug.apply(torch.from_numpy(x), params).numpy()
    for i, (dy, dx, flip) in enumerate(params.tolist()):
        padded = np.pad(x[i], ((0, 0), (2, 2), (2, 2)))
        crop = padded[:, dy:dy + 6, dx:dx + 7]
        np.testing.assert_array_equal(got[i], crop[:, :, ::-1] if flip else crop)
    assert params[:, :2].min() >= 0 and params[:, :2].max() <= 4 and set(params[:, 2].tolist()) <= {0, 1}


def test_fake_crop_flip_augments_only_the_training_split(bundle):
    assert not bundle.deterministic_train and bundle.info["augment"] == "crop_flip" and bundle.info["pad"] == 4
    assert bundle.train_eval.augment is None and bundle.train.x is bundle.train_eval.x
    loader = bundle.loader("train", 200, shuffle=False, seed=0)
    a, b = next(iter(loader))[0], next(iter(loader))[0]  # two epochs: other views
    again = next(iter(bundle.loader("train", 200, shuffle=False, seed=0)))[0]
    assert not torch.equal(a, b) and not torch.equal(a, bundle.train.x) and torch.equal(a, again)
    plain = data.create("fake", image_size=8, channels=3, n=160, num_classes=6, seed=1)
    assert plain.info["fingerprint"] != bundle.info["fingerprint"]


def test_views_loader_serves_exactly_the_stored_views(bundle, teacher, tmp_path):
    src = ViewsTeacher(teacher, bundle, CPU, cache_dir=tmp_path, views=3, seed=5)
    params = src.view_params()
    loader = src.train_loader(bundle, 50, seed=2)
    seen = torch.zeros(len(bundle.train), 3, dtype=torch.bool)
    for _ in range(4):
        for x, _, idx in loader:
            v = src.current_view[idx]
            seen[idx, v] = True
            ref = src.augment.apply(bundle.train.x[idx], params[idx, v])
            assert torch.equal(x, ref)
    assert seen.float().mean() > 0.7  # 4 epochs x 1 view of 3 per image: most (image, view) pairs visited


@pytest.mark.parametrize("loss, params", [("kd", {"temperature": 4.0}), ("logit_mse", {})])
def test_cached_view_losses_equal_online_losses_on_the_same_views(bundle, teacher, tmp_path, loss, params):
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                    terms=[TermSpec(loss=loss, weight=0.9, params=params)])
    d = Distiller(teacher, models.from_spec(recipe.student, 6, 3), recipe, input_shape=(3, 8, 8))
    src = make_teacher_source("views:4", teacher, bundle, CPU, cache_dir=tmp_path, seed=0)
    online = OnlineTeacher(teacher)
    loader = src.train_loader(bundle, 32, seed=1)
    n = 0
    for _ in range(2):
        for x, y, idx in loader:
            a = d(x, y, teacher_outputs=src.batch(x, idx))
            b = d(x, y, teacher_outputs=online.batch(x, idx))
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
            n += 1
    assert n == 2 * len(loader) and float(a["distill"].detach()) > 0


def test_topk_soft_labels_keep_the_top_probabilities_and_spread_the_rest(bundle, teacher, tmp_path):
    src = make_teacher_source("views:2", teacher, bundle, CPU, cache_dir=tmp_path, seed=0, topk=2)
    x, y, idx = next(iter(src.train_loader(bundle, 40, seed=0)))
    p_stored = src.batch(x, idx).logits.softmax(1)
    p_true = teacher(x).softmax(1)
    top, top_i = p_true.topk(2, dim=1)
    torch.testing.assert_close(p_stored.gather(1, top_i), top, rtol=1e-4, atol=1e-6)
    rest = (1 - top.sum(1, keepdim=True)) / 4  # 6 classes, 2 kept: the rest mass spread over 4
    mask = torch.ones_like(p_true, dtype=torch.bool).scatter_(1, top_i, False)
    torch.testing.assert_close(p_stored[mask].view(-1, 4), rest.expand(-1, 4), rtol=1e-4, atol=1e-6)


def test_cache_is_keyed_by_teacher_views_and_seed_and_never_reused_stale(bundle, teacher, tmp_path, monkeypatch):
    builds = []
    original = ViewsTeacher._build

    def counting(self, kind):
        builds.append((self.views, self.seed))
        return original(self, kind)

    monkeypatch.setattr(ViewsTeacher, "_build", counting)

    def logits(model, views, seed):
        src = ViewsTeacher(model, bundle, CPU, cache_dir=tmp_path, views=views, seed=seed)
        x, _, idx = next(iter(src.train_loader(bundle, 16, seed=0)))
        return src, src.batch(x, idx).logits, model(x)

    a, la, _ = logits(teacher, 2, 0)
    b, lb, _ = logits(teacher, 2, 0)  # same teacher, K and seed: reused from disk
    assert builds == [(2, 0)] and torch.equal(la, lb) and a.path() == b.path()
    logits(teacher, 3, 0)
    logits(teacher, 2, 1)
    assert builds == [(2, 0), (3, 0), (2, 1)]
    changed = models.create("cnn", 6, in_channels=3, width=8).eval()
    changed.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        next(changed.parameters()).add_(0.5)
    c, lc, online = logits(changed, 2, 0)
    assert len(builds) == 4 and c.path() != a.path()
    torch.testing.assert_close(lc, online, rtol=1e-5, atol=1e-6)  # the changed teacher's outputs, not stale ones
    (a.path() / "meta.json").write_text("{not json")  # corrupt: rebuilt, never trusted
    logits(teacher, 2, 0)
    assert len(builds) == 5


def test_trainer_fits_on_views_and_teacher_cache_modes(bundle, teacher, tmp_path):
    src = make_teacher_source("auto", teacher, bundle, CPU, cache_dir=tmp_path)
    assert isinstance(src, ViewsTeacher) and src.views == 8
    res = Trainer(bundle, teacher=teacher, teacher_source=src, device="cpu").fit(_kd_recipe(), measure=False)
    assert len(res.history) == 2 and res.history[-1]["train_kd"] > 0
    assert isinstance(make_teacher_source("online", teacher, bundle, CPU), OnlineTeacher)
    digits = data.create("digits", train_fraction=0.2)
    with pytest.raises(ConfigError, match="parameterised training augmentation"):
        make_teacher_source("views:4", teacher, digits, CPU)
    with pytest.raises(ConfigError, match="deterministic"):
        make_teacher_source("cached", teacher, bundle, CPU)
    for bad in ("views:0", "views:x", "sometimes"):
        with pytest.raises(ConfigError, match="teacher_cache"):
            make_teacher_source(bad, teacher, bundle, CPU)


def test_study_config_accepts_views_and_refuses_bad_modes(tmp_path):
    path = tmp_path / "s.yaml"
    for mode in ("views:4", "views:0"):
        path.write_text(f"name: s\nteacher: {{name: cnn}}\nspace: x.yaml\nteacher_cache: '{mode}'\n")
        if mode == "views:4":
            assert StudyConfig.load(path).teacher_cache == "views:4"
        else:
            with pytest.raises(ConfigError, match="teacher_cache.*views:K"):
                StudyConfig.load(path)


def test_kd_loss_on_views_is_hintons_formula(bundle, teacher, tmp_path):
    """A second, independent reference: the loss from the stored logits equals KL·T² computed by hand."""
    src = make_teacher_source("views:2", teacher, bundle, CPU, cache_dir=tmp_path)
    x, y, idx = next(iter(src.train_loader(bundle, 32, seed=0)))
    s = torch.randn(len(x), 6)
    t = teacher(x)
    pt = F.softmax(t / 4, 1)
    ref = (pt * (pt.log() - F.log_softmax(s / 4, 1))).sum(1).mean() * 16
    from autokd.losses import create
    from autokd.outputs import Outputs

    got = create("kd", temperature=4.0)(Outputs(logits=s), src.batch(x, idx), y)
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("budget_mb, stored", [(64.0, True), (0.0, False)])
def test_feature_terms_on_views_equal_online_whether_stored_or_run_online(bundle, teacher, tmp_path, budget_mb,
                                                                          stored):
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 2}), ce_weight=0.1,
                    terms=[TermSpec(loss="at", weight=1.0, pairs="auto"), TermSpec(loss="kd", weight=0.9)])
    d = Distiller(teacher, models.from_spec(recipe.student, 6, 3), recipe, input_shape=(3, 8, 8))
    assert d.needs_feats
    logs: list[str] = []
    src = make_teacher_source("views:2", teacher, bundle, CPU, cache_dir=tmp_path, log=logs.append,
                              feature_budget_mb=budget_mb)
    online = OnlineTeacher(teacher)
    for x, y, idx in src.train_loader(bundle, 40, seed=3):
        got = src.batch(x, idx, needs_feats=True)
        ref = online.batch(x, idx, needs_feats=True)
        assert len(got.feats) == len(ref.feats) > 0
        for a, b in zip(got.feats + [got.logits], ref.feats + [ref.logits], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        losses = d(x, y, teacher_outputs=got)
        expected = d(x, y, teacher_outputs=ref)
        for k in losses:
            torch.testing.assert_close(losses[k], expected[k], rtol=1e-5, atol=1e-6)
    assert src.features_fit() is stored
    assert any(("stored with the views" if stored else "computed online") in m for m in logs)
    assert (src.path("outputs").is_dir()) is stored


def test_outputs_flatten_round_trip():
    from autokd.outputs import QKV, Outputs
    from autokd.train.views import flatten_outputs, unflatten_outputs

    t = [torch.randn(2, 3) for _ in range(9)]
    o = Outputs(logits=t[0], feats=[t[1], t[2]], preacts=[t[3]], embedding=t[4], heads={"dist.x": t[5]},
                attention=[QKV(t[6], t[7], t[8])])
    back = unflatten_outputs(flatten_outputs(o))
    assert back.logits is t[0] and back.feats == [t[1], t[2]] and back.preacts == [t[3]]
    assert back.embedding is t[4] and back.heads == {"dist.x": t[5]} and back.tokens == {}
    assert [tuple(a) for a in back.attention] == [(t[6], t[7], t[8])]
