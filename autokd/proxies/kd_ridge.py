"""``kd_ridge``: can the untrained student's representation already express what the teacher says?

autokd's own distillation proxy. DisWOT asks whether the student's Gram *equals* the teacher's; this asks a
weaker, more KD-shaped question: how well does a kernel ridge regression on the student's initial
last-stage features predict the teacher's softened outputs (the KD target) on held-out samples of the
batch? A student whose random features already separate what the teacher separates (and has enough of
them) should be easier to distil into. The fit is scored by leave-one-out, in closed form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import PROXIES, Proxy, embedding_of, outputs_of, teacher_outputs

__all__ = ["KDRidge", "loo_ridge_r2"]


def loo_ridge_r2(features: Tensor, targets: Tensor, ridge: float = 0.1) -> float:
    """Leave-one-out R² of kernel ridge regression with the cosine kernel of ``features`` (N × D) onto the
    column-centred ``targets`` (N × K): with ``K = f̂ f̂ᵀ`` (rows of ``f`` L2-normalised) and
    ``H = K (K + λI)⁻¹``, the LOO residuals are ``(Y - HY)_i / (1 - H_ii)``; R² = 1 - ‖R‖² / ‖Y‖²."""
    f = F.normalize(features.detach().double().flatten(1), dim=1)
    yc = targets.detach().double()
    yc = yc - yc.mean(0, keepdim=True)
    k = f @ f.T
    n = k.shape[0]
    h = torch.linalg.solve(k + ridge * torch.eye(n, dtype=k.dtype, device=k.device), k).T  # K (K+λI)^-1
    resid = (yc - h @ yc) / (1 - torch.diagonal(h)).clamp_min(1e-12)[:, None]
    denom = float((yc**2).sum())
    return 1.0 - float((resid**2).sum()) / denom if denom > 0 else 0.0


@PROXIES.register("kd_ridge", needs_teacher=True, bn_mode="train", paper="autokd (this package)")
class KDRidge(Proxy):
    """Leave-one-out R² (:func:`loo_ridge_r2`) of a cosine-kernel ridge regression (``λ = 0.1``) from the
    student's flattened last-stage feature map to the teacher's temperature-4 softmax over the batch.

    Sign: higher R² = the KD target is more linearly reachable from the student's initial features =
    predicted better. BN: student train mode (batch statistics), teacher eval mode. Labels unused.
    """

    name = "kd_ridge"
    paper = "autokd"
    needs_teacher = True
    bn_mode = "train"
    temperature = 4.0
    ridge = 0.1

    def score(self, model, teacher, x, y) -> float:
        t = teacher_outputs(teacher, x)
        with torch.no_grad():
            s = outputs_of(model, x)
        feat = s.feats[-1] if s.feats else embedding_of(s)
        return loo_ridge_r2(feat, (t.logits.double() / self.temperature).softmax(1), self.ridge)
