"""Feature-level distillation terms (intermediate layers).

Each method is a pure loss function on tensors plus a thin registered :class:`DistillLoss` that picks the layers
(``pairs`` of (teacher stage, student stage) indices into ``Outputs.feats`` / ``Outputs.preacts``) and owns the
connectors. Conventions shared by all of them:

- The teacher side never receives gradients (the base class detaches teacher outputs); connectors, when a method
  has them, act on the *student* and live in the loss module (trained with the student, not exported).
- Parameter-free methods (AT, NST) and VID match spatial sizes as CRD (RepDistiller) does: the larger map is
  adaptive-average-pooled to the smaller one. Methods with a connector (AB, OFD, ICKD) resize the student to the
  teacher's size inside the connector (pool if larger, bilinear if smaller), so the teacher's values are used
  untouched (OFD's margins and AB's activation boundaries stay exact); FitNet's regressor reaches the teacher's
  size with its own convolution (RepDistiller's ``ConvReg``).
- Several pairs are summed (CRD sums its loss groups); AB and OFD weight pair ``i`` of ``n`` by ``2^(i-n+1)``
  (deepest = 1) as their official code does.
- No loss carries its outer weight: ``default_weight`` / ``weight_range`` record the weight the paper or the
  reference implementation uses, for search spaces.
- Computed in float32 (safe under bf16/fp16 autocast).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.connectors import FeatureConnector, HintRegressor, feature_pairs_shapes, pool_to_smaller
from ..outputs import Outputs
from ..pairs import auto_pairs
from .base import DistillLoss, HParam, Pairs, register

__all__ = [
    "FitNet",
    "AT",
    "NST",
    "FSP",
    "AB",
    "VID",
    "OFD",
    "ICKD",
    "hint_loss",
    "attention_map",
    "at_loss",
    "nst_loss",
    "fsp_matrix",
    "fsp_loss",
    "ab_loss",
    "vid_nll",
    "ofd_loss",
    "bn_margin",
    "empirical_margin",
    "find_bn_before_preacts",
    "inter_channel_correlation",
    "ickd_loss",
]


# ----------------------------------------------------------------------------------------------- helpers
_F = TypeVar("_F", bound=Callable[..., Tensor])


def _first_tensor(values) -> Tensor | None:
    for v in values:
        if isinstance(v, Tensor):
            return v
        if isinstance(v, (list, tuple)):
            found = _first_tensor(v)
            if found is not None:
                return found
    return None


def fp32(fn: _F) -> _F:
    """Run a loss function with autocast disabled (on its tensors' device), so that its matmuls and reductions
    stay in float32 under bf16/fp16 mixed precision; the functions cast their inputs with ``.float()``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = _first_tensor(list(args) + list(kwargs.values()))
        with torch.autocast(first.device.type if first is not None else "cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def stage_maps(out: Outputs, which: str = "feats") -> list[Tensor]:
    """``out.preacts`` (falling back to ``out.feats`` for models that expose none) or ``out.feats``."""
    if which == "preacts":
        return out.preacts or out.feats
    return out.feats


def _stage_count(shapes, which: str) -> int:
    return len((shapes.preacts or shapes.feats) if which == "preacts" else shapes.feats)


def resolve_checked_pairs(loss: DistillLoss, default: str, which: str = "feats") -> Pairs:
    """``loss.resolve_pairs(default)``, checked against the probed stage counts when Shapes are known."""
    pairs = [(int(t), int(s)) for t, s in loss.resolve_pairs(default)]
    if not pairs:
        raise ConfigError(f"loss {loss.name!r}: pairs must not be empty")
    if loss.student_shapes is not None and loss.teacher_shapes is not None:
        nt, ns = _stage_count(loss.teacher_shapes, which), _stage_count(loss.student_shapes, which)
        for t, s in pairs:
            if not (0 <= t < nt and 0 <= s < ns):
                raise ConfigError(
                    f"loss {loss.name!r}: pair ({t}, {s}) out of range; the teacher has stages 0..{nt - 1}, "
                    f"the student 0..{ns - 1}"
                )
    return pairs


def _require_shapes(loss: DistillLoss) -> None:
    if loss.student_shapes is None or loss.teacher_shapes is None:
        raise ConfigError(f"loss {loss.name!r} builds connectors: it needs the student's and teacher's Shapes")


def _pair_weights(n: int) -> list[float]:
    """AB's / OFD's per-pair weights 2^(i-n+1): the deepest pair 1, each shallower one half the next."""
    return [2.0 ** (i - n + 1) for i in range(n)]


# ----------------------------------------------------------------------------------------------- FitNet
@fp32
def hint_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """FitNets' hint loss: mean squared error (``nn.MSELoss`` as CRD/mdistiller; the paper's 1/2·||·||² up to a
    constant factor) between the regressed student feature and the teacher's hint."""
    return F.mse_loss(student_hint.float(), teacher_hint.float())


@register
class FitNet(DistillLoss):
    """Romero et al. ICLR 2015, FitNets: Hints for Thin Deep Nets.

    A regressor maps the student's guided layer to the teacher's hint layer; loss = MSE (mean over all elements).
    Regressor: :class:`~autokd.models.connectors.HintRegressor`, i.e. RepDistiller's ``ConvReg`` (mdistiller
    reuses it): a conv whose kernel (1 + H_s − H_t, 1 + W_s − W_t) maps the student's size onto the teacher's
    (1×1 with bias for equal sizes; 3×3 stride 2 for a student map twice as large; a 4×4 stride-2 transposed
    conv for one half as large) + BN + ReLU. For resnet32x4 -> resnet8x4 at the stage-2 hint (128 × 16 × 16 on
    both sides) that is 128·128 + 128 (conv) + 2·128 (BN) = 16,768 parameters. The paper's regressor is also
    convolutional. Default pair: the middle one of the stage-aligned ``auto`` pairs (rounding towards
    shallower), i.e. stage 2 of CIFAR ResNets/WRNs = CRD's and mdistiller's ``hint_layer=2``; the paper also uses
    a middle hint. The paper trains the hint stage first and then KD; here it is a single joint term.

    Weight: 100 in CRD and mdistiller (``default_weight``).
    """

    name = "fitnet"
    paper = "Romero et al. ICLR 2015, FitNets: Hints for Thin Deep Nets (arXiv:1412.6550)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams: dict[str, HParam] = {}
    default_weight = 100.0
    weight_range = (1.0, 1000.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_shapes(self)
        pairs = resolve_checked_pairs(self, "auto")
        self.layer_pairs = pairs if self.pairs is not None else [pairs[(len(pairs) - 1) // 2]]
        self.connectors = nn.ModuleList(
            HintRegressor(s, t)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs)
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(
            hint_loss(conn(student.feats[si]), teacher.feats[ti])
            for conn, (ti, si) in zip(self.connectors, self.layer_pairs, strict=True)
        )


# ----------------------------------------------------------------------------------------------- AT
@fp32
def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of (N, C, H, W) ``f``: mean over channels of |f|^p, flattened, L2-normalised -> (N, H·W)."""
    return F.normalize(f.float().abs().pow(p).mean(1).flatten(1), dim=1)


@fp32
def at_loss(student_feat: Tensor, teacher_feat: Tensor, p: float = 2.0) -> Tensor:
    """CRD's ``at_loss``: maps pooled to the smaller size, then mean over (N, H·W) of the squared difference of the
    normalised attention maps."""
    s, t = pool_to_smaller(student_feat, teacher_feat)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


#: AT's reference setting: CRD's resnet32x4 -> resnet8x4 on 32×32 CIFAR, attention maps of 32², 16² and 8² positions.
AT_REFERENCE_POSITIONS = (32 * 32, 16 * 16, 8 * 8)


def _pooled_positions(student, teacher, pairs) -> list[int]:
    """H·W of each pair's maps after pooling the larger to the smaller (the size AT's maps are compared at)."""
    out = []
    for ti, si in pairs:
        (_, ht, wt), (_, hs, ws) = teacher.feats[ti][:3], student.feats[si][:3]
        out.append(min(ht, hs) * min(wt, ws))
    return out


@register
class AT(DistillLoss):
    """Zagoruyko & Komodakis ICLR 2017, Attention Transfer (activation-based).

    Attention map = mean over channels of |f|^p (p = 2), flattened, L2-normalised; loss = mean of the squared
    difference of the maps (CRD's ``at_loss``), summed over the pairs. Spatial sizes: the larger map is
    adaptive-average-pooled to the smaller (CRD). Default pairs: all stage-aligned ``auto`` pairs (CRD: every
    stage output but the stem). Channel counts need not match.

    Weight: β = 1000 (CRD, mdistiller). The official code (szagoruyko/attention-transfer, ``cifar.py``) adds
    ``β · Σ_pairs at_loss`` with β = 1e3, each pair's term summed over the GPUs' per-GPU means, i.e. exactly
    1000 on one GPU; the β/2 of the paper's formula is its notation, not a halving in the code.

    Resolution-aware default (:meth:`weight_scale`): both maps are unit vectors over H·W positions, so each
    pair's loss is (2 − 2·cos)/(H·W): a scale-free dissimilarity divided by the number of positions. β = 1000
    was tuned where the pairs have 32², 16² and 8² positions (CIFAR, Σ 1/(H·W) = 21/1024); on smaller maps the
    same β multiplies a loss many times larger (on 8×8 digits the pairs have 4² and 2² positions: 15× larger;
    measured at initialisation, the loss is 8.7× its value on the same digits upsampled to 32×32). The default
    weight is therefore β · (21/1024) / Σ_pairs 1/(H_k·W_k), with H_k×W_k each pair's compared size: exactly
    1000 for CIFAR ResNets/WRNs, ≈ 66 for 8×8 digits. The rule keeps the loss at the reference magnitude; it
    does not adapt to the schedule: on a tiny training set with a short schedule (digits, 224 images, 15
    epochs) even 32×32 inputs need a smaller β than 1000 (search ``weight_range_for``: a study's space does
    for an ``at`` term without ``weight``).
    """

    name = "at"
    paper = "Zagoruyko & Komodakis ICLR 2017, Paying More Attention to Attention (arXiv:1612.03928)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {"p": HParam(2.0, 1.0, 4.0, doc="exponent of |f|^p in the attention map")}
    default_weight = 1000.0
    weight_range = (10.0, 1.0e4)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "auto")

    @classmethod
    def weight_scale(cls, student=None, teacher=None, pairs=None) -> float:
        if student is None or teacher is None or not student.feats or not teacher.feats:
            return 1.0
        pairs = list(pairs) if pairs is not None else auto_pairs(teacher, student)
        inverse = sum(1.0 / p for p in _pooled_positions(student, teacher, pairs))
        return sum(1.0 / p for p in AT_REFERENCE_POSITIONS) / inverse

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(at_loss(student.feats[si], teacher.feats[ti], self.p) for ti, si in self.layer_pairs)


# ----------------------------------------------------------------------------------------------- NST
def _poly2(a: Tensor, b: Tensor) -> Tensor:
    """Polynomial kernel (a·b)^2 between all channel vectors: (N, Ca, D), (N, Cb, D) -> (N, Ca, Cb)."""
    return (a @ b.transpose(1, 2)).pow(2)


@fp32
def nst_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Squared MMD with the polynomial kernel k(x, y) = (x·y)^2 between the channels of the two maps, each
    channel's spatial vector L2-normalised (CRD's ``NSTLoss`` with ``full_loss=True``). Maps pooled to the smaller
    size; channel counts may differ."""
    s, t = pool_to_smaller(student_feat, teacher_feat)
    s = F.normalize(s.float().flatten(2), dim=2)
    t = F.normalize(t.float().flatten(2), dim=2)
    return _poly2(t, t).mean() + _poly2(s, s).mean() - 2 * _poly2(s, t).mean()


@register
class NST(DistillLoss):
    """Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer.

    Each channel's spatial activation pattern (L2-normalised over H·W) is a sample; loss = squared MMD between
    the teacher's and student's channel distributions with the polynomial kernel (x·y + c)^d, d = 2, c = 0 (the
    paper's best kernel and CRD's implementation), means over the batch and channel pairs; summed over pairs.
    Spatial sizes: the larger map is pooled to the smaller (CRD). Default pairs: all ``auto`` pairs (CRD: every
    stage but the stem).

    Weight: 50 in CRD (KD-Zoo uses 10).
    """

    name = "nst"
    paper = "Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer (arXiv:1707.01219)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams: dict[str, HParam] = {}
    default_weight = 50.0
    weight_range = (1.0, 500.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "auto")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(nst_loss(student.feats[si], teacher.feats[ti]) for ti, si in self.layer_pairs)


# ----------------------------------------------------------------------------------------------- FSP
@fp32
def fsp_matrix(bottom: Tensor, top: Tensor) -> Tensor:
    """Flow of Solution Procedure between two maps of one network: G[n, i, j] = mean over positions of
    bottom[n, i] · top[n, j] -> (N, C_bottom, C_top); the larger map is pooled to the smaller first (CRD)."""
    b, t = pool_to_smaller(bottom.float(), top.float())
    hw = b.shape[-2] * b.shape[-1]
    return b.flatten(2) @ t.flatten(2).transpose(1, 2) / hw


@fp32
def fsp_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """Σ over consecutive layer pairs (i, i+1) of mean((G_s - G_t)^2) (CRD's ``FSP``)."""
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    for i in range(len(student_maps) - 1):
        g_s = fsp_matrix(student_maps[i], student_maps[i + 1])
        g_t = fsp_matrix(teacher_maps[i], teacher_maps[i + 1])
        total = total + (g_s - g_t).pow(2).mean()
    return total


@register
class FSP(DistillLoss):
    """Yim et al. CVPR 2017, A Gift from Knowledge Distillation (FSP matrices).

    Layer *pairs of pairs*: the FSP matrix of consecutive entries of ``pairs`` is computed within each network and
    matched (mean squared difference, summed over the consecutive pairs). Default pairs: the stems (0, 0) followed
    by the ``auto`` pairs, i.e. CRD's ``feat[:-1]`` (stem + every stage) for same-family pairs. Within a pair of
    layers the larger map is pooled to the smaller. Channel mismatch between teacher and student (CRD refuses it):
    each student map goes through a 1×1 conv + BN connector to the teacher stage's channel count (at the student's
    own resolution), so the (C1, C2) matrices have the teacher's shape; equal channels keep the identity.

    Weight: the paper and CRD use FSP as a separate initialisation stage (CRD weight 0 afterwards); as a joint
    term KD-Zoo (AberHu) uses 1.0, our ``default_weight``.
    """

    name = "fsp"
    paper = ("Yim, Joo, Bae & Kim CVPR 2017, A Gift from Knowledge Distillation: Fast Optimization, Network "
             "Minimization and Transfer Learning")
    level = "feature"
    needs = frozenset({"feats"})
    hparams: dict[str, HParam] = {}
    default_weight = 1.0
    weight_range = (0.01, 100.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        pairs = resolve_checked_pairs(self, "auto")
        if self.pairs is None and (0, 0) not in pairs:
            pairs = [(0, 0), *pairs]
        if len(pairs) < 2:
            raise ConfigError("loss 'fsp' needs at least 2 layer pairs (FSP matrices join consecutive layers)")
        self.layer_pairs = pairs
        _require_shapes(self)
        self.connectors = nn.ModuleList(
            FeatureConnector(s, (t[0], *s[1:]))
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, pairs)
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        s_maps = [conn(student.feats[si]) for conn, (_, si) in zip(self.connectors, self.layer_pairs, strict=True)]
        t_maps = [teacher.feats[ti] for ti, _ in self.layer_pairs]
        return fsp_loss(s_maps, t_maps)


# ----------------------------------------------------------------------------------------------- AB
@fp32
def ab_loss(student_pre: Tensor, teacher_pre: Tensor, margin: float = 1.0) -> Tensor:
    """Activation-boundary transfer, the official "alternative L2" (squared hinge), summed over all elements:
    where the teacher neuron is off (t <= 0) penalise (s + m)^2 if s > -m; where it is on (t > 0) penalise
    (s - m)^2 if s <= m."""
    s, t = student_pre.float(), teacher_pre.float()
    on = t > 0
    loss = (s + margin).pow(2) * ((s > -margin) & ~on) + (s - margin).pow(2) * ((s <= margin) & on)
    return loss.sum()


@register
class AB(DistillLoss):
    """Heo et al. AAAI 2019, Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons.

    On pre-ReLU features (``preacts``; models without them fall back to ``feats``): a connector (1×1 conv + BN,
    always present, as the official code; student resized to the teacher's size first) maps the student's
    pre-activation; loss = the official squared-hinge ``criterion_alternative_L2`` with margin ``margin`` (1.0),
    pair i of n weighted 2^(i-n+1), then / batch size / 1000 × 3 exactly as the official code / CRD. Default
    pairs: all ``auto`` pairs (CRD: every stage but the stem). The paper (and CRD) use AB as an initialisation
    stage before CE/KD training; here it is a joint term.

    Weight: no reference weight for a joint term (CRD: init stage, then 0; KD-Zoo uses 10 with margin 2 and a
    different normalisation); ``default_weight`` = 1 with the official /1000·3 scaling built in.
    """

    name = "ab"
    paper = ("Heo, Lee, Yun & Choi AAAI 2019, Knowledge Transfer via Distillation of Activation Boundaries "
             "Formed by Hidden Neurons (arXiv:1811.03233)")
    level = "feature"
    needs = frozenset({"preacts"})
    hparams = {"margin": HParam(1.0, 0.25, 4.0, log=True, doc="activation-boundary margin m")}
    default_weight = 1.0
    weight_range = (0.01, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "auto", which="preacts")
        _require_shapes(self)
        self.connectors = nn.ModuleList(
            FeatureConnector(s, t, always_conv=True)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs, "preacts")
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        s_maps, t_maps = stage_maps(student, "preacts"), stage_maps(teacher, "preacts")
        weights = _pair_weights(len(self.layer_pairs))
        total = sum(
            w * ab_loss(conn(s_maps[si]), t_maps[ti], self.margin)
            for w, conn, (ti, si) in zip(weights, self.connectors, self.layer_pairs, strict=True)
        )
        return total / s_maps[0].shape[0] / 1000.0 * 3.0


# ----------------------------------------------------------------------------------------------- VID
@fp32
def vid_nll(pred_mean: Tensor, target: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """Gaussian negative log-likelihood (without the constant) with per-channel variance softplus(log_scale)+eps,
    averaged over all elements: mean(0.5·((μ - t)^2 / σ^2 + log σ^2))."""
    var = (F.softplus(log_scale.float()) + eps).view(1, -1, 1, 1)
    return (0.5 * ((pred_mean.float() - target.float()).pow(2) / var + var.log())).mean()


class _VIDPair(nn.Module):
    """VID's regressor (conv1×1-ReLU-conv1×1-ReLU-conv1×1, no bias, mid = teacher channels as CRD) and the learned
    per-channel log-scale of the variance."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, init_pred_var: float, eps: float) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c_mid, c_mid, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c_mid, c_out, 1, bias=False),
        )
        # softplus^{-1}(init_pred_var - eps), so that the initial variance is exactly init_pred_var
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((c_out,), init))


@register
class VID(DistillLoss):
    """Ahn et al. CVPR 2019, Variational Information Distillation for Knowledge Transfer.

    Maximises a variational lower bound of I(t; s): the teacher feature is modelled as a Gaussian with mean
    μ(s) from a per-pair regressor (1×1 conv-ReLU-1×1 conv-ReLU-1×1 conv, mid channels = teacher channels, as
    the official code / CRD) and a learned per-channel variance softplus(α_c) + ε, α initialised so that the
    variance starts at ``init_pred_var`` (5.0); ε = 1e-5 (class constant ``EPS``). Loss = mean NLL, summed over
    the pairs; the larger map is pooled to the smaller first (CRD). Default pairs: all ``auto`` pairs (CRD: every
    stage but the stem).

    Weight: 1 (CRD; KD-Zoo also 1).
    """

    name = "vid"
    paper = ("Ahn, Hu, Damianou, Lawrence & Dai CVPR 2019, Variational Information Distillation for Knowledge "
             "Transfer (arXiv:1904.05835)")
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {"init_pred_var": HParam(5.0, 0.5, 20.0, log=True, doc="initial predicted variance")}
    default_weight = 1.0
    weight_range = (0.1, 10.0)
    EPS = 1e-5

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "auto")
        _require_shapes(self)
        if self.init_pred_var <= self.EPS:
            raise ConfigError(f"loss 'vid': init_pred_var must be > {self.EPS}, got {self.init_pred_var}")
        self.heads = nn.ModuleList(
            _VIDPair(s[0], t[0], t[0], self.init_pred_var, self.EPS)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs)
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        total = 0.0
        for head, (ti, si) in zip(self.heads, self.layer_pairs, strict=True):
            s, t = pool_to_smaller(student.feats[si], teacher.feats[ti])
            total = total + vid_nll(head.regressor(s), t, head.log_scale, self.EPS)
        return total


# ----------------------------------------------------------------------------------------------- OFD
@fp32
def ofd_loss(student_pre: Tensor, teacher_pre: Tensor, margin: Tensor) -> Tensor:
    """OFD's partial L2, summed: teacher target = max(t, margin_c) (the margin ReLU); squared error kept where
    s > target or target > 0, i.e. positions where student <= teacher <= 0 are skipped."""
    s = student_pre.float()
    t = torch.maximum(teacher_pre.float(), margin.float().view(1, -1, 1, 1).to(s.device))
    mask = (s > t) | (t > 0)
    return ((s - t).pow(2) * mask).sum()


def bn_margin(bn: nn.Module) -> Tensor:
    """OFD's margin from a BN before a ReLU: with the BN output of channel c ~ N(β_c, γ_c^2), the margin is
    E[x | x < 0] = β - |γ|·φ(β/|γ|)/Φ(-β/|γ|), or -3|γ| when Φ(-β/|γ|) <= 0.001 (as the official code)."""
    s = bn.weight.detach().double().abs().clamp_min(1e-12)
    m = bn.bias.detach().double()
    z = m / s
    cdf = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    margin = torch.where(cdf > 0.001, m - s * pdf / cdf.clamp_min(1e-300), -3 * s)
    return margin.float()


def empirical_margin(teacher_pre: Tensor) -> Tensor:
    """Fallback margin per channel from teacher pre-activations (N, C, H, W): the mean of the negative values,
    or -3·std of the channel when it has none (the analogue of the BN rule)."""
    x = teacher_pre.detach().float().transpose(0, 1).flatten(1)
    neg = x < 0
    count = neg.sum(1)
    mean_neg = (x * neg).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, mean_neg, -3 * x.std(1, unbiased=False))


_PASS_THROUGH = ("Add", "Cat", "View", "Reshape", "Transpose", "Permute", "Clone", "Slice", "Split", "Squeeze",
                 "Unsqueeze", "Expand", "Alias", "Select", "ToCopy")


def _graph_depth(root, memo: dict) -> int:
    """Longest path from an autograd node down to the graph's leaves (iterative, memoised)."""
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in memo:
            continue
        children = [n for n, _ in node.next_functions if n is not None]
        if expanded:
            memo[node] = 1 + max((memo[c] for c in children), default=0)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in memo)
    return memo[root]


def find_bn_before_preacts(model: nn.Module, input_shape) -> list[nn.Module | None]:
    """For each stage of ``model.forward_outputs``' ``preacts``, the BatchNorm whose output feeds it.

    Probes the model (eval mode, batch of 2, input requiring grad so that the autograd graph exists even with a
    frozen model) and walks the graph back from each pre-activation through parameter-free ops only (additions,
    concatenations, views/reshapes/shuffles, slices). The nearest BN with the stage's channel count wins; in a
    residual sum fed by two BNs the deeper branch wins (the residual branch's last BN, not the shortcut's — the
    official code's ``bn2`` of the last block, MobileNetV2's last projection BN). ``None`` where the
    pre-activation is not a BN output (e.g. WRN's pre-activation blocks; ShuffleNetV2 stages, whose BN covers
    only half the channels). Every module's train/eval mode is restored.
    """
    bn_of: dict[Any, nn.Module] = {}

    def hook(mod, inp, out):
        if isinstance(out, Tensor) and out.grad_fn is not None:
            bn_of[out.grad_fn] = mod

    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))]
    handles = [m.register_forward_hook(hook) for m in bns]
    modes = [(m, m.training) for m in model.modules()]
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    try:
        model.eval()
        with torch.enable_grad():
            x = torch.randn((2, *tuple(input_shape)), device=device, dtype=dtype, requires_grad=True)
            out = model.forward_outputs(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    memo: dict = {}
    found: list[nn.Module | None] = []
    for p in out.preacts:
        channels = p.shape[1]
        level = [p.grad_fn] if p.grad_fn is not None else []
        seen = set(level)
        choice = None
        while level and choice is None:
            cands = [n for n in level if n in bn_of and bn_of[n].num_features == channels]
            if cands:
                choice = bn_of[max(cands, key=lambda n: _graph_depth(n, memo))]
                break
            nxt = []
            for node in level:
                if node in bn_of or not any(k in type(node).__name__ for k in _PASS_THROUGH):
                    continue
                for child, _ in node.next_functions:
                    if child is not None and child not in seen:
                        seen.add(child)
                        nxt.append(child)
            level = nxt
        found.append(choice)
    return found


@register
class OFD(DistillLoss):
    """Heo et al. ICCV 2019, A Comprehensive Overhaul of Feature Distillation (official code: clovaai/
    overhaul-distillation; mdistiller's OFD).

    On pre-ReLU features (``preacts``): student through a connector (1×1 conv + BN, He-init, after resizing to the
    teacher's size); teacher target = max(t, margin_c) with the channel margin computed from the BN that produces
    the teacher's pre-activation (``bn_margin``: E[x | x < 0] under N(β, γ²)); partial L2 skipping positions where
    student <= target <= 0; pair i of n weighted 2^(i-n+1); the sum is divided by batch size and by 1000, as the
    official CIFAR training script does (``loss_distill.sum() / batch_size / 1000``).

    Margins: ``setup(teacher_model=...)`` locates each paired teacher stage's BN with
    :func:`find_bn_before_preacts` (for zoo models the last BN of the stage's residual branch). Stages without
    such a BN (WRN, ShuffleNetV2 stages, wrapped models), or when ``setup`` was never called, fall back to an
    empirical margin estimated once from the teacher pre-activations of the first batch seen
    (``empirical_margin``). ``margin_sources`` records which was used ("bn" / "empirical").
    Default pairs: all ``auto`` pairs (the official code distils every stage after the stem).

    Where the official code and mdistiller differ we follow the official code (``max(t, margin)`` and the
    ``(s > t) | (t > 0)`` mask, /batch/1000); mdistiller instead pools the teacher to the student's size, here the
    student is resized to the teacher's so that the margins apply to unpooled teacher values.

    Weight: 1 with the /1000 scaling built in (official). KD-Zoo uses 0.5 with the same scaling.
    """

    name = "ofd"
    paper = ("Heo, Kim, Yun, Park, Kwak & Choi ICCV 2019, A Comprehensive Overhaul of Feature Distillation "
             "(arXiv:1904.01866)")
    level = "feature"
    needs = frozenset({"preacts", "teacher_model"})
    hparams: dict[str, HParam] = {}
    default_weight = 1.0
    weight_range = (0.05, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "auto", which="preacts")
        _require_shapes(self)
        shapes = feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs, "preacts")
        self.connectors = nn.ModuleList(FeatureConnector(s, t, always_conv=True) for t, s in shapes)
        for k, (t, _) in enumerate(shapes):
            self.register_buffer(f"margin_{k}", torch.full((int(t[0]),), float("nan")))
        self.margin_sources: list[str | None] = [None] * len(shapes)

    def _margin(self, k: int) -> Tensor:
        return getattr(self, f"margin_{k}")

    def setup(self, **context: Any) -> None:
        model = context.get("teacher_model")
        if model is None or not hasattr(model, "forward_outputs"):
            return
        input_shape = self.teacher_shapes.input_shape if self.teacher_shapes else context.get("input_shape")
        if input_shape is None:
            return
        bns = find_bn_before_preacts(model, input_shape)
        for k, (ti, _) in enumerate(self.layer_pairs):
            bn = bns[ti] if ti < len(bns) else None
            buf = self._margin(k)
            if bn is not None and bn.num_features == buf.numel():
                buf.copy_(bn_margin(bn).to(buf.device))
                self.margin_sources[k] = "bn"

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        s_maps, t_maps = stage_maps(student, "preacts"), stage_maps(teacher, "preacts")
        weights = _pair_weights(len(self.layer_pairs))
        total = s_maps[0].new_zeros((), dtype=torch.float32)
        for k, (w, conn, (ti, si)) in enumerate(zip(weights, self.connectors, self.layer_pairs, strict=True)):
            margin = self._margin(k)
            if torch.isnan(margin).any():
                with torch.no_grad():
                    margin.copy_(empirical_margin(t_maps[ti]).to(margin.device))
                self.margin_sources[k] = "empirical"
            total = total + w * ofd_loss(conn(s_maps[si]), t_maps[ti], margin)
        return total / s_maps[0].shape[0] / 1000.0


# ----------------------------------------------------------------------------------------------- ICKD
@fp32
def inter_channel_correlation(f: Tensor, grid: int = 1) -> Tensor:
    """Row-L2-normalised channel × channel Gram matrices of (N, C, H, W) ``f``: one per sample, or per cell of a
    grid × grid split of the map (cells of near-equal size; the grid is capped at the map size)
    -> (N·cells, C, C)."""
    f = f.float()
    g = max(1, min(int(grid), f.shape[-2], f.shape[-1]))
    cells = [c for rows in f.tensor_split(g, dim=2) for c in rows.tensor_split(g, dim=3)] if g > 1 else [f]
    grams = torch.cat([c.flatten(2) @ c.flatten(2).transpose(1, 2) for c in cells])
    return F.normalize(grams, dim=2)


@fp32
def ickd_loss(student_feat: Tensor, teacher_feat: Tensor, grid: int = 1) -> Tensor:
    """ICKD: Σ (ICC_s - ICC_t)^2 / (C · number of matrices), as the official ``batch_loss``."""
    g_s = inter_channel_correlation(student_feat, grid)
    g_t = inter_channel_correlation(teacher_feat, grid)
    b, c = g_s.shape[0], g_s.shape[1]
    return (g_s - g_t).pow(2).sum() / (c * b)


@register
class ICKD(DistillLoss):
    """Liu et al. ICCV 2021, Exploring Inter-Channel Correlation for Diversity-preserved Knowledge Distillation
    (official code: ADLab-AutoDrive/ICKD).

    Student feature through a connector (1×1 conv + BN, always, the official ``Embed``; resized to the teacher's
    size first) to the teacher's channels; inter-channel correlation = C × C Gram over positions, rows
    L2-normalised; loss = Σ squared difference / (C · N) (official). For large maps the official segmentation
    code splits the map into a grid of patches and computes one matrix per patch: ``grid`` (default 1 = the whole
    map, the CIFAR setting) does the same with grid × grid cells. Default pair: the last stages (the official
    CIFAR code distils the penultimate feature map).

    Weight: 2.5 (official CIFAR-100 command, ``-b 2.5``).
    """

    name = "ickd"
    paper = ("Liu, Zhang, Zhao, Gao, Chen & Yang ICCV 2021, Exploring Inter-Channel Correlation for "
             "Diversity-preserved Knowledge Distillation")
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {"grid": HParam(1, 1, 4, kind="int", doc="grid × grid cells, one correlation matrix each")}
    default_weight = 2.5
    weight_range = (0.1, 50.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "last")
        _require_shapes(self)
        self.connectors = nn.ModuleList(
            FeatureConnector(s, t, always_conv=True)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs)
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(
            ickd_loss(conn(student.feats[si]), teacher.feats[ti], self.grid)
            for conn, (ti, si) in zip(self.connectors, self.layer_pairs, strict=True)
        )
