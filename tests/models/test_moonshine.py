"""Moonshine students (Crowley et al. NeurIPS 2018): cheap-convolution blocks counted by hand, the WRN layout
kept (stage-aligned with a wrn teacher), and the attention-transfer pairing computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import Distiller, models
from autokd.models.moonshine import CheapBottleneck, GroupedPointwise, cheap_conv
from autokd.pairs import auto_pairs
from autokd.recipe import Recipe, StudentSpec, TermSpec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small models on a shared machine: one intra-op thread is faster and steadier
    yield
    torch.set_num_threads(n)


def _cheap_params(cin: int, cout: int, g: int, b: int) -> int:
    """Hand count of one cheap 3×3 substitute (no biases; each BN has 2 parameters per channel)."""
    if b > 1:
        mid = cout // b
        per_group_in = g if g else mid  # a grouped 3×3 sees g input channels per output channel
        return cin * mid + 2 * mid + mid * per_group_in * 9 + 2 * mid + mid * cout
    if g:
        return cin * g * 9 + 2 * cin + cin * cout
    return cin * cout * 9


def _moonshine_params(depth: int, widen: int, g: int, b: int, in_ch: int, k: int) -> int:
    """Hand count of the whole network: stem, pre-activation blocks (BN, cheap conv, BN, cheap conv, 1×1
    projection where the shape changes), final BN, classifier."""
    n = (depth - 4) // 6
    ch = [16, 16 * widen, 32 * widen, 64 * widen]
    total = in_ch * 16 * 9
    cin = ch[0]
    for gi, cout in enumerate(ch[1:]):
        for i in range(n):
            stride = 1 if (gi == 0 or i > 0) else 2
            total += 2 * cin + _cheap_params(cin, cout, g, b) + 2 * cout + _cheap_params(cout, cout, g, b)
            if cin != cout or stride != 1:
                total += cin * cout
            cin = cout
    return total + 2 * ch[3] + ch[3] * k + k


@pytest.mark.parametrize("cin,cout,g,b", [(16, 32, 8, 2), (32, 32, 4, 4), (16, 32, 1, 1), (32, 64, 0, 2),
                                          (64, 64, 0, 1), (32, 64, 2, 1)])
def test_block_param_count_by_hand(cin, cout, g, b):
    block = cheap_conv(cin, cout, 1, group_size=g, bottleneck=b)
    assert sum(p.numel() for p in block.parameters()) == _cheap_params(cin, cout, g, b)
    kind = CheapBottleneck if b > 1 else GroupedPointwise if g else torch.nn.Conv2d
    assert type(block) is kind


def test_g8b2_block_numbers():
    """G(8)B(2), 32 -> 32 channels: 1×1 32->16 (512) + BN (32) + 3×3 in groups of 8 (16·8·9 = 1152) + BN (32)
    + 1×1 16->32 (512) = 2240 vs a full 3×3's 9216."""
    assert sum(p.numel() for p in cheap_conv(32, 32, 1, group_size=8, bottleneck=2).parameters()) == 2240
    assert sum(p.numel() for p in cheap_conv(32, 32, 1).parameters()) == 9216


@pytest.mark.parametrize("depth,widen,g,b", [(16, 2, 4, 2), (10, 1, 8, 1), (16, 1, 0, 4), (40, 2, 8, 2)])
def test_network_param_count_by_hand(depth, widen, g, b):
    m = models.create("moonshine", 10, in_channels=3, depth=depth, widen=widen, group_size=g, bottleneck=b)
    assert models.count_params(m) == _moonshine_params(depth, widen, g, b, 3, 10)


def test_full_convs_give_the_wrn_teacher_exactly():
    wrn = models.create("wrn", 10, 1, depth=16, widen=2)
    plain = models.create("moonshine", 10, 1, depth=16, widen=2, group_size=0, bottleneck=1)
    assert models.count_params(plain) == models.count_params(wrn)
    assert list(plain.state_dict()) == list(wrn.state_dict())


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_stages_align_with_the_wrn_teacher(shape):
    t = models.create("wrn_16_2", 10, in_channels=shape[0])
    s = models.create("moonshine_16_2_g4b2", 10, in_channels=shape[0])
    ts, ss = models.shapes(t, shape), models.shapes(s, shape)
    assert ts.feats == ss.feats and ts.embedding == ss.embedding
    assert auto_pairs(ts, ss) == [(1, 1), (2, 2), (3, 3)]  # the three group outputs, no stem (official AT)
    assert models.count_params(s) < 0.2 * models.count_params(t)


def test_attention_transfer_term_matches_the_official_formula():
    """CE + β·Σ_groups mean((at(s) − at(t))²), at(x) = normalise(mean_c x²), β = 1000 (official main.py, KD off),
    recomputed in numpy from the stage outputs."""
    torch.manual_seed(0)
    t = models.create("wrn_16_2", 10, in_channels=1).eval()
    s = models.create("moonshine_16_2_g4b2", 10, in_channels=1)
    recipe = Recipe(student=StudentSpec(name="moonshine_16_2_g4b2"), ce_weight=1.0,
                    terms=[TermSpec(loss="at", weight=1000.0)])
    d = Distiller(t, s, recipe, input_shape=(1, 8, 8))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    out = d(x, y)
    with torch.no_grad():
        fs, ft = s.forward_outputs(x).feats, t.forward_outputs(x).feats

    def at(f):
        a = (f.numpy().astype(np.float64) ** 2).mean(1).reshape(f.shape[0], -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    expected = sum(((at(fs[i]) - at(ft[i])) ** 2).mean() for i in (1, 2, 3))
    assert out["at"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["ce"].item() + 1000.0 * expected, rel=1e-5)
