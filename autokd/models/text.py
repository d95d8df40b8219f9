"""A tiny text classifier for token-id inputs: embedding table → 1-D convolutions → pooling → linear.

After Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014, kept small: ``depth``
layers of conv (``kernel_size`` tokens wide) + BN + ReLU with ``channels`` channels over the embedded sequence,
global average pooling over time (Kim pools with the max; the mean keeps the zoo's pooling contract and suits
bag-of-tokens data) and a linear classifier.

Inputs are ``LongTensor`` token ids of shape ``(N, seq_len)``; the data's ``input_shape`` is ``(seq_len,)``.
``in_channels`` (which the trainer fills with ``input_shape[0]``) is unused; the vocabulary is ``vocab_size``
and must cover the data's ids (``fake_text``: its ``vocab_size`` option). The embedding table is
``token_embedding`` (an ``nn.Embedding``), the name embedding-level methods (``embedding_encoding``) look for.

Stages are 4-D maps ``(N, C, seq_len, 1)`` (a one-pixel-wide image), so feature-level losses apply unchanged:
``feats = [embedded sequence, conv 1, ..., conv depth]`` (post-ReLU; the embedded sequence has no activation,
its ``preact`` is itself), ``embedding`` = the time-pooled last map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import MODELS, ZooModel, check_int, kaiming_init

__all__ = ["TextCNN", "textcnn"]


class TextCNN(ZooModel):
    """Embedding (``vocab_size`` × ``embed_dim``) → ``depth`` × [conv k×1, BN, ReLU] → mean over time → linear."""

    input_dtype = torch.long

    def __init__(self, vocab_size: int = 1000, embed_dim: int = 32, channels: int = 32, kernel_size: int = 3,
                 depth: int = 1, num_classes: int = 4) -> None:
        super().__init__(num_classes, channels)
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        layers = []
        cin = embed_dim
        for _ in range(depth):
            layers.append(nn.Sequential(nn.Conv2d(cin, channels, (kernel_size, 1), padding=(kernel_size // 2, 0),
                                                  bias=False), nn.BatchNorm2d(channels)))
            cin = channels
        self.convs = nn.ModuleList(layers)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init(self)
        nn.init.normal_(self.token_embedding.weight, 0.0, 1.0)

    def forward_outputs(self, x: Tensor) -> Outputs:
        if x.is_floating_point():
            raise ConfigError(f"textcnn takes token ids (an integer tensor), got a {x.dtype} input: is the "
                              "dataset a text dataset such as fake_text?")
        if x.numel() and int(x.max()) >= self.vocab_size:
            raise ConfigError(f"textcnn: token id {int(x.max())} is outside its vocabulary of {self.vocab_size}; "
                              "set the model's vocab_size to the dataset's")
        out = self.token_embedding(x).transpose(1, 2).unsqueeze(-1)  # (N, D, L, 1)
        feats, preacts = [out], [out]
        for layer in self.convs:
            pre = layer(out)
            out = F.relu(pre)
            feats.append(out)
            preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, vocab_size, embed_dim, channels, kernel_size, depth) -> TextCNN:
    for field, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("channels", channels),
                         ("kernel_size", kernel_size), ("depth", depth)):
        check_int(field, value, model=name)
    if kernel_size % 2 == 0:
        raise ConfigError(f"model {name!r}: kernel_size must be odd (the sequence keeps its length), got {kernel_size}")
    return TextCNN(vocab_size, embed_dim, channels, kernel_size, depth, num_classes=num_classes)


@MODELS.register(
    "textcnn",
    family="textcnn",
    builder=True,
    inputs="tokens",
    description="tiny text classifier on token ids: embedding, depth 1-D convs (BN, ReLU), mean over time",
)
def textcnn(num_classes: int = 4, in_channels: int = 1, vocab_size: int = 1000, embed_dim: int = 32,
            channels: int = 32, kernel_size: int = 3, depth: int = 1) -> TextCNN:
    return _build("textcnn", num_classes, vocab_size, embed_dim, channels, kernel_size, depth)


@MODELS.register("textcnn_e64", family="textcnn", inputs="tokens",
                 description="textcnn with a 64-dim embedding and 64 channels (a text teacher)")
def textcnn_e64(num_classes: int = 4, in_channels: int = 1) -> TextCNN:
    return _build("textcnn_e64", num_classes, 1000, 64, 64, 3, 1)


@MODELS.register("textcnn_e8", family="textcnn", inputs="tokens",
                 description="textcnn with an 8-dim embedding and 16 channels (a compressed text student)")
def textcnn_e8(num_classes: int = 4, in_channels: int = 1) -> TextCNN:
    return _build("textcnn_e8", num_classes, 1000, 8, 16, 3, 1)
