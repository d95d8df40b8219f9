"""``fake_text``: generated token sequences whose classes differ in their token distributions.

Each sample is ``seq_len`` token ids in ``[0, vocab_size)``. Every position is, with probability ``signal``, a
token drawn uniformly from its class's ``topic_size`` topic tokens (disjoint between classes), and otherwise a
background token drawn from a Zipf law (p ∝ 1/rank) over the whole vocabulary in a random rank order. A
classifier learns it from which topic tokens occur; a model that saw few samples knows few topic tokens, which
is where a teacher's embedding table helps (``embedding_encoding``).

Deterministic from ``seed`` (one ``torch.Generator``); labels balanced; split stratified like the image sets;
items are ``(LongTensor[seq_len], label)``; ``input_shape = (seq_len,)``; no normalisation, no augmentation
(``deterministic_train``, so teacher outputs are cached). ``info["vocab_size"]`` records the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .base import DATASETS, DataBundle, split_fingerprint
from .loading import ArrayDataset
from .splits import stratified_split, stratified_subset

__all__ = ["build_fake_text", "generate_tokens"]


def _int(field: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"data.{field} must be an integer >= {lo} (got {value!r})")
    return value


def generate_tokens(n: int, num_classes: int, vocab_size: int, seq_len: int, topic_size: int, signal: float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``x`` int64 (n, seq_len) token ids, ``y`` int64 (n,) balanced labels (see the module doc)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(vocab_size, generator=g)
    zipf = 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)
    background = torch.empty(vocab_size, dtype=torch.float64)
    background[order] = zipf / zipf.sum()
    topics = torch.randperm(vocab_size, generator=g)[: num_classes * topic_size].view(num_classes, topic_size)
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    x = torch.multinomial(background, n * seq_len, replacement=True, generator=g).view(n, seq_len)
    use_topic = torch.rand(n, seq_len, generator=g) < signal
    pick = torch.randint(0, topic_size, (n, seq_len), generator=g)
    x = torch.where(use_topic, topics[y[:, None], pick], x)
    return x.long(), y.long()


@DATASETS.register(
    "fake_text",
    description="generated token sequences, class-dependent topic tokens over Zipf background (kw num_classes, "
    "vocab_size, seq_len, n, topic_size, signal); input_shape (seq_len,)",
)
def build_fake_text(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
    num_classes: int = 4,
    vocab_size: int = 1000,
    seq_len: int = 32,
    n: int = 2000,
    topic_size: int = 40,
    signal: float = 0.15,
) -> DataBundle:
    """Token data for text models (``textcnn``); ``root``/``download`` are ignored (nothing is read)."""
    k = _int("num_classes", num_classes, 2)
    vocab = _int("vocab_size", vocab_size, 2)
    length = _int("seq_len", seq_len, 1)
    topic = _int("topic_size", topic_size, 1)
    n = _int("n", n, 2 * k)
    if k * topic > vocab:
        raise ConfigError(f"data.topic_size: num_classes x topic_size = {k * topic} exceeds vocab_size {vocab}")
    if isinstance(signal, bool) or not isinstance(signal, int | float) or not 0 <= signal <= 1:
        raise ConfigError(f"data.signal must be a number in [0, 1] (got {signal!r})")
    x, y = generate_tokens(n, k, vocab, length, topic, float(signal), seed)
    labels = y.numpy()
    train, val, test = stratified_split(labels, seed, val_fraction, test_fraction)
    train = stratified_subset(train, labels, train_fraction, seed)

    def part(idx) -> ArrayDataset:
        t = torch.from_numpy(idx)
        return ArrayDataset(x[t].contiguous(), y[t].clone())

    options = {"num_classes": k, "vocab_size": vocab, "seq_len": length, "n": n, "topic_size": topic,
               "signal": float(signal)}
    info: dict[str, Any] = {
        "dataset": "fake_text", "source": "synthetic", "seed": seed, "val_fraction": val_fraction,
        "test_fraction": test_fraction, "train_fraction": train_fraction,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)}, "total": n,
        "fingerprint": split_fingerprint("fake_text", {"train": train, "val": val, "test": test}, **options),
        **options,
    }  # fmt: skip
    train_ds = part(train)
    return DataBundle(name="fake_text", train=train_ds, val=part(val), test=part(test), num_classes=k,
                      input_shape=(length,), deterministic_train=True, train_eval=train_ds, info=info)
