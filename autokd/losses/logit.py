"""Logit-level distillation terms (the teacher's predictions).

Every method is a pure loss function on ``(N, K)`` logits plus a thin registered :class:`DistillLoss`.
Conventions shared by all of them unless a docstring says otherwise:

- computed in float32 (inputs are ``.float()``-ed, so bf16 autocast stays finite), from log-softmaxes
  (``log_target=True``), so no ``log(0)`` appears for large logits;
- "KL" is ``KL(teacher || student)`` summed over classes and averaged over the batch (batch-mean);
- teacher logits arrive detached (``DistillLoss.__call__``);
- schedules read ``self.epoch`` (0-based, set by the trainer's ``set_progress``). Where the official code
  counts epochs from 1 (mdistiller, CTKD) we use ``epoch + 1`` so that the first epoch gets the same
  value as in the official code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = [
    "KD",
    "kd_loss",
    "LogitMSE",
    "logit_mse_loss",
    "NoisyTeacher",
    "perturb_logits",
    "noisy_teacher_loss",
    "DKD",
    "dkd_terms",
    "dkd_loss",
    "warmup_weight",
    "DIST",
    "dist_loss",
    "LogitStd",
    "standardize",
    "logit_std_loss",
    "NormKD",
    "norm_kd_loss",
    "DTKD",
    "dtkd_temperatures",
    "dtkd_loss",
    "CTKD",
    "grad_reverse",
    "ctkd_lambda",
    "kd_loss_per_sample_t",
    "MLKD",
    "mlkd_loss",
    "TfKD",
    "virtual_teacher",
    "tf_kd_loss",
    "AnnealingKD",
    "annealing_factor",
    "annealing_kd_loss",
]


# ---------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------
def _kl_rows(log_p_student: Tensor, log_p_teacher: Tensor) -> Tensor:
    """Per-sample KL(teacher || student) from log-probabilities, shape (N,)."""
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)


def _fp32(t: Tensor):
    """A context that switches autocast off (matmuls in float32) on ``t``'s device."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch, times T².

    Computed in float32 from log-softmaxes (``log_target=True``) so it stays finite for large logits and
    under bf16 autocast. Note: PyTorch's default ``reduction='mean'`` would divide by N*K, not N.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * (temperature**2)


@register
class KD(DistillLoss):
    """Hinton et al. 2015. Batch-mean KL between temperature-softened distributions, scaled by T²."""

    name = "kd"
    paper = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531)"
    needs = frozenset({"logits"})
    hparams = {"temperature": HParam(4.0, 1.0, 20.0, log=True, doc="softmax temperature T")}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return kd_loss(student.logits, teacher.logits, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# logit_mse — Ba & Caruana 2014
# ---------------------------------------------------------------------------------------------------------
def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean squared error between raw logits, averaged over all N*K elements (``F.mse_loss`` default)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


@register
class LogitMSE(DistillLoss):
    """Ba & Caruana 2014: regress the teacher's raw (pre-softmax) logits with an L2 loss.

    Reduction: mean over all N*K elements (as ``nn.MSELoss()`` in common implementations); the paper's
    ``1/(2T) Σ ||g(x) - z||²`` differs by the constant K/2, which the term's outer weight absorbs.
    No hyper-parameters.
    """

    name = "logit_mse"
    paper = "Ba & Caruana 2014, Do Deep Nets Really Need to be Deep? (NeurIPS 2014, arXiv:1312.6184)"
    needs = frozenset({"logits"})
    hparams: dict[str, HParam] = {}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return logit_mse_loss(student.logits, teacher.logits)


# ---------------------------------------------------------------------------------------------------------
# noisy_teacher — Sau & Balasubramanian 2016
# ---------------------------------------------------------------------------------------------------------
def perturb_logits(
    teacher_logits: Tensor, sigma: float, alpha: float, generator: torch.Generator | None = None
) -> Tensor:
    """Relative Gaussian noise on the teacher's logits: ``z' = z * (1 + ξ)``, ``ξ ~ N(0, σ²)`` element-wise,
    applied to each sample of the batch independently with probability ``alpha`` (others left unchanged)."""
    t = teacher_logits.float()
    xi = torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype) * sigma
    chosen = torch.rand((t.shape[0], 1), generator=generator, device=t.device) < alpha
    return torch.where(chosen, t * (1.0 + xi), t)


def noisy_teacher_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    sigma: float,
    alpha: float,
    noisy: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """KD (batch-mean KL × T²) towards the perturbed teacher logits; plain KD when ``noisy`` is False."""
    t = perturb_logits(teacher_logits, sigma, alpha, generator) if noisy else teacher_logits
    return kd_loss(student_logits, t, temperature)


@register
class NoisyTeacher(DistillLoss):
    """Sau & Balasubramanian 2016: perturb the teacher's logits with Gaussian noise (a regulariser that
    simulates several teachers), then distil.

    Noise: ``z' = z ⊙ (1 + ξ)``, ``ξ ~ N(0, sigma²)`` per element (relative scale, as the paper's logit
    perturbation), applied to each sample with probability ``alpha``; only in training mode — in eval mode
    the loss is exactly ``kd``. The paper regresses the noisy logits with an L2 loss (Ba & Caruana style);
    here, as specified for autokd, the noisy logits feed the KD loss (batch-mean KL × T²). There is no
    official code; ``sigma=0.1``/``alpha=0.5`` are mid-range values of the method's usual settings, not
    constants copied from a release.
    """

    name = "noisy_teacher"
    paper = (
        "Sau & Balasubramanian 2016, Deep Model Compression: Distilling Knowledge from Noisy Teachers "
        "(arXiv:1610.09650)"
    )
    needs = frozenset({"logits"})
    hparams = {
        "temperature": HParam(4.0, 1.0, 20.0, log=True, doc="softmax temperature T of the KD loss"),
        "sigma": HParam(0.1, 0.01, 1.0, log=True, doc="std of the relative noise ξ (z' = z(1+ξ))"),
        "alpha": HParam(0.5, 0.0, 1.0, doc="probability that a sample's teacher logits are perturbed"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return noisy_teacher_loss(
            student.logits, teacher.logits, self.temperature, self.sigma, self.alpha, noisy=self.training
        )


# ---------------------------------------------------------------------------------------------------------
# dkd — Zhao et al. CVPR 2022 (mdistiller DKD.py)
# ---------------------------------------------------------------------------------------------------------
_DKD_MASK = 1000.0  # mdistiller subtracts 1000 from the target logit after dividing by T


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each batch-mean and × T², as mdistiller's ``dkd_loss`` computes them.

    TCKD is the KL between the binary (target, non-target) distributions. mdistiller builds them by summing
    softmax probabilities and taking ``log``, which is ``log(0)`` for extreme logits; here the same binary
    log-probabilities come from log-sum-exps (``log p_gt = log_softmax[gt]``, ``log p_rest = logsumexp of the
    other log-probabilities``), equal in exact arithmetic and always finite. NCKD is the KL between the
    distributions over the non-target classes, obtained by subtracting 1000 from the target logit *after*
    dividing by T (as mdistiller).
    """
    zs = student_logits.float() / temperature
    zt = teacher_logits.float() / temperature
    gt = F.one_hot(target.reshape(-1).long(), zs.shape[1]).bool()

    def binary_log_probs(z: Tensor) -> Tensor:
        logp = F.log_softmax(z, dim=1)
        log_gt = logp.masked_fill(~gt, float("-inf")).logsumexp(1)
        log_rest = logp.masked_fill(gt, float("-inf")).logsumexp(1)
        return torch.stack([log_gt, log_rest], dim=1)

    n = zs.shape[0]
    tckd = _kl_rows(binary_log_probs(zs), binary_log_probs(zt)).sum() / n * temperature**2
    ls2 = F.log_softmax(zs - _DKD_MASK * gt, dim=1)
    lt2 = F.log_softmax(zt - _DKD_MASK * gt, dim=1)
    nckd = _kl_rows(ls2, lt2).sum() / n * temperature**2
    return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """``alpha * TCKD + beta * NCKD`` (both batch-mean, × T²), without the warm-up factor."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, target, temperature)
    return alpha * tckd + beta * nckd


def warmup_weight(epoch: int, warmup: int) -> float:
    """mdistiller's ``min(epoch / warmup, 1)`` with its 1-based epoch, i.e. ``min((epoch + 1) / warmup, 1)``
    for our 0-based ``epoch``; ``warmup <= 0`` disables the ramp."""
    if warmup <= 0:
        return 1.0
    return min((epoch + 1) / warmup, 1.0)


@register
class DKD(DistillLoss):
    """Zhao et al. CVPR 2022, Decoupled KD, following mdistiller's ``DKD.py``.

    ``min(epoch/warmup, 1) * (alpha * TCKD + beta * NCKD)``; TCKD/NCKD as in :func:`dkd_terms` (batch-mean,
    each × T²; target class masked with -1000 after dividing by T). mdistiller counts epochs from 1, so the
    ramp here is ``min((self.epoch + 1) / warmup, 1)`` with autokd's 0-based epoch: the first epoch gets
    ``1/warmup`` exactly as in mdistiller, reaching 1 at epoch ``warmup - 1``. Defaults are mdistiller's
    CIFAR ones (alpha 1, beta 8, T 4, warm-up 20 epochs); the paper tunes beta per pair (2-8).
    """

    name = "dkd"
    paper = "Zhao, Cui, Song, Qiu & Liang, CVPR 2022, Decoupled Knowledge Distillation (arXiv:2203.08679)"
    needs = frozenset({"logits"})
    hparams = {
        "alpha": HParam(1.0, 0.25, 4.0, log=True, doc="weight of TCKD (target vs non-target)"),
        "beta": HParam(8.0, 1.0, 10.0, doc="weight of NCKD (among non-target classes)"),
        "temperature": HParam(4.0, 1.0, 10.0, log=True, doc="softmax temperature T"),
        "warmup": HParam(20, 0, 40, kind="int", doc="epochs of the linear weight ramp (0: none)"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        w = warmup_weight(self.epoch, self.warmup)
        return w * dkd_loss(student.logits, teacher.logits, target, self.alpha, self.beta, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# dist — Huang et al. NeurIPS 2022
# ---------------------------------------------------------------------------------------------------------
def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation as the official code: cosine of the mean-centred rows, ``+eps`` below."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor, teacher_logits: Tensor, beta: float, gamma: float, temperature: float
) -> Tensor:
    """``T² * (beta * inter + gamma * intra)`` with ``inter = 1 - mean_i pearson(y_s[i, :], y_t[i, :])``
    (over classes) and ``intra = 1 - mean_k pearson(y_s[:, k], y_t[:, k])`` (over the batch),
    ``y = softmax(z/T)``."""
    ys = F.softmax(student_logits.float() / temperature, dim=1)
    yt = F.softmax(teacher_logits.float() / temperature, dim=1)
    inter = 1.0 - _pearson_rows(ys, yt).mean()
    intra = 1.0 - _pearson_rows(ys.t(), yt.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


@register
class DIST(DistillLoss):
    """Huang et al. NeurIPS 2022, KD from A Stronger Teacher (official ``DIST`` module).

    Relation matching instead of exact matching: inter-class = 1 − Pearson over the class axis of
    ``softmax(z/τ)`` per sample (batch-averaged); intra-class = the same over the batch axis per class
    (class-averaged); each × τ² as in the official code (Pearson eps 1e-8 added to the norm product).
    Defaults are the official module's (beta = gamma = 1, τ = 1, its ImageNet setting); CIFAR-style ports
    commonly use beta = gamma = 2, τ = 4 — both inside the search ranges.
    """

    name = "dist"
    paper = "Huang, You, Wang, Qian & Xu, NeurIPS 2022, Knowledge Distillation from A Stronger Teacher"
    needs = frozenset({"logits"})
    hparams = {
        "beta": HParam(1.0, 0.25, 4.0, log=True, doc="weight of the inter-class relation"),
        "gamma": HParam(1.0, 0.25, 4.0, log=True, doc="weight of the intra-class relation"),
        "temperature": HParam(1.0, 1.0, 8.0, log=True, doc="softmax temperature τ"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return dist_loss(student.logits, teacher.logits, self.beta, self.gamma, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# logit_std — Sun et al. CVPR 2024
# ---------------------------------------------------------------------------------------------------------
def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-sample z-score over classes as the official code: ``(z - mean) / (eps + std)``, unbiased std."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (eps + z.std(dim=1, keepdim=True))


def logit_std_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KD (batch-mean KL × T²) between z-scored student and teacher logits."""
    return kd_loss(standardize(student_logits), standardize(teacher_logits), temperature)


@register
class LogitStd(DistillLoss):
    """Sun et al. CVPR 2024, Logit Standardization in KD (official ``normalize`` + ``kd_loss``).

    Both models' logits are z-scored per sample over the class axis, ``(z - mean) / (1e-7 + std)`` (torch's
    unbiased std, as the official code), before dividing by the base temperature; the rest is KD,
    batch-mean and × T² (the official code multiplies by T²). Invariant to per-sample shifts and positive
    scalings of either model's logits. Defaults follow the official KD+LS recipe: ``--base-temp 2`` and
    ``--kd-weight 9`` — set the *term weight* to ≈9 in the recipe (it is not a loss hyper-parameter).
    """

    name = "logit_std"
    paper = "Sun, Ren, Li, Wang & Cao, CVPR 2024, Logit Standardization in Knowledge Distillation"
    needs = frozenset({"logits"})
    hparams = {"temperature": HParam(2.0, 1.0, 8.0, log=True, doc="base temperature on z-scored logits")}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return logit_std_loss(student.logits, teacher.logits, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# norm_kd — Chi et al. 2023
# ---------------------------------------------------------------------------------------------------------
def norm_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, eps: float = 1e-7
) -> Tensor:
    """``mean_i KL_i(softmax(t_i / T_t,i) || softmax(s_i / T_s,i)) * T_t,i²`` with per-sample temperatures
    ``T_x,i = (std(x_i) + eps) * temperature`` (unbiased std over classes, each model its own)."""
    s, t = student_logits.float(), teacher_logits.float()
    ts = (s.std(dim=1, keepdim=True) + eps) * temperature
    tt = (t.std(dim=1, keepdim=True) + eps) * temperature
    kl = _kl_rows(F.log_softmax(s / ts, dim=1), F.log_softmax(t / tt, dim=1))
    return (kl * tt.squeeze(1) ** 2).mean()


@register
class NormKD(DistillLoss):
    """Chi et al. 2023, NormKD: Normalized Logits for KD (official ``kd_loss_normal``).

    Per-sample temperature = std of the sample's logits × ``temperature`` (the paper's T_norm); the official
    code divides the teacher's logits by the teacher's std-based temperature and the student's by the
    student's own, and scales each sample's KL by the *teacher's* per-sample temperature squared; batch
    mean. ``eps = 1e-7`` is added to the std (the official code has none) so constant logits stay finite.
    Default T_norm = 2.0 (official config ``NormKD.TEMPERATURE_NORM``); ``temperature`` is the uniform name
    of that scale factor.
    """

    name = "norm_kd"
    paper = "Chi et al. 2023, NormKD: Normalized Logits for Knowledge Distillation (arXiv:2308.00520)"
    needs = frozenset({"logits"})
    hparams = {
        "temperature": HParam(2.0, 0.5, 8.0, log=True, doc="T_norm: per-sample T = std(logits) * T_norm"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return norm_kd_loss(student.logits, teacher.logits, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# dtkd — Wei & Bai 2024
# ---------------------------------------------------------------------------------------------------------
_SHARPNESS_FLOOR = 1e-3  # keeps the derived temperatures positive and finite when a max logit is <= 0


def dtkd_temperatures(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, sharpness: str = "max"
) -> tuple[Tensor, Tensor]:
    """Per-sample (T_student, T_teacher), each (N, 1): ``T_x = 2 x / (x_s + x_t) * temperature`` with ``x``
    the sharpness (max logit as the official code, or logsumexp as the paper defines it), floored at 1e-3.
    T_s + T_t = 2 * temperature, i.e. ±δ around the base temperature."""
    s, t = student_logits.float(), teacher_logits.float()
    if sharpness == "max":
        xs, xt = s.amax(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)
    elif sharpness == "logsumexp":
        xs, xt = s.logsumexp(dim=1, keepdim=True), t.logsumexp(dim=1, keepdim=True)
    else:
        raise ValueError(f"sharpness must be 'max' or 'logsumexp', got {sharpness!r}")
    xs, xt = xs.clamp_min(_SHARPNESS_FLOOR), xt.clamp_min(_SHARPNESS_FLOOR)
    return 2 * xs / (xs + xt) * temperature, 2 * xt / (xs + xt) * temperature


def dtkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    sharpness: str = "max",
) -> Tensor:
    """``alpha * L_DTKD + beta * L_KD``: ``L_DTKD = mean_i KL_i(t/T_t,i || s/T_s,i) * T_t,i * T_s,i`` and
    ``L_KD`` the vanilla KD at the base temperature (batch-mean × T²); without the warm-up factor."""
    s, t = student_logits.float(), teacher_logits.float()
    ts, tt = dtkd_temperatures(s, t, temperature, sharpness)
    kl = _kl_rows(F.log_softmax(s / ts, dim=1), F.log_softmax(t / tt, dim=1))
    l_dtkd = (kl * (tt * ts).squeeze(1)).mean()
    return alpha * l_dtkd + beta * kd_loss(s, t, temperature)


@register
class DTKD(DistillLoss):
    """Wei & Bai 2024, Dynamic Temperature KD (official mdistiller-based ``DTKD.py``).

    Per-sample temperatures from the "sharpness" of each model's logits: the paper defines sharpness as
    logsumexp and the official code uses its max-logit approximation, which is the default here
    (``sharpness: max``; ``logsumexp`` selectable). ``T_s = 2 x_s / (x_s + x_t) τ``,
    ``T_t = 2 x_t / (x_s + x_t) τ`` (gradients flow through the student's max, as in the official code;
    sharpness floored at 1e-3 so a non-positive max cannot give a negative or infinite temperature).
    Loss ``min(epoch/warmup, 1) × (alpha L_DTKD + beta L_KD)`` with the per-sample KL scaled by
    ``T_t,i T_s,i``, batch mean. The official code counts epochs from 1: the ramp is
    ``min((self.epoch + 1)/warmup, 1)``. Defaults from the official config: alpha 3 (DTKD), beta 1 (vanilla
    KD), τ 4, warm-up 20. Its CE weight belongs to the recipe.
    """

    name = "dtkd"
    paper = "Wei & Bai 2024, Dynamic Temperature Knowledge Distillation (arXiv:2404.12711)"
    needs = frozenset({"logits"})
    hparams = {
        "alpha": HParam(3.0, 0.5, 8.0, log=True, doc="weight of the dynamic-temperature KL"),
        "beta": HParam(1.0, 0.0, 4.0, doc="weight of the vanilla KD at the base temperature"),
        "temperature": HParam(4.0, 1.0, 10.0, log=True, doc="base (reference) temperature τ"),
        "warmup": HParam(20, 0, 40, kind="int", doc="epochs of the linear weight ramp (0: none)"),
        "sharpness": HParam("max", kind="categorical", choices=("max", "logsumexp"),
                            doc="sharpness: max logit (official code) or logsumexp (paper)"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        w = warmup_weight(self.epoch, self.warmup)
        return w * dtkd_loss(
            student.logits, teacher.logits, self.alpha, self.beta, self.temperature, self.sharpness
        )


# ---------------------------------------------------------------------------------------------------------
# ctkd — Li et al. AAAI 2023
# ---------------------------------------------------------------------------------------------------------
class _GradReverse(Function):
    """Identity forward; multiplies the incoming gradient by ``-lambda`` backward (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:  # type: ignore[override]
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: Tensor, lambda_: float) -> Tensor:
    """Gradient-reversal layer: ``x`` forward, ``-lambda_ * grad`` backward."""
    return _GradReverse.apply(x, lambda_)


def ctkd_lambda(epoch: int, lambda_min: float, lambda_max: float, curriculum_epochs: int) -> float:
    """The official cosine curriculum of the reversal strength with its 1-based epoch ``i = epoch + 1``:
    ``lambda_min + (lambda_max - lambda_min) * (1 - cos(pi * min(i, E) / E)) / 2``."""
    if curriculum_epochs <= 0:
        return float(lambda_max)
    i = min(max(epoch + 1, 0), curriculum_epochs)
    return lambda_min + (lambda_max - lambda_min) * (1.0 - math.cos(math.pi * i / curriculum_epochs)) / 2.0


def kd_loss_per_sample_t(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor) -> Tensor:
    """KD with a tensor temperature — a scalar or one per sample, shape (N, 1): ``mean_i KL_i · T_i²``."""
    s, t = student_logits.float(), teacher_logits.float()
    temp = temperature.float()
    if temp.dim() < 2:
        temp = temp.reshape(-1, 1) if temp.numel() > 1 else temp.reshape(1, 1)
    kl = _kl_rows(F.log_softmax(s / temp, dim=1), F.log_softmax(t / temp, dim=1))
    return (kl * temp.squeeze(1) ** 2).mean()


@register
class CTKD(DistillLoss):
    """Li et al. AAAI 2023, Curriculum Temperature for KD (official ``CTKD`` repo).

    A learnable temperature trained adversarially: it *maximises* the KD loss through a gradient-reversal
    layer (backward multiplies by ``-λ``) while the student minimises it. ``T = min_temperature +
    temperature_range * sigmoid(p)`` (the official ``t_start + t_end * sigmoid``, 1 + 20σ), with the GRL on
    the raw ``p``. ``mode: global`` — ``p`` is one ``nn.Parameter`` initialised to 1 as in the official
    ``Global_T``; ``mode: instance`` — ``p_i`` is predicted per sample by a 2-layer MLP (hidden 128, ReLU) on
    the concatenated (teacher, student) logits, detached so that the temperature module does not push
    gradients into the student (the official repo releases only the global module; this follows the
    paper's description). λ follows the official cosine curriculum from ``lambda_min`` to ``lambda_max``
    over ``curriculum_epochs`` (official ``decay_max 0 → decay_min -1`` over 10 loops, here with the sign
    folded into the GRL), read from ``self.epoch`` with the official 1-based count (:func:`ctkd_lambda`).
    The loss is KD (per-sample KL × T², batch mean).

    The temperature parameters live on this module: the trainer optimises every parameter of the loss
    modules and they are saved in the distiller's ``state_dict``. The instance MLP is built in ``__init__``
    from the student's Shapes, else in ``setup(num_classes=...)``; only when neither is given is it built
    lazily at the first forward (then it is not in an optimiser created earlier).
    """

    name = "ctkd"
    paper = "Li et al., AAAI 2023, Curriculum Temperature for Knowledge Distillation (arXiv:2211.16231)"
    needs = frozenset({"logits"})
    hparams = {
        "mode": HParam("global", kind="categorical", choices=("global", "instance"),
                       doc="one learnable temperature, or one per sample from an MLP"),
        "min_temperature": HParam(1.0, 0.5, 4.0, log=True, doc="T = min_temperature + range * sigmoid(p)"),
        "temperature_range": HParam(20.0, 5.0, 40.0, log=True, doc="width of the learnable T's range"),
        "lambda_min": HParam(0.0, 0.0, 0.5, doc="reversal strength at the start of the curriculum"),
        "lambda_max": HParam(1.0, 0.1, 2.0, log=True, doc="reversal strength at the end of the curriculum"),
        "curriculum_epochs": HParam(10, 1, 40, kind="int", doc="epochs of the cosine λ curriculum"),
    }
    hidden = 128

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.global_t = nn.Parameter(torch.ones(1)) if self.mode == "global" else None
        self.mlp: nn.Module | None = None
        if self.mode == "instance" and self.student_shapes is not None:
            self._build_mlp(self.student_shapes.num_classes)

    def _build_mlp(self, num_classes: int) -> None:
        h = self.hidden
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, h), nn.ReLU(), nn.Linear(h, 1))

    def setup(self, **context: Any) -> None:
        if self.mode == "instance" and self.mlp is None and context.get("num_classes"):
            self._build_mlp(int(context["num_classes"]))

    @property
    def lambda_(self) -> float:
        """The current reversal strength λ."""
        return ctkd_lambda(self.epoch, self.lambda_min, self.lambda_max, self.curriculum_epochs)

    def current_temperature(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """The current temperature: shape (1, 1) (global) or (N, 1) (instance), with the GRL in its graph."""
        if self.mode == "global":
            raw = self.global_t.reshape(1, 1)
        else:
            if self.mlp is None:
                self._build_mlp(student_logits.shape[1])
                self.mlp.to(student_logits.device)
            inp = torch.cat([teacher_logits.float(), student_logits.float()], dim=1).detach()
            raw = self.mlp(inp).float()
        raw = grad_reverse(raw, self.lambda_)
        return self.min_temperature + self.temperature_range * torch.sigmoid(raw)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        temp = self.current_temperature(student.logits, teacher.logits)
        return kd_loss_per_sample_t(student.logits, teacher.logits, temp)


# ---------------------------------------------------------------------------------------------------------
# mlkd — Jin et al. CVPR 2023
# ---------------------------------------------------------------------------------------------------------
_MLKD_EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # the official code adds these to cfg.KD.TEMPERATURE (4)


def _mlkd_level_terms(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(instance KD, class-level, batch-level) at one temperature, each reduced as the official code:
    KD batch-mean × T²; class: ``||G_t - G_s||_F² / K`` with ``G = pᵀp`` (K × K); batch:
    ``||G_t - G_s||_F² / N`` with ``G = p pᵀ`` (N × N); ``p = softmax(z/T)``. Gram matrices are computed in
    float32 (autocast off)."""
    s, t = student_logits.float(), teacher_logits.float()
    n, k = s.shape
    kd = kd_loss(s, t, temperature)
    ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    with _fp32(s):
        cc = ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / k
        bc = ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / n
    return kd, cc, bc


def mlkd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Single-view MLKD as the official ``MLKD.forward_train`` computes it when the weak and strong views are
    the same batch: ``Σ_T (1 + f_n) KD_T + f_k CC_T + f_n BC_T`` over T ∈ (temperature, 3, 5, 2, 6), where
    ``f_n`` = fraction of samples whose teacher max-probability (T=1) is <= its median (50th percentile,
    linear interpolation as ``np.percentile``) and ``f_k`` = the same for the per-class summed teacher
    probabilities."""
    s, t = student_logits.float(), teacher_logits.float()
    pt = F.softmax(t, dim=1)
    conf = pt.amax(dim=1)
    f_n = (conf <= torch.quantile(conf, 0.5)).float().mean()
    class_conf = pt.sum(dim=0)
    f_k = (class_conf <= torch.quantile(class_conf, 0.5)).float().mean()
    total = s.new_zeros(())
    for temp in (float(temperature), *_MLKD_EXTRA_TEMPERATURES):
        kd, cc, bc = _mlkd_level_terms(s, t, temp)
        total = total + (1.0 + f_n) * kd + f_k * cc + f_n * bc
    return total


@register
class MLKD(DistillLoss):
    """Jin, Wang & Lin, CVPR 2023, Multi-level Logit Distillation (official ``MLKD.py``/``KD_ours.py``).

    Instance-level KD (batch-mean KL × T²) + class-level alignment (K × K Gram ``pᵀp`` of the softmax
    outputs, squared Frobenius difference / K) + batch-level alignment (N × N Gram ``p pᵀ``, / N), at each of
    the official temperatures (``temperature``, 3, 5, 2, 6) — **summed** over temperatures as the official
    code does (not averaged; the term weight absorbs the factor 5).

    Confidence masking, as the official code *computes* it: the masks keep samples (classes) whose teacher
    confidence is <= the batch median (50th percentile) — but the official ``kd_loss``/``cc_loss``/``bc_loss``
    are already reduced to scalars when multiplied by the mask (``reduce=False`` is commented out), so each
    mask only scales its term by the fraction it keeps (f_n or f_k); that is reproduced exactly.

    NOT applied: the paper's strong/weak augmentation pairs (a loss sees one view). With both views equal,
    the official sum becomes ``Σ_T (1 + f_n) KD_T + f_k CC_T + f_n BC_T`` (weak masked KD + strong
    unmasked KD; the official loss dict keeps only the weak class/batch terms), which is computed here.
    """

    name = "mlkd"
    paper = "Jin, Wang & Lin, CVPR 2023, Multi-Level Logit Distillation"
    needs = frozenset({"logits"})
    hparams = {
        "temperature": HParam(4.0, 1.0, 8.0, log=True,
                              doc="the configurable temperature; 3, 5, 2 and 6 are always added (official)"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return mlkd_loss(student.logits, teacher.logits, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# tf_kd — Yuan et al. CVPR 2020
# ---------------------------------------------------------------------------------------------------------
def virtual_teacher(target: Tensor, num_classes: int, correct_prob: float) -> Tensor:
    """The hand-designed distribution p^d: ``correct_prob`` on the target class,
    ``(1 - correct_prob)/(K - 1)`` on each other class; rows sum to 1. Shape (N, K), float32."""
    n = target.shape[0]
    other = (1.0 - correct_prob) / max(1, num_classes - 1)
    p = torch.full((n, num_classes), other, device=target.device, dtype=torch.float32)
    return p.scatter(1, target.reshape(-1, 1).long(), correct_prob)


def tf_kd_loss(
    student_logits: Tensor,
    target: Tensor,
    teacher_logits: Tensor | None,
    mode: str,
    temperature: float,
    correct_prob: float,
    multiplier: float,
) -> Tensor:
    """The official Tf-KD terms, reduced as ``nn.KLDivLoss()``'s default (mean over all N*K elements; written
    out explicitly because PyTorch announces that ``reduction='mean'`` will become batch-mean):

    - ``virtual``: ``KL(softmax(p^d / T) || softmax(s)) * multiplier`` — the official
      ``loss_kd_regularization`` softens the *probabilities* p^d with T and leaves the student at T = 1;
    - ``self``: ``KL(softmax(t/T) || softmax(s/T)) * T² * multiplier`` (``loss_kd_self``).
    """
    s = student_logits.float()
    if mode == "virtual":
        p = virtual_teacher(target, s.shape[1], correct_prob)
        log_t = F.log_softmax(p / temperature, dim=1)
        return _kl_rows(F.log_softmax(s, dim=1), log_t).sum() / s.numel() * multiplier
    if mode == "self":
        if teacher_logits is None:
            raise ValueError("tf_kd mode 'self' needs teacher logits (the pre-trained student)")
        ls = F.log_softmax(s / temperature, dim=1)
        lt = F.log_softmax(teacher_logits.float() / temperature, dim=1)
        return _kl_rows(ls, lt).sum() / s.numel() * temperature**2 * multiplier
    raise ValueError(f"tf_kd mode must be 'virtual' or 'self', got {mode!r}")


@register
class TfKD(DistillLoss):
    """Yuan, Tay, Li, Wang & Feng, CVPR 2020, Revisiting KD via Label Smoothing Regularization (Tf-KD),
    following the official ``my_loss_function.py``.

    ``mode: virtual`` (Tf-KD_reg): a teacher-free "virtual teacher" p^d — ``correct_prob`` on the label,
    the rest uniform — so the teacher's logits are ignored (only K is read from the student's logits). Where
    paper and code disagree we follow the code: the code uses ``correct_prob = 0.99`` (the paper says
    a = 0.9), softens p^d by ``softmax(p^d / T)`` and keeps the student at T = 1 (the paper tempers both
    distributions), reduces with ``nn.KLDivLoss()``'s default elementwise mean over N*K (not batch-mean)
    and multiplies by ``multiplier``. ``mode: self`` (Tf-KD_self): KD from the given teacher logits,
    ``KL(t/T || s/T) × T² × multiplier`` with the same mean-over-N*K reduction; the runner is expected to
    pass a *pre-trained copy of the student* as the teacher (the loss cannot tell). Defaults: T = 20 and
    multiplier 1 (official CIFAR-100 configs use T ∈ {10, 20, 40} and multiplier ∈ {1, 50, 100}; the
    official ``reg_alpha``/``alpha`` is the recipe's term weight).
    """

    name = "tf_kd"
    paper = (
        "Yuan, Tay, Li, Wang & Feng, CVPR 2020, Revisiting Knowledge Distillation via Label Smoothing "
        "Regularization (Tf-KD)"
    )
    needs = frozenset({"logits"})
    hparams = {
        "mode": HParam("virtual", kind="categorical", choices=("virtual", "self"),
                       doc="virtual teacher (teacher-free) or the given (self-trained) teacher"),
        "temperature": HParam(20.0, 1.0, 50.0, log=True, doc="temperature (virtual: on p^d only)"),
        "correct_prob": HParam(0.99, 0.5, 0.999, doc="virtual teacher's probability of the correct class"),
        "multiplier": HParam(1.0, 1.0, 100.0, log=True, doc="the official multiplier of the KL term"),
    }

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        t = teacher.logits if self.mode == "self" else None
        return tf_kd_loss(
            student.logits, target, t, self.mode, self.temperature, self.correct_prob, self.multiplier
        )


# ---------------------------------------------------------------------------------------------------------
# annealing_kd — Jafari et al. EACL 2021
# ---------------------------------------------------------------------------------------------------------
def annealing_factor(
    epoch: int, total_epochs: int | None, max_temperature: int, phase1_fraction: float
) -> float | None:
    """The annealed factor Φ = T / τ_max of phase 1, or ``None`` in phase 2.

    As the official code: T starts at 1 and grows by 1 every ``int(E1 / τ_max)`` epochs (E1 = phase-1 epochs
    = ``round(phase1_fraction * total_epochs)``, at least 1), capped at τ_max, so Φ goes 1/τ_max → 1 (the
    paper's ``Φ(T) = 1 - (T - 1)/τ_max`` with T decreasing from τ_max to 1). Unknown ``total_epochs``
    (no ``set_progress`` yet) counts as phase 1.
    """
    if total_epochs is not None:
        e1 = max(1, round(phase1_fraction * total_epochs))
        if epoch >= e1:
            return None
        step = max(1, e1 // max_temperature)
    else:
        step = 1
    temp = min(max_temperature, 1 + epoch // step)
    return temp / max_temperature


def annealing_kd_loss(student_logits: Tensor, teacher_logits: Tensor, factor: float | None) -> Tensor:
    """Phase 1: ``MSE(s, Φ · t)`` averaged over all N*K elements (``F.mse_loss``); phase 2 (``factor=None``):
    an exact zero that is still attached to the student's graph."""
    s = student_logits.float()
    if factor is None:
        return s.new_zeros(()) + s.sum() * 0.0  # + 0 turns the -0.0 of a negative sum into 0.0
    return F.mse_loss(s, teacher_logits.float() * factor)


@register
class AnnealingKD(DistillLoss):
    """Jafari, Rezagholizadeh, Sharma & Ghodsi, EACL 2021, Annealing Knowledge Distillation (official
    ``train.py``).

    Phase 1 (the first ``phase1_fraction`` of the epochs): MSE between the student's logits and the
    teacher's logits × Φ, Φ = T/τ_max growing stepwise from 1/τ_max to 1 (:func:`annealing_factor`; mean over
    N*K as ``F.mse_loss``). Phase 2: this term is exactly 0 — the paper's CE fine-tuning is carried by the
    recipe's CE term. Note the official phase 1 trains with the MSE *only* (no CE); reproducing that needs
    the CE weight switched off during phase 1, which is a scheme/trainer feature, not this loss's.
    ``phase1_fraction`` defaults to 2/3 (official 200 + 100 epochs); ``max_temperature`` to 10 (official).
    Reads ``self.epoch`` and the total epoch count recorded by :meth:`set_progress`.
    """

    name = "annealing_kd"
    paper = "Jafari, Rezagholizadeh, Sharma & Ghodsi, EACL 2021, Annealing Knowledge Distillation"
    needs = frozenset({"logits"})
    hparams = {
        "max_temperature": HParam(10, 2, 20, kind="int", doc="τ_max: Φ grows from 1/τ_max to 1 in steps"),
        "phase1_fraction": HParam(2.0 / 3.0, 0.3, 0.9, doc="fraction of the epochs spent in phase 1 (MSE)"),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_epochs: int | None = None

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        super().set_progress(epoch, total_epochs)
        self.total_epochs = int(total_epochs)

    @property
    def factor(self) -> float | None:
        """Φ at the current epoch, ``None`` in phase 2."""
        return annealing_factor(self.epoch, self.total_epochs, self.max_temperature, self.phase1_fraction)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return annealing_kd_loss(student.logits, teacher.logits, self.factor)
