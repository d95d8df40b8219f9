"""The tree samplers' shared pieces: the normal CDF of the Parzen windows, numeric ranges on [0, 1], the
Parzen choice, and trial records (baselines skipped, diverged trials worst)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from autokd.search import trial_record
from autokd.search.samplers._tree.distributions import contains, from_unit, to_unit
from autokd.search.samplers._tree.parzen import normal_cdf, parzen_pick
from autokd.search.samplers._tree.records import TreeInfo, branch_key, build_records


def test_normal_cdf_matches_tabulated_values_and_the_erf_form():
    z = np.array([0.0, 1.0, -1.0, 1.959963984540054, -10.0])
    # Abramowitz & Stegun 26.2; Phi(-10) = 7.6198530241605e-24
    expected = [0.5, 0.8413447460685429, 0.15865525393145707, 0.975, 7.6198530241605e-24]
    np.testing.assert_allclose(normal_cdf(z), expected, rtol=1e-12, atol=0)
    grid = np.linspace(-5, 5, 101).reshape(101, 1)  # any shape is kept
    via_erf = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in grid.ravel()]))
    assert normal_cdf(grid).shape == (101, 1)
    np.testing.assert_allclose(normal_cdf(grid).ravel(), via_erf, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(normal_cdf(grid) + normal_cdf(-grid), 1.0, rtol=0, atol=2e-16)


def test_unit_interval_of_a_log_range():
    d = FloatDistribution(1e-3, 10.0, log=True)
    assert to_unit(d, 0.1) == pytest.approx(0.5)  # log10: -1 is halfway between -3 and 1
    assert from_unit(d, 0.5) == pytest.approx(0.1)
    assert to_unit(d, 20.0) is None  # outside the (possibly changed) range
    assert type(from_unit(d, 0.3)) is float


def test_every_grid_value_owns_an_equal_share_of_the_unit_interval():
    d = IntDistribution(0, 10, step=2)  # 6 values, each owning 1/6 of [0, 1]
    values = [0, 2, 4, 6, 8, 10]
    assert [from_unit(d, (k + 0.5) / 6) for k in range(6)] == values
    assert [to_unit(d, v) for v in values] == pytest.approx([(k + 0.5) / 6 for k in range(6)])
    assert from_unit(d, 0.0) == 0 and from_unit(d, 1.0) == 10 and type(from_unit(d, 0.4)) is int
    stepped = FloatDistribution(-1.0, 1.0, step=0.5)
    assert from_unit(stepped, 0.45) == 0.0 and from_unit(stepped, 0.95) == 1.0
    assert to_unit(FloatDistribution(1.0, 1.0), 1.0) == 0.5  # a single point


def test_contains():
    assert contains(IntDistribution(0, 10, step=2), 4)
    assert not contains(IntDistribution(0, 10, step=2), 12)
    assert not contains(CategoricalDistribution(["a", "b"]), "c")
    assert not contains(FloatDistribution(0.0, 1.0), "x")


def test_parzen_pick_prefers_the_region_of_the_good_observations():
    xs = np.array([0.18, 0.2, 0.22, 0.75, 0.8, 0.85, 0.9, 0.7, 0.78, 0.82])
    qs = np.array([1.0, 0.95, 0.9, 0.3, 0.2, 0.1, 0.0, 0.25, 0.15, 0.05])
    picks = [parzen_pick(xs, qs, np.ones(10), np.random.RandomState(s), gamma=0.3, n_candidates=24)
             for s in range(40)]
    assert all(0.0 <= p <= 0.5 for p in picks)
    # the same points with the qualities reversed: the picks follow the qualities, not the points
    picks = [parzen_pick(xs, 1.0 - qs, np.ones(10), np.random.RandomState(s), gamma=0.3, n_candidates=24)
             for s in range(40)]
    assert all(0.5 <= p <= 1.0 for p in picks)


def test_records_normalise_skip_baselines_and_put_diverged_trials_last():
    arch, x = CategoricalDistribution(["a", "b"]), FloatDistribution(0.0, 1.0)
    dists = {"arch": arch, "x": x}

    def trial(a, value=None, state=TrialState.COMPLETE, inter=None, attrs=None):
        return create_trial(params={"arch": a, "x": 0.5}, distributions=dists, value=value, state=state,
                            intermediate_values=inter or {}, user_attrs=attrs or {})

    diverged = optuna.create_study()  # record the diverged flag exactly as the objective does
    t = diverged.ask()
    trial_record.record_pruned(t, "training diverged at epoch 1", diverged=True)
    trials = [
        trial("a", 2.0), trial("b", 4.0), trial("a", 3.0),
        trial("b", state=TrialState.PRUNED, inter={0: 1.5, 1: 2.5}),
        trial("a", state=TrialState.PRUNED, inter={0: 3.9}, attrs=dict(t.user_attrs)),
        trial("b", state=TrialState.FAIL),
        create_trial(params={}, distributions={}, value=100.0,
                     user_attrs=trial_record.baseline_attrs(trial_record.Baseline.KD, None)),
    ]
    for i, tr in enumerate(trials):
        tr.number = i
    records, low, high = build_records(trials, maximize=True, info=TreeInfo(None, None, "test"))
    assert [r.number for r in records] == [0, 1, 2, 3, 4, 5]  # the baseline is skipped
    assert (low, high) == (2.0, 4.0)  # the baseline's 100 does not stretch the scale
    # q = (v - 2) / 2; pruned at 2.5 -> 0.25; diverged and failed -> 0
    assert [r.q for r in records] == pytest.approx([0.0, 1.0, 0.5, 0.25, 0.0, 0.0])
    assert [r.diverged for r in records] == [False, False, False, False, True, False]
    assert records[1].path == (branch_key("arch", "b"),) and records[1].node_of["x"] == records[1].path
    minimised, low, high = build_records(trials, maximize=False, info=TreeInfo(None, None, "test"))
    assert (low, high) == (-4.0, -2.0)
    assert [r.q for r in minimised] == pytest.approx([1.0, 0.0, 0.5, 0.75, 0.0, 0.0])
