"""``fake_text``: deterministic token data with class-dependent distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import data
from autokd.data.text import generate_tokens
from autokd.errors import ConfigError


def test_registered_shapes_and_dtypes():
    assert "fake_text" in data.names()
    b = data.create("fake_text", seed=0, num_classes=3, vocab_size=200, seq_len=10, n=300)
    assert b.input_shape == (10,) and b.num_classes == 3 and b.deterministic_train
    assert sum(b.sizes.values()) == 300 and b.info["vocab_size"] == 200
    x, y, idx = next(iter(b.loader("train", 16)))
    assert x.dtype == torch.int64 and x.shape == (16, 10) and 0 <= int(x.min()) and int(x.max()) < 200
    assert y.dtype == torch.int64 and idx.dtype == torch.int64
    assert data.options("fake_text")["vocab_size"] == 1000


def test_deterministic_from_the_seed():
    a, b = data.create("fake_text", seed=3, n=200), data.create("fake_text", seed=3, n=200)
    c = data.create("fake_text", seed=4, n=200)
    assert torch.equal(a.train.x, b.train.x) and a.info["fingerprint"] == b.info["fingerprint"]
    assert not torch.equal(a.train.x, c.train.x) and a.info["fingerprint"] != c.info["fingerprint"]
    assert data.create("fake_text", seed=3, n=200, train_fraction=0.5).info["fingerprint"] != a.info["fingerprint"]


def test_topic_rates_follow_the_signal_and_classes_are_learnable():
    """Each class's topic tokens make up ~signal of its positions (plus their background share), other classes'
    topics only their background share; a nearest-centroid rule on token counts, independent of autokd,
    separates the classes."""
    k, vocab, length, topic, signal = 4, 500, 32, 20, 0.2
    x, y = generate_tokens(2000, k, vocab, length, topic, signal, seed=1)
    counts = np.zeros((2000, vocab))
    np.add.at(counts, (np.repeat(np.arange(2000), length), x.flatten().numpy()), 1)
    labels = y.numpy()
    assert np.bincount(labels).tolist() == [500] * k
    # the classes' characteristic tokens: those whose frequency in class c exceeds every other class's
    freq = np.stack([counts[labels == c].sum(0) / (500 * length) for c in range(k)])
    own = [np.argsort(freq[c] - np.delete(freq, c, 0).max(0))[-topic:] for c in range(k)]
    for c in range(k):
        rate = freq[c, own[c]].sum()
        assert signal - 0.03 < rate < signal + 0.1
        assert all(freq[d, own[c]].sum() < 0.1 for d in range(k) if d != c)
    train, test = np.arange(1000), np.arange(1000, 2000)
    centroids = np.stack([counts[train][labels[train] == c].mean(0) for c in range(k)])
    pred = np.argmax(counts[test] @ centroids.T - 0.5 * (centroids**2).sum(1), axis=1)
    assert (pred == labels[test]).mean() > 0.9


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"vocab_size": 50, "topic_size": 20}, "exceeds vocab_size"),
        ({"signal": 1.5}, "signal"),
        ({"seq_len": 0}, "seq_len"),
        ({"n": 3}, "data.n"),
        ({"colour": 1}, "unknown option"),
    ],
)
def test_bad_options_give_one_line(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        data.create("fake_text", **kw)
    assert "\n" not in str(e.value)
