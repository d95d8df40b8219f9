"""Default term weight ranges follow the study's models (AT's with the compared map sizes); scale-1 losses, an
explicit ``weight`` and the study fingerprint are untouched."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from autokd import models
from autokd.config import StudyConfig
from autokd.search import trial_record as tr
from autokd.search.params import Range
from autokd.search.run import run_search
from autokd.search.space import SearchSpace
from autokd.search.tree import walk
from autokd.search.validate import study_fingerprint
from autokd.search.weight_ranges import ModelWeightRange, space_for_models

ROOT = Path(__file__).resolve().parents[2]
AT_RANGE = (10.0, 1.0e4)  # at.weight_range: tuned where the pairs compare 32², 16², 8² maps (Σ 1/(H·W) = 21/1024)


def _space(terms, students=None) -> SearchSpace:
    return SearchSpace.from_dict({"version": 1, "student": students or [{"name": "cnn", "kwargs": {"width": 3}}],
                                  "ce_weight": 1.0, "terms": terms, "scheme": "standard", "optim": {"lr": 0.05}})


def _weight(space: SearchSpace, name: str):
    return next(d.param for d in walk(space.tree()) if d.name == name)


def _stages(shapes) -> list[tuple[int, int]]:
    return [tuple(f[1:3]) for f in shapes.feats]


def _models(input_shape, student_kwargs=None):
    t = models.shapes(models.create("cnn", 10, in_channels=input_shape[0], width=32), input_shape)
    return t, [models.shapes(models.create("cnn", 10, in_channels=input_shape[0], **(student_kwargs or {"width": 3})),
                             input_shape)]


def test_at_range_on_8x8_digits_and_on_32x32_inputs_is_its_range_times_the_hand_computed_scale():
    sp = _space([{"loss": "at", "pairs": "auto"}])
    assert (_weight(sp, "terms.0.at.weight").low, _weight(sp, "terms.0.at.weight").high) == AT_RANGE  # no models
    t8, s8 = _models((1, 8, 8))
    t32, s32 = _models((3, 32, 32))
    assert _stages(t8) == _stages(s8[0]) == [(8, 8), (4, 4), (2, 2)]  # the sizes the arithmetic below assumes
    assert _stages(t32) == _stages(s32[0]) == [(32, 32), (16, 16), (8, 8)]
    # auto pairs align the stages after the stem, (1, 1) and (2, 2): digits compare 16 and 4 positions,
    # Σ 1/(H·W) = 5/16, scale (21/1024)/(5/16) = 0.065625; 32×32 inputs compare 256 and 64, Σ = 5/256, 21/20
    on8 = _weight(space_for_models(sp, t8, 10, (1, 8, 8)), "terms.0.at.weight")
    on32 = _weight(space_for_models(sp, t32, 10, (3, 32, 32)), "terms.0.at.weight")
    assert isinstance(on8, Range) and on8.log and (on8.low, on8.high) == pytest.approx((0.65625, 656.25))
    assert (on32.low, on32.high) == pytest.approx((10.5, 10500.0))


def test_several_students_and_searched_pairs_take_the_union_of_their_ranges():
    t8, _ = _models((1, 8, 8))
    students = [{"name": "cnn", "kwargs": {"width": 3, "depth": [2, 3]}}]
    sp = space_for_models(_space([{"loss": "at", "pairs": "auto"}], students), t8, 10, (1, 8, 8))
    # depth 3: scale 0.065625 (above); depth 2 (stages 8², 4²) pairs its last stage with the teacher's 2² one,
    # pooled to 4 positions: scale (21/1024)/(1/4) = 21/256
    w = _weight(sp, "terms.0.at.weight")
    assert (w.low, w.high) == pytest.approx((10 * 0.065625, 1.0e4 * 21 / 256))
    # searched pairs at depths 0.5 and 1.0 of two 3-stage cnns: stage 1 (4², 16 positions) and stage 2 (2², 4);
    # the sets {0.5}, {1.0}, {0.5, 1.0} give scales 21/64, 21/256, 21/320 of which the union is taken
    searched = _space([{"loss": "at", "pairs": {"search": {"depths": [0.5, 1.0], "max": 2}}}])
    w = _weight(space_for_models(searched, t8, 10, (1, 8, 8)), "terms.0.at.weight")
    assert (w.low, w.high) == pytest.approx((10 * 21 / 320, 1.0e4 * 21 / 64))


def test_scale_one_losses_and_explicit_weights_are_unchanged():
    t8, s8 = _models((1, 8, 8))
    kd_only = _space({"pick": {"min": 1, "max": 2}, "from": {"kd": {}, "sp": {}, "logit_mse": {}}})
    assert space_for_models(kd_only, t8, 10, (1, 8, 8)) is kd_only  # no shape-dependent term: nothing is built
    mixed = _space({"pick": {"min": 1, "max": 1}, "from": {"kd": {}, "at": {"weight": {"low": 1.0, "high": 2.0,
                                                                                       "log": True}}}})
    forced = mixed.with_weight_range(ModelWeightRange(t8, s8))
    assert forced.describe() == mixed.describe()
    from autokd import losses

    kd = _weight(forced, "terms.0.kd.weight")
    assert (kd.low, kd.high) == tuple(losses.get("kd").weight_range)
    # a seeded study over them suggests the very same parameters with or without the models
    studies = [optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5)) for _ in range(2)]
    for _ in range(20):
        a, b = studies[0].ask(), studies[1].ask()
        ra, rb = mixed.suggest(a), forced.suggest(b)
        assert a.params == b.params and ra.model_dump(exclude={"provenance"}) == rb.model_dump(exclude={"provenance"})
        studies[0].tell(a, 0.5)
        studies[1].tell(b, 0.5)


def test_fingerprint_is_the_files_and_still_detects_a_changed_space():
    cfg = StudyConfig.load(ROOT / "studies" / "digits.yaml")
    sp = _space([{"loss": "at", "pairs": "auto"}])
    t8, _ = _models((1, 8, 8))
    resolved = space_for_models(sp, t8, 10, (1, 8, 8))
    assert resolved.describe() != sp.describe()
    assert study_fingerprint(cfg, resolved) == study_fingerprint(cfg, sp)  # a resumed study matches
    again = pickle.loads(pickle.dumps(resolved))  # the resolved space travels to other processes
    assert again.describe() == resolved.describe()
    other = _space([{"loss": "at", "pairs": "auto", "weight": 5.0}])
    assert study_fingerprint(cfg, other)["space"] != study_fingerprint(cfg, sp)["space"]


def test_a_study_searches_and_records_the_weight_of_its_models(tmp_path):
    space = tmp_path / "at.yaml"
    space.write_text("""
version: 1
student: [{name: cnn, kwargs: {width: 2}}]
ce_weight: 1.0
terms: [{loss: at, pairs: auto}]
scheme: standard
optim: {lr: 0.05, batch_size: 32, epochs: 1}
""")
    path = tmp_path / "study.yaml"
    path.write_text(f"""
name: at_range
device: cpu
data: {{name: digits, train_fraction: 0.3}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {space}
search: {{sampler: random, pruner: none, trials: 2, baselines: false}}
""")
    study = run_search(StudyConfig.load(path), log=lambda *a: None)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        d = t.distributions["terms.0.at.weight"]
        assert (d.low, d.high) == pytest.approx((0.65625, 656.25))  # digits 8×8: AT's range × 0.065625
        assert tr.recipe_of(t).terms[0].weight == t.params["terms.0.at.weight"]
