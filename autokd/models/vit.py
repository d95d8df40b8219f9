"""Vision transformers: ViT (Dosovitskiy et al., ICLR 2021) with DeiT's distillation tokens (Touvron et al.,
ICML 2021) and Co-advise's convolution/involution token stem (Ren et al., CVPR 2022), sized for tiny inputs.

``vit(patch_size, depth, width, heads, mlp_ratio, img_size, distill_tokens, stem, head_fusion)``: the image is
cut into ``patch_size``² patches embedded to ``width`` channels; the sequence is
``[cls, dist_0, ..., dist_{k-1}, patches (row-major)]`` (DeiT's order) plus learned position embeddings; then
``depth`` pre-norm blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` (GELU MLP of ``mlp_ratio·width``, attention
computed by ``F.scaled_dot_product_attention`` from one fused ``qkv`` projection), a final LayerNorm and one
linear head per class-like token (``classifier`` reads ``cls``; ``dist_heads[i]`` read ``dist_i``).
Weights: truncated normal (std 0.02) for tokens, position embeddings and linears, LayerNorm (1, 0) (timm/DeiT).

- Position embeddings are learned for an ``img_size`` input; other input sizes get the patch grid's
  embeddings resampled bicubically (as timm does for a changed image size).
- ``distill_tokens`` k: DeiT uses 1 (a distillation token with its own head), CiT 2 (one per teacher).
  Inference (``forward`` and ``Outputs.logits``) fuses the heads: ``head_fusion: logits`` averages the heads'
  logits -- the official DeiT and Co-advise code (``(x + x_dist) / 2``) -- and ``softmax`` averages their
  softmaxes as the DeiT paper describes ("we add the softmax output by the two classifiers"), returned as the
  log of the mean probability (same argmax, and still usable as logits). A token-distillation loss calls
  :meth:`ViT.select_heads` with the heads it trains; heads no loss trains are then left out of the fusion
  (without such a loss every head is fused, and CE/KD train the fused prediction). The selection is a buffer,
  so a saved student predicts the same way after loading.
- ``stem: conv_inv`` (needs k = 2) is Co-advise's token inductive-bias alignment, as in its official code:
  the patch embedding is the sum of a convolution stem (two conv3×3-BN-ReLU, then a ``patch_size`` strided
  conv) and an involution stem (1×1 conv-BN-ReLU, involution 3×3-BN-ReLU, then a strided conv), and the two
  distillation tokens are the means of the convolution and the involution patch embeddings (no learned
  token parameters). The official stems are ImageNet-sized (7×7 stride-2 conv, RedNet-26 stem); here they
  keep full resolution until the patch projection.

``forward_outputs`` (see :class:`~autokd.outputs.Outputs`): ``feats`` = each block's output patch tokens as a
(N, width, H/p, W/p) grid (``preacts`` = ``feats``), ``embedding`` and ``tokens['cls']`` = the normalised
class token, ``tokens['dist_i']`` the normalised distillation tokens, ``heads`` = each head's logits
(``cls``, ``dist_i``), ``attention`` = each block's Q, K, V (N, heads, L, width/heads) captured by a forward
hook on the block's ``qkv`` projection (:class:`~autokd.models.tokens.QKVCapture`), L = 1 + k + patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import MODELS, ZooModel, check_choice, check_int, check_positive
from .connectors import map_to_tokens, tokens_to_map
from .involution import Involution
from .tokens import QKVCapture

__all__ = ["ViT", "Attention", "Block", "vit"]


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm layout: q, k, v concatenated, each split
    into ``num_heads`` contiguous heads) and ``F.scaled_dot_product_attention`` (scale d_head^-1/2)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _conv_bn_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class CoAdviseStem(nn.Module):
    """Co-advise's convolution + involution patch embedding; returns (patch maps, the two stems' maps)."""

    def __init__(self, in_channels: int, width: int, patch_size: int) -> None:
        super().__init__()
        c = 4 * max(2, width // 8)
        self.conv = nn.Sequential(*_conv_bn_relu(in_channels, c, 3), *_conv_bn_relu(c, c, 3),
                                  nn.Conv2d(c, width, patch_size, patch_size))
        self.inv = nn.Sequential(*_conv_bn_relu(in_channels, c, 1), Involution(c, 3), nn.BatchNorm2d(c), nn.ReLU(),
                                 nn.Conv2d(c, width, patch_size, patch_size))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(x), self.inv(x)


class ViT(ZooModel):
    """Vision transformer with optional distillation tokens (see the module docstring)."""

    def __init__(self, *, patch_size: int = 4, depth: int = 4, width: int = 64, heads: int = 4,
                 mlp_ratio: float = 2.0, img_size: int = 32, distill_tokens: int = 0, stem: str = "patch",
                 head_fusion: str = "logits", num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, width)
        self.patch_size, self.depth, self.width, self.heads = patch_size, depth, width, heads
        self.distill_tokens, self.stem_kind, self.head_fusion = distill_tokens, stem, head_fusion
        self.grid = max(1, img_size // patch_size)
        if stem == "patch":
            self.patch_embed: nn.Module = nn.Conv2d(in_channels, width, patch_size, patch_size)
            self.dist_tokens = nn.Parameter(torch.zeros(1, distill_tokens, width)) if distill_tokens else None
        else:
            self.patch_embed = CoAdviseStem(in_channels, width, patch_size)
            self.dist_tokens = None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.num_prefix = 1 + distill_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix + self.grid**2, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.classifier = nn.Linear(width, num_classes)
        self.dist_heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(distill_tokens))
        self.head_names = ("cls", *(f"dist_{i}" for i in range(distill_tokens)))
        self.register_buffer("head_mask", torch.ones(len(self.head_names)))
        self._selected = False
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed, self.dist_tokens):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- heads ------------------------------------------------------------------------------------
    def select_heads(self, names) -> None:
        """Fuse only ``cls`` and the heads ``names`` into the prediction (successive calls add heads)."""
        unknown = [n for n in names if n not in self.head_names]
        if unknown:
            raise ConfigError(f"ViT has heads {list(self.head_names)}, not {unknown}; set distill_tokens")
        if not self._selected:
            self.head_mask.zero_()
            self.head_mask[0] = 1.0
            self._selected = True
        for n in names:
            self.head_mask[self.head_names.index(n)] = 1.0

    def _fuse(self, logits: list[Tensor]) -> Tensor:
        if len(logits) == 1:
            return logits[0]
        used = [z for z, m in zip(logits, self.head_mask.tolist(), strict=True) if m > 0]
        if self.head_fusion == "logits":
            return torch.stack(used).mean(0)
        logp = torch.stack([F.log_softmax(z.float(), dim=-1) for z in used])
        return torch.logsumexp(logp, 0) - torch.log(torch.tensor(float(len(used)), device=logp.device))

    # -- forward ----------------------------------------------------------------------------------
    def _pos(self, h: int, w: int) -> Tensor:
        prefix, grid = self.pos_embed[:, : self.num_prefix], self.pos_embed[:, self.num_prefix:]
        if (h, w) != (self.grid, self.grid):
            g = tokens_to_map(grid, (self.grid, self.grid))
            grid = map_to_tokens(F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False))
        return torch.cat([prefix, grid], dim=1)

    def _encode(self, x: Tensor, keep: bool) -> tuple[Tensor, tuple[int, int], list[Tensor]]:
        n = x.shape[0]
        if self.stem_kind == "patch":
            maps = self.patch_embed(x)
            extra = [] if self.dist_tokens is None else [self.dist_tokens.expand(n, -1, -1)]
        else:
            conv, inv = self.patch_embed(x)
            maps = conv + inv
            extra = [map_to_tokens(conv).mean(1, keepdim=True), map_to_tokens(inv).mean(1, keepdim=True)]
        h, w = maps.shape[-2:]
        z = torch.cat([self.cls_token.expand(n, -1, -1), *extra, map_to_tokens(maps)], dim=1) + self._pos(h, w)
        outs = []
        for blk in self.blocks:
            z = blk(z)
            if keep:
                outs.append(z)
        return self.norm(z), (h, w), outs

    def _heads(self, z: Tensor) -> list[Tensor]:
        return [self.classifier(z[:, 0])] + [head(z[:, 1 + i]) for i, head in enumerate(self.dist_heads)]

    def forward(self, x: Tensor) -> Tensor:
        z, _, _ = self._encode(x, keep=False)
        return self._fuse(self._heads(z))

    def forward_outputs(self, x: Tensor) -> Outputs:
        with QKVCapture([blk.attn for blk in self.blocks]) as cap:
            z, grid, outs = self._encode(x, keep=True)
        logits = self._heads(z)
        feats = [tokens_to_map(t, grid, self.num_prefix) for t in outs]
        return Outputs(logits=self._fuse(logits), feats=feats, preacts=list(feats), embedding=z[:, 0],
                       heads=dict(zip(self.head_names, logits, strict=True)),
                       tokens={name: z[:, i] for i, name in enumerate(self.head_names)}, attention=cap.result())


def _build(name: str, num_classes: int, in_channels: int, *, patch_size, depth, width, heads, mlp_ratio, img_size,
           distill_tokens, stem, head_fusion) -> ViT:
    for what, v in (("patch_size", patch_size), ("depth", depth), ("width", width), ("heads", heads),
                    ("img_size", img_size)):
        check_int(what, v, model=name)
    check_int("distill_tokens", distill_tokens, minimum=0, model=name)
    check_positive("mlp_ratio", mlp_ratio, model=name)
    check_choice("stem", stem, ["patch", "conv_inv"], model=name)
    check_choice("head_fusion", head_fusion, ["logits", "softmax"], model=name)
    if width % heads:
        raise ConfigError(f"model {name!r}: width ({width}) must be a multiple of heads ({heads})")
    if depth > 24:
        raise ConfigError(f"model {name!r}: depth must be an integer in [1, 24], got {depth}")
    if stem == "conv_inv" and distill_tokens != 2:
        raise ConfigError(f"model {name!r}: stem 'conv_inv' makes the two Co-advise tokens; set distill_tokens: 2")
    return ViT(patch_size=patch_size, depth=depth, width=width, heads=heads, mlp_ratio=float(mlp_ratio),
               img_size=img_size, distill_tokens=distill_tokens, stem=stem, head_fusion=head_fusion,
               num_classes=num_classes, in_channels=in_channels)


@MODELS.register("vit", family="vit", builder=True,
                 description="vision transformer (ViT/DeiT): patch size, depth, width, heads, MLP ratio, "
                 "distillation tokens")
def vit(num_classes: int = 10, in_channels: int = 3, patch_size: int = 4, depth: int = 4, width: int = 64,
        heads: int = 4, mlp_ratio: float = 2.0, img_size: int = 32, distill_tokens: int = 0, stem: str = "patch",
        head_fusion: str = "logits") -> ViT:
    return _build("vit", num_classes, in_channels, patch_size=patch_size, depth=depth, width=width, heads=heads,
                  mlp_ratio=mlp_ratio, img_size=img_size, distill_tokens=distill_tokens, stem=stem,
                  head_fusion=head_fusion)


def _tiny(name: str, num_classes: int, in_channels: int, **kw) -> ViT:
    base = {"mlp_ratio": 2.0, "distill_tokens": 0, "stem": "patch", "head_fusion": "logits"}
    return _build(name, num_classes, in_channels, **{**base, **kw})


@MODELS.register("vit_t8", family="vit",
                 description="tiny ViT for 8x8 inputs: patch 2, 4 blocks, width 32, 2 heads (digits student)")
def vit_t8(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("vit_t8", num_classes, in_channels, patch_size=2, depth=4, width=32, heads=2, img_size=8)


@MODELS.register("deit_t8", family="vit", description="vit_t8 with a DeiT distillation token and head")
def deit_t8(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("deit_t8", num_classes, in_channels, patch_size=2, depth=4, width=32, heads=2, img_size=8,
                 distill_tokens=1)


@MODELS.register("cit_t8", family="vit",
                 description="vit_t8 with Co-advise's conv+involution stem and two teacher tokens")
def cit_t8(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("cit_t8", num_classes, in_channels, patch_size=2, depth=4, width=32, heads=2, img_size=8,
                 distill_tokens=2, stem="conv_inv")


@MODELS.register("vit_s8", family="vit",
                 description="small ViT for 8x8 inputs: patch 2, 6 blocks, width 64, 4 heads (digits ViT teacher)")
def vit_s8(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("vit_s8", num_classes, in_channels, patch_size=2, depth=6, width=64, heads=4, img_size=8)


@MODELS.register("vit_t32", family="vit", description="tiny ViT for 32x32 inputs: patch 4, 4 blocks, width 64, 4 heads")
def vit_t32(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("vit_t32", num_classes, in_channels, patch_size=4, depth=4, width=64, heads=4, img_size=32)


@MODELS.register("deit_t32", family="vit", description="vit_t32 with a DeiT distillation token and head")
def deit_t32(num_classes: int = 10, in_channels: int = 3) -> ViT:
    return _tiny("deit_t32", num_classes, in_channels, patch_size=4, depth=4, width=64, heads=4, img_size=32,
                 distill_tokens=1)
