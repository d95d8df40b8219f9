"""The primitive distiller space of Auto-KD (Li et al., ICCV 2023) and KD-Zero (Li et al., NeurIPS 2023).

A distiller is ``distance(transforms(student), transforms(teacher))`` at a location (the logits or a stage).
``generic`` exposes the choices as categorical hyper-parameters, so a search space can search them and a
recipe can export them like any other loss. Neither paper released runnable search code; the primitive sets
follow the papers' descriptions:

- locations: ``logits``, ``embedding``, ``feat_last``, ``feat_mid`` (the stage at half depth);
- transforms (up to 3, applied in order to teacher and student alike): identity, spatial attention, channel
  attention, random mask (the SAME mask for teacher and student), multi-scale pooling, local pooling,
  normalisation over N / C / HW, softmax over C / HW, log-softmax over C, batch Gram (N×N), channel Gram
  (C×C), min-max normalisation;
- distances: L1, L2 (MSE), smooth-L1, KL (with temperature, × T²), cosine, Pearson, correlation.

Feature locations first map the student's map to the teacher's shape with a connector (1×1 conv + BN when
channels differ, pooling/interpolation when resolutions differ); everything works on (N, C, H, W) tensors
(logits and embeddings are viewed as (N, D, 1, 1)). Each transform returns a 4-D tensor again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..models.connectors import FeatureConnector, LinearConnector
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["GenericDistill", "TRANSFORMS", "DISTANCES", "LOCATIONS"]

_EPS = 1e-6


def _as4d(x: Tensor) -> Tensor:
    return x if x.dim() == 4 else x.reshape(x.shape[0], -1, 1, 1)


def _norm(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / (std + _EPS)


def _multiscale(x: Tensor) -> Tensor:
    sizes = [s for s in (1, 2, 4) if s <= min(x.shape[-2:])] or [1]
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(1) for s in sizes], 1)[..., None, None]


def _local(x: Tensor) -> Tensor:
    if min(x.shape[-2:]) < 2:
        return x
    return F.avg_pool2d(x, 2, 2)


def _batch_gram(x: Tensor) -> Tensor:
    f = F.normalize(x.flatten(1), dim=1)
    return (f @ f.t())[..., None, None]


def _channel_gram(x: Tensor) -> Tensor:
    f = x.flatten(2)  # N, C, HW
    g = f @ f.transpose(1, 2) / f.shape[-1]
    return g.reshape(x.shape[0], -1, 1, 1)


def _minmax(x: Tensor) -> Tensor:
    f = x.flatten(1)
    lo, hi = f.min(1, keepdim=True).values, f.max(1, keepdim=True).values
    return ((f - lo) / (hi - lo + _EPS)).view_as(x)


def _softmax_hw(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return F.softmax(x.reshape(n, c, h * w), dim=-1).view(n, c, h, w)


TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda x: x,
    "spatial_attention": lambda x: x.pow(2).mean(1, keepdim=True),
    "channel_attention": lambda x: x.pow(2).mean((2, 3), keepdim=True),
    "random_mask": lambda x: x,  # applied in GenericDistill with one mask shared by teacher and student
    "multiscale_pool": _multiscale,
    "local_pool": _local,
    "norm_n": lambda x: _norm(x, (0,)),
    "norm_c": lambda x: _norm(x, (1,)),
    "norm_hw": lambda x: _norm(x, (2, 3)),
    "softmax_c": lambda x: F.softmax(x, dim=1),
    "softmax_hw": _softmax_hw,
    "log_softmax": lambda x: F.log_softmax(x, dim=1),
    "batch_gram": _batch_gram,
    "channel_gram": _channel_gram,
    "minmax": _minmax,
}


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + _EPS)


def _kl(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    ls = F.log_softmax(s / temperature, dim=1)
    lt = F.log_softmax(t / temperature, dim=1)
    return F.kl_div(ls, lt, reduction="batchmean", log_target=True) * temperature**2


def _corr_matrix(x: Tensor) -> Tensor:
    """Pearson correlation between the rows of ``x`` (N × N); rows with zero variance correlate 0."""
    x = x - x.mean(1, keepdim=True)
    x = x / (x.norm(dim=1, keepdim=True) + _EPS)
    return x @ x.t()


def _correlation(s: Tensor, t: Tensor) -> Tensor:
    """MSE between the batch correlation matrices (N × N) of student and teacher (CC-style)."""
    return F.mse_loss(_corr_matrix(s), _corr_matrix(t))


DISTANCES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "l1": lambda s, t, T: F.l1_loss(s, t),
    "l2": lambda s, t, T: F.mse_loss(s, t),
    "smooth_l1": lambda s, t, T: F.smooth_l1_loss(s, t),
    "kl": _kl,
    "cosine": lambda s, t, T: (1 - F.cosine_similarity(s, t, dim=1, eps=_EPS)).mean(),
    "pearson": lambda s, t, T: (1 - _pearson_rows(s, t)).mean(),
    "correlation": lambda s, t, T: _correlation(s, t),
}

LOCATIONS = ("logits", "embedding", "feat_last", "feat_mid")
_T_CHOICES = tuple(TRANSFORMS)


@register
class GenericDistill(DistillLoss):
    """``distance(t3(t2(t1(student))), t3(t2(t1(teacher))))`` at ``location`` — the Auto-KD / KD-Zero primitive.

    Transforms are applied to both sides identically (``random_mask`` draws ONE mask over spatial positions,
    keep ratio ``mask_ratio``, and applies it to both). ``kl`` divides by ``temperature`` and multiplies by T²;
    the others ignore the temperature. Values are computed in float32 on flattened per-sample tensors.
    """

    name = "generic"
    paper = ("Li et al. ICCV 2023, Auto-KD: Automated Distillation via Monte-Carlo Tree Search; "
             "Li et al. NeurIPS 2023, KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs")
    level = "primitive"
    needs = frozenset({"logits", "feats", "embedding"})
    default_weight = 1.0
    weight_range = (0.01, 10.0)
    hparams = {
        "location": HParam("logits", kind="categorical", choices=LOCATIONS, doc="where to distil"),
        "transform1": HParam("identity", kind="categorical", choices=_T_CHOICES),
        "transform2": HParam("identity", kind="categorical", choices=_T_CHOICES),
        "transform3": HParam("identity", kind="categorical", choices=_T_CHOICES),
        "distance": HParam("kl", kind="categorical", choices=tuple(DISTANCES)),
        "temperature": HParam(4.0, 1.0, 16.0, log=True, doc="temperature of the kl distance"),
        "mask_ratio": HParam(0.5, 0.1, 0.9, doc="fraction of positions kept by random_mask"),
    }

    #: Largest per-sample tensor a transform chain may produce (e.g. channel Gram applied twice to a
    #: 1280-channel map would need C**4 values per sample); larger chains are rejected at construction.
    max_elements = 1 << 20

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.transforms = [self.transform1, self.transform2, self.transform3]
        self._check_chain()
        self.connector = None
        if self.location.startswith("feat"):
            if self.student_shapes is None or self.teacher_shapes is None:
                raise ConfigError("loss 'generic' at a feature location needs the models' Shapes")
            ti, si = self._stages()
            self.connector = FeatureConnector(self.student_shapes.feats[si], self.teacher_shapes.feats[ti])
        elif self.location == "embedding" and self.student_shapes is not None and self.teacher_shapes is not None:
            self.connector = LinearConnector(self.student_shapes.embedding, self.teacher_shapes.embedding)

    def _location_shape(self) -> tuple[int, int, int]:
        t = self.teacher_shapes
        if self.location == "logits" or t is None:
            return (t.num_classes if t is not None else 1000, 1, 1)
        if self.location == "embedding":
            return (t.embedding or 1, 1, 1)
        ti, _ = self._stages()
        return tuple(t.feats[ti])

    def _check_chain(self) -> None:
        """Propagate the per-sample shape through the transforms; reject chains that explode in size."""
        c, h, w = self._location_shape()
        batch = 256  # an upper bound for the batch Gram's width
        for name in self.transforms:
            if name == "spatial_attention":
                c = 1
            elif name == "channel_attention":
                h = w = 1
            elif name == "multiscale_pool":
                c, h, w = c * sum(s * s for s in (1, 2, 4) if s <= min(h, w)) or c, 1, 1
            elif name == "local_pool" and min(h, w) >= 2:
                h, w = h // 2, w // 2
            elif name == "batch_gram":
                c, h, w = batch, 1, 1
            elif name == "channel_gram":
                c, h, w = c * c, 1, 1
            if c * h * w > self.max_elements:
                raise ConfigError(
                    f"loss 'generic': transforms {' -> '.join(self.transforms)} at {self.location} produce "
                    f"{c * h * w:,} values per sample (limit {self.max_elements:,})")

    def _stages(self) -> tuple[int, int]:
        if self.pairs:
            return tuple(self.pairs[0])
        nt, ns = self.teacher_shapes.num_stages, self.student_shapes.num_stages
        if self.location == "feat_last":
            return nt - 1, ns - 1
        return (nt - 1) // 2, (ns - 1) // 2

    def _locate(self, s: Outputs, t: Outputs) -> tuple[Tensor, Tensor]:
        if self.location == "logits":
            return _as4d(s.logits.float()), _as4d(t.logits.float())
        if self.location == "embedding":
            se = s.embedding if self.connector is None else self.connector(s.embedding)
            return _as4d(se.float()), _as4d(t.embedding.float())
        ti, si = self._stages()
        return self.connector(s.feats[si]).float(), t.feats[ti].float()

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        s, t = self._locate(student, teacher)
        for name in self.transforms:
            if name == "random_mask":
                keep = (torch.rand(s.shape[0], 1, *s.shape[2:], device=s.device) < self.mask_ratio).to(s.dtype)
                s, t = s * keep, t * keep
            else:
                fn = TRANSFORMS[name]
                s, t = fn(s), fn(t)
        return DISTANCES[self.distance](s.flatten(1), t.flatten(1), self.temperature)
