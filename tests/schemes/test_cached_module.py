"""``cached_module``: helper models (TAKD assistants, BAN generations, HSAKD's branches) trained once per key."""

from __future__ import annotations

import torch
from torch import nn

from autokd.schemes._helpers import cached_module


def _trainer(calls: list[int], value: float):
    def train():
        calls.append(1)
        m = nn.Linear(2, 1)
        nn.init.constant_(m.weight, value)
        return m, {"note": value}
    return train


def test_trained_once_then_loaded_and_a_corrupt_or_foreign_file_is_retrained(tmp_path):
    path, calls = tmp_path / "helper-k.pt", []
    m, stored = cached_module(path, "k", nn.Linear(2, 1), _trainer(calls, 3.0), map_location="cpu")
    assert stored == {"note": 3.0} and calls == [1] and path.is_file()
    m, stored = cached_module(path, "k", nn.Linear(2, 1), _trainer(calls, 5.0), map_location="cpu")
    assert stored is None and calls == [1] and torch.all(m.weight == 3.0)  # loaded, not retrained
    m, stored = cached_module(path, "other", nn.Linear(2, 1), _trainer(calls, 5.0), map_location="cpu")
    assert stored == {"note": 5.0} and calls == [1, 1]  # another key: retrained
    path.write_bytes(b"not a checkpoint")
    m, stored = cached_module(path, "k", nn.Linear(2, 1), _trainer(calls, 7.0), map_location="cpu")
    assert stored == {"note": 7.0} and len(calls) == 3 and torch.all(m.weight == 7.0)
    assert torch.load(path, weights_only=True)["config_hash"] == "k"
    _, stored = cached_module(None, "k", nn.Linear(2, 1), _trainer(calls, 1.0), map_location="cpu")
    assert stored == {"note": 1.0} and len(calls) == 4  # no cache folder: trained on every call
