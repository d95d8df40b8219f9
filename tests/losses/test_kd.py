from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from autokd import losses
from autokd.outputs import Outputs


def _softmax(row, T):
    m = max(row)
    e = [math.exp((v - m) / T) for v in row]
    z = sum(e)
    return [v / z for v in e]


def test_kd_matches_hand_computation():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    T = 2.0
    expected = 0.0
    for rs, rt in zip(s, t, strict=True):
        ps, pt = _softmax(rs, T), _softmax(rt, T)
        expected += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    expected = expected / len(s) * T * T
    got = losses.create("kd", temperature=T)(Outputs(torch.tensor(s)), Outputs(torch.tensor(t)), None)
    assert abs(got.item() - expected) < 1e-6


def test_kd_is_batchmean_not_elementwise_mean():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    got = losses.create("kd", temperature=1.0)(Outputs(s), Outputs(t), None)
    pt = F.softmax(t, 1)
    wrong = (pt * (pt.log() - F.log_softmax(s, 1))).mean()  # what reduction="mean" computes: / (N*K)
    right = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="sum") / 4
    assert torch.allclose(got, right, atol=1e-6)
    assert not torch.allclose(got, wrong)


def test_kd_zero_for_identical_logits_and_t2_scaling():
    torch.manual_seed(0)
    s = torch.randn(5, 7)
    kd4 = losses.create("kd", temperature=4.0)
    assert kd4(Outputs(s), Outputs(s.clone()), None).abs().item() < 1e-6
    t = torch.randn(5, 7)
    # scaling both logits by c at temperature c*T equals the loss at T, times c^2
    a = losses.create("kd", temperature=2.0)(Outputs(s), Outputs(t), None)
    b = losses.create("kd", temperature=6.0)(Outputs(3 * s), Outputs(3 * t), None)
    assert torch.allclose(b, 9 * a, rtol=1e-5)
