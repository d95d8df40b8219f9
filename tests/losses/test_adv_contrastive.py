"""CRD: the NCE loss on a tiny memory bank by hand, the Z constant, momentum updates and state round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import losses
from autokd.errors import ConfigError
from autokd.losses.contrastive import nce_loss
from autokd.outputs import Outputs, Shapes

S = Shapes(input_shape=(1, 8, 8), num_classes=3, feats=((4, 2, 2),), embedding=5)
T = Shapes(input_shape=(1, 8, 8), num_classes=3, feats=((6, 2, 2),), embedding=6)


def _crd(num_samples=6, **kw):
    kw = {"feat_dim": 4, "nce_k": 3, "temperature": 0.5, "momentum": 0.25, **kw}
    loss = losses.create("crd", student=S, teacher=T, **kw)
    loss.setup(num_samples=num_samples)
    return loss


def _outs(emb_s, emb_t):
    return Outputs(torch.zeros(len(emb_s), 3), embedding=emb_s), Outputs(
        torch.zeros(len(emb_t), 3), embedding=emb_t
    )


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _ref_side(anchor, bank, idx, temperature, z, n):
    """One side of CRD's loss, written out: exp(<bank_j, anchor>/T)/Z, then Eq. 18 with m = K, Pn = 1/n."""
    b, k1 = idx.shape
    m = k1 - 1
    total = 0.0
    for i in range(b):
        p = [np.exp(bank[j] @ anchor[i] / temperature) / z for j in idx[i]]
        total += np.log(p[0] / (p[0] + m / n + 1e-7))
        total += sum(np.log((m / n) / (q + m / n + 1e-7)) for q in p[1:])
    return -total / b


def test_nce_loss_matches_eq18_by_hand():
    x = np.array([[0.3, 0.1, 0.05], [0.02, 0.4, 0.2]])
    n = 10
    expected = 0.0
    for row in x:
        expected += np.log(row[0] / (row[0] + 2 / n + 1e-7)) + sum(
            np.log((2 / n) / (v + 2 / n + 1e-7)) for v in row[1:]
        )
    assert nce_loss(torch.tensor(x), n).item() == pytest.approx(-expected / 2, rel=1e-6)


def test_crd_loss_on_a_tiny_bank_by_hand_then_momentum_update_of_the_batch_rows_only():
    torch.manual_seed(3)
    loss = _crd()
    bank_s = _unit(np.random.default_rng(0).normal(size=(6, 4)))
    bank_t = _unit(np.random.default_rng(1).normal(size=(6, 4)))
    loss.memory_s.copy_(torch.tensor(bank_s))
    loss.memory_t.copy_(torch.tensor(bank_t))
    emb_s, emb_t = torch.randn(2, 5), torch.randn(2, 6)
    index = torch.tensor([1, 4])
    negatives = torch.tensor([[0, 2, 5], [3, 3, 0]])
    with torch.no_grad():
        e_s = _unit((emb_s @ loss.embed_s.linear.weight.T + loss.embed_s.linear.bias).double().numpy())
        e_t = _unit((emb_t @ loss.embed_t.linear.weight.T + loss.embed_t.linear.bias).double().numpy())
    value = loss(*_outs(emb_s, emb_t), None, index=index, contrast_idx=negatives)

    idx = np.concatenate([index.numpy()[:, None], negatives.numpy()], 1)
    # Z is fixed on this first batch: mean of the exponentiated scores times the dataset size
    z_s = np.mean([np.exp(bank_t[j] @ e_s[i] / 0.5) for i in range(2) for j in idx[i]]) * 6
    z_t = np.mean([np.exp(bank_s[j] @ e_t[i] / 0.5) for i in range(2) for j in idx[i]]) * 6
    assert loss.z.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    expected = _ref_side(e_s, bank_t, idx, 0.5, z_s, 6) + _ref_side(e_t, bank_s, idx, 0.5, z_t, 6)
    assert value.item() == pytest.approx(expected, rel=1e-5)

    # momentum update (0.25) of rows 1 and 4 only, renormalised; the other rows are untouched
    new_s, new_t = loss.memory_s.double().numpy(), loss.memory_t.double().numpy()
    for bank, new, e in ((bank_s, new_s, e_s), (bank_t, new_t, e_t)):
        expect = bank.copy()
        expect[[1, 4]] = _unit(0.25 * bank[[1, 4]] + 0.75 * e)
        np.testing.assert_allclose(new, expect, atol=1e-6)

    # Z stays fixed afterwards; an eval-mode call leaves the banks alone
    loss(*_outs(torch.randn(2, 5) * 3, torch.randn(2, 6)), None, index=index, contrast_idx=negatives)
    assert loss.z.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    before = loss.memory_s.clone()
    loss.eval()
    loss(*_outs(torch.randn(2, 5), torch.randn(2, 6)), None, index=torch.tensor([0, 2]))
    assert torch.equal(before, loss.memory_s)


def test_gradients_reach_embed_heads_not_the_banks():
    loss = _crd()
    emb_s = torch.randn(3, 5, requires_grad=True)
    loss(*_outs(emb_s, torch.randn(3, 6)), None, index=torch.tensor([0, 1, 2])).backward()
    assert emb_s.grad.abs().sum() > 0 and loss.embed_s.linear.weight.grad.abs().sum() > 0
    assert not loss.memory_s.requires_grad and "memory_s" not in dict(loss.named_parameters())


def test_memory_banks_round_trip_through_state_dict():
    a = _crd(num_samples=10)
    a(*_outs(torch.randn(4, 5), torch.randn(4, 6)), None, index=torch.tensor([0, 3, 5, 9]))
    state = a.state_dict()
    assert {"memory_s", "memory_t", "z"} <= set(state)
    assert state["memory_s"].shape == (10, 4)
    b = losses.create("crd", student=S, teacher=T, feat_dim=4, nce_k=3)  # not set up: banks resized on load
    b.load_state_dict(state)
    c = _crd(num_samples=10)  # set up with fresh random banks: overwritten on load
    c.load_state_dict(state)
    for other in (b, c):
        assert other.num_data == 10
        for key in ("memory_s", "memory_t", "z"):
            assert torch.equal(getattr(other, key), state[key])
    # the restored loss continues with the same Z
    b(*_outs(torch.randn(2, 5), torch.randn(2, 6)), None, index=torch.tensor([1, 2]))
    assert torch.equal(b.z, state["z"])


def test_negatives_are_clipped_to_the_dataset_and_sampled_uniformly():
    loss = losses.create("crd", student=S, teacher=T)  # nce_k 16384 by default
    loss.setup(num_samples=16)
    assert loss.num_negatives == 15
    torch.manual_seed(0)
    draws = loss.sample_negatives(4000, torch.device("cpu"))
    assert draws.shape == (4000, 15) and int(draws.min()) == 0 and int(draws.max()) == 15
    counts = torch.bincount(draws.flatten(), minlength=16).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.05


def test_needs_indices_and_setup():
    loss = losses.create("crd", student=S, teacher=T)
    with pytest.raises(ConfigError, match="setup"):
        loss(*_outs(torch.randn(2, 5), torch.randn(2, 6)), None, index=torch.tensor([0, 1]))
    loss.setup(num_samples=4)
    with pytest.raises(ConfigError, match="index"):
        loss(*_outs(torch.randn(2, 5), torch.randn(2, 6)), None)
    with pytest.raises(ConfigError, match="out of range"):
        loss(*_outs(torch.randn(2, 5), torch.randn(2, 6)), None, index=torch.tensor([0, 4]))
    with pytest.raises(ConfigError, match="num_samples"):
        loss.setup(num_samples=1)
