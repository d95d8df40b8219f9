"""Activation-pattern proxies of Mellor et al.: NASWOT (ICML 2021) and its predecessor, the Jacobian
covariance score (arXiv:2006.04647v1, "jacob_cov" in Abdelfattah et al., ICLR 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .base import PROXIES, Proxy, outputs_of

__all__ = ["NASWOT", "JacobCov", "ReluCodes", "naswot_logdet"]

#: activations whose output is > 0 exactly where their input is (GELU: transformer MLPs), so ``out > 0`` is the
#: unit's binary code
_RELU_LIKE = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
              F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.gelu)


class ReluCodes(TorchFunctionMode):
    """Records the binary code ``out > 0`` of every ReLU-like call (GELU included) while active.

    A ``TorchFunctionMode`` sees every ``torch.nn.functional.relu`` / ``torch.relu`` / ``Tensor.relu``
    call — including the functional ReLUs that zoo models use in ``forward`` and the ``nn.ReLU`` modules
    (which call ``F.relu``) — without hooks or monkey-patching, and nothing is left behind on exit. The
    mode is popped while the intercepted function runs, so one ReLU is recorded once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.codes: list[Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELU_LIKE and isinstance(out, Tensor) and out.dim() >= 2:
            self.codes.append((out.detach() > 0).flatten(1))
        return out


def naswot_logdet(codes: list[Tensor]) -> float:
    """``log|det K|`` with ``K = sum over layers of (c cᵀ + (1-c)(1-c)ᵀ) = N_A - d_Hamming``.

    A singular ``K`` (two inputs with identical codes) is given a tiny ridge, ``1e-6·N_A``, so the score
    stays finite and still ranks such networks at the bottom.
    """
    c = torch.cat([k.double() for k in codes], 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    if sign <= 0 or not math.isfinite(float(logdet)):
        ridge = 1e-6 * c.shape[1] * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        logdet = torch.linalg.slogdet(k + ridge)[1]
    return float(logdet)


@PROXIES.register("naswot", needs_teacher=False, bn_mode="train",
                  paper="Mellor et al., Neural Architecture Search without Training, ICML 2021")
class NASWOT(Proxy):
    """NASWOT: ``log|det K_H|``, ``K_H[i, j] = N_A - d_H(c_i, c_j)`` over the binary ReLU codes of the batch.

    Sign: as published (higher = more distinguishable activation patterns = better). BN: train mode (batch
    statistics). Codes come from every ReLU-like call (:class:`ReluCodes`); a model without any falls back
    to the sign pattern of its ``Outputs.preacts`` (else ``feats``). Labels are not used.
    """

    name = "naswot"
    paper = "Mellor et al., ICML 2021"
    bn_mode = "train"

    def score(self, model: nn.Module, teacher, x: Tensor, y: Tensor) -> float:
        with torch.no_grad(), ReluCodes() as rec:
            out = outputs_of(model, x)
        codes = rec.codes or [(t > 0).flatten(1) for t in (out.preacts or out.feats)]
        if not codes:
            codes = [(out.logits > 0).flatten(1)]
        return naswot_logdet(codes)


@PROXIES.register("jacob_cov", needs_teacher=False, bn_mode="train",
                  paper="Mellor et al., arXiv:2006.04647v1 (2020); Abdelfattah et al., ICLR 2021")
class JacobCov(Proxy):
    """Jacobian covariance: ``J_n = ∂(Σ_k logits_nk)/∂x_n``; ``λ`` = eigenvalues of the correlation matrix of
    the rows of ``J``; score ``-Σ (log(λ + k) + 1/(λ + k))``, ``k = 1e-5``.

    Sign: as published (higher = less correlated input Jacobians = better). BN: train mode. Labels unused.
    """

    name = "jacob_cov"
    paper = "Mellor et al. 2020 (v1); Abdelfattah et al., ICLR 2021"
    bn_mode = "train"

    def score(self, model: nn.Module, teacher, x: Tensor, y: Tensor) -> float:
        x = x.detach().clone().requires_grad_(True)
        logits = outputs_of(model, x).logits
        (jac,) = torch.autograd.grad(logits.sum(), x)
        jac = jac.flatten(1).double()
        jac = jac - jac.mean(1, keepdim=True)
        norm = jac.norm(dim=1, keepdim=True)
        corr = (jac @ jac.T) / (norm @ norm.T).clamp_min(1e-30)
        corr = torch.nan_to_num(corr)
        lam = torch.linalg.eigvalsh(corr).clamp_min(0)
        k = 1e-5
        return float(-(torch.log(lam + k) + 1.0 / (lam + k)).sum())
