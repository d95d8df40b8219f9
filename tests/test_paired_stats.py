"""autokd.stats against printed t tables and hand computations."""

from __future__ import annotations

import math

import pytest

from autokd import stats

# two-sided 95 % critical values t_{0.975, dof} from a printed Student-t table
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281, 30: 2.0423}


@pytest.mark.parametrize("dof, value", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(dof, value):
    assert stats.t_quantile(0.975, dof) == pytest.approx(value, abs=6e-5)
    assert stats.t_quantile(0.025, dof) == pytest.approx(-value, abs=6e-5)


def test_t_cdf_closed_forms():
    # dof 1 is Cauchy: F(t) = 1/2 + atan(t)/pi; dof 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert stats.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert stats.student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # large dof tends to the normal quantile 1.959964
    assert stats.t_quantile(0.975, 10_000) == pytest.approx(1.959964, abs=1e-3)


def test_t_quantile_against_scipy_when_present():
    sp = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 7, 19, 60):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert stats.t_quantile(p, dof) == pytest.approx(sp.t.ppf(p, dof), rel=1e-9)


def test_paired_difference_by_hand():
    # differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, sem 0.01/sqrt(3), t_{0.975,2} = 4.302653
    d = stats.paired_difference([0.90, 0.92, 0.91], [0.88, 0.89, 0.90], baseline="KD")
    half = 4.302652729749 * 0.01 / math.sqrt(3)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.02) and d["std"] == pytest.approx(0.01)
    assert d["low"] == pytest.approx(0.02 - half) and d["high"] == pytest.approx(0.02 + half)
    assert d["verdict"] == "within noise"


def test_pairing_cancels_the_shared_seed_effect():
    # the recipe is always 0.01 above the baseline while seeds move both by ±0.05: unpaired it would be noise
    base = [0.80, 0.85, 0.90, 0.75]
    d = stats.paired_difference([b + 0.01 + e for b, e in zip(base, (0.001, -0.001, 0.0005, -0.0005), strict=True)], base,
                                baseline="KD")
    assert d["low"] > 0 and d["verdict"] == "better than KD"
    d = stats.paired_difference(base, [b + 0.02 for b in base[:3]] + [0.76], baseline="CE-only")
    assert d["verdict"] == "worse than CE-only" and d["high"] < 0


def test_one_seed_has_no_interval_and_mismatch_is_an_error():
    d = stats.paired_difference([0.9], [0.8])
    assert d["mean"] == pytest.approx(0.1) and d["low"] is None and d["verdict"] == "one seed: no interval"
    with pytest.raises(ValueError):
        stats.paired_difference([0.9, 0.8], [0.8])


def test_fidelity_by_hand():
    ln3 = math.log(3.0)
    teacher = [[0.0, ln3], [ln3, 0.0], [2.0, 0.0]]  # p_t = (1/4, 3/4), (3/4, 1/4), argmax 0
    student = [[0.0, 0.0], [0.0, ln3], [2.0, 0.0]]  # p_s = (1/2, 1/2), (1/4, 3/4), identical to the teacher
    # argmax: row 0 ties -> index 0 vs teacher 1 (disagree), row 1 disagree, row 2 agree
    assert stats.top1_agreement(student, teacher) == pytest.approx(1 / 3)
    kl0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl1 = 0.75 * math.log(0.75 / 0.25) + 0.25 * math.log(0.25 / 0.75)
    assert stats.predictive_kl(teacher, student) == pytest.approx((kl0 + kl1 + 0.0) / 3)
    assert stats.predictive_kl(teacher, teacher) == pytest.approx(0.0, abs=1e-12)
    # a shift of all logits changes nothing (softmax invariance)
    assert stats.predictive_kl([[r + 5 for r in row] for row in teacher], student) == pytest.approx(
        (kl0 + kl1) / 3)
