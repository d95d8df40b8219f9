"""Online schemes whose extra teachers are trained with the student: DML's peers, DLB's last mini-batch,
the Mean Teacher's exponential moving average."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ._helpers import fetch_batch, soft_kl
from .base import Scheme, register

__all__ = ["DML", "DLB", "MeanTeacher", "sigmoid_rampup"]


@register
class DML(Scheme):
    """Deep Mutual Learning (Zhang et al., CVPR 2018).

    ``peers`` extra models of the student's architecture (own random initialisations) are trained together
    with the student, no teacher needed for them. With the cohort {student, peer_1..peer_P}, each member k
    minimises its loss plus ``weight`` × the mean over the other members l of KL(p_l ‖ p_k), the targets p_l
    detached (the paper's averaged-KL form; for one peer it is exactly KL(p_peer ‖ p_student)). Probabilities
    use ``temperature`` (paper: 1) and KLs are batch-mean × T². The student keeps its recipe's terms (teacher
    KD etc.) and adds the logged term ``dml``; the peers' CE + mutual terms are logged as ``dml_peers`` and
    only train the peers. Peers are updated by the same optimiser as the student (``extra_parameters``), all
    members in one simultaneous step (the paper alternates the updates).
    """

    name = "dml"
    paper = "Zhang et al., CVPR 2018, Deep Mutual Learning"
    hparams = {
        "peers": HParam(1, 1, 4, kind="int", doc="number of peer models trained with the student"),
        "weight": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the mutual KL terms"),
        "temperature": HParam(1.0, 1.0, 8.0, doc="softmax temperature of the mutual terms"),
    }
    helper_loss_keys = frozenset({"dml_peers"})

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params["peers"] < 1 or self.params["temperature"] <= 0 or self.params["weight"] < 0:
            raise ConfigError(f"scheme 'dml': needs peers >= 1, temperature > 0, weight >= 0; got {self.params}")
        self.peers = nn.ModuleList()

    def setup(self, *, recipe, data, device, **context) -> None:
        self.peers = nn.ModuleList(
            [models.from_spec(recipe.student, data.num_classes, data.input_shape[0])
             for _ in range(self.params["peers"])]
        ).to(device).train()

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.peers.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.peers.train()

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        t, w = self.params["temperature"], self.params["weight"]
        cohort = [step.student.logits] + [peer(x) for peer in self.peers]
        mutual = []
        for k, logits in enumerate(cohort):
            others = [o.detach() for j, o in enumerate(cohort) if j != k]
            mutual.append(sum(soft_kl(logits, o, t) for o in others) / len(others))
        peers = sum(F.cross_entropy(cohort[k].float(), y) + w * mutual[k] for k in range(1, len(cohort)))
        return {"dml": w * mutual[0], "dml_peers": peers}


class _LastBatchLoader:
    """Each batch = the previous batch's second half + a new half (the loader's batches split in two);
    the overlap carries across epochs. ``len()`` = 2 × the loader's batches (a 1-sample batch is one step)."""

    def __init__(self, loader, scheme: DLB, dataset=None) -> None:
        self.loader, self.scheme, self.dataset = loader, scheme, dataset
        self.prev: tuple[Tensor, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return 2 * len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y, idx in self.loader:
            h = (len(idx) + 1) // 2
            for sl in (slice(0, h), slice(h, len(idx))):
                new = (x[sl], y[sl], idx[sl])
                if len(new[2]) == 0:
                    continue
                if self.prev is None:
                    batch, n_old = new, 0
                else:
                    px, py, pi = self.prev
                    if self.dataset is not None:  # a fresh draw of the random train transform, as re-loading does
                        px = fetch_batch(self.dataset, pi).to(device=new[0].device, dtype=new[0].dtype)
                    batch = (torch.cat([px, new[0]]), torch.cat([py, new[1].to(py.device)]),
                             torch.cat([pi, new[2].to(pi.device)]))
                    n_old = len(pi)
                self.prev = new
                self.scheme._overlap = n_old
                yield batch


@register
class DLB(Scheme):
    """Self-Distillation from the Last Mini-Batch (Shen et al., CVPR 2022).

    Each training batch is the second half of the previous batch followed by new samples (the loader's
    batches are split in two, so an epoch has twice the steps and every sample is seen twice). The
    student's detached predictions on the new half at step t−1 are the soft targets of the same samples at
    step t: ``alpha × KL(softmax(z_{t−1}/T) ‖ softmax(z_t/T)) × T²`` (batch-mean), logged as ``dlb``, added to
    the recipe's loss; as in the official code T = 3 and alpha = 1. With a random train transform the
    overlapping samples are re-loaded (a new augmentation, as the official sampler does).
    """

    name = "dlb"
    paper = "Shen et al., CVPR 2022, Self-Distillation from the Last Mini-Batch for Consistency Regularization"
    hparams = {
        "temperature": HParam(3.0, 1.0, 8.0),
        "alpha": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the last-mini-batch KL"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params["temperature"] <= 0 or self.params["alpha"] < 0:
            raise ConfigError(f"scheme 'dlb': needs temperature > 0 and alpha >= 0; got {self.params}")
        self._dataset = None
        self._overlap = 0
        self._prev_logits: Tensor | None = None
        self._prev_idx: Tensor | None = None
        self.soft_targets: Tensor | None = None  # the targets used at the last step (for inspection)

    def setup(self, *, data=None, **context) -> None:
        self._dataset = None if data is None or data.deterministic_train else data.train

    def wrap_loader(self, loader):
        return _LastBatchLoader(loader, self, self._dataset)

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        logits = step.student.logits
        n = self._overlap
        self.soft_targets = None
        value = torch.zeros((), device=logits.device)
        if n and self._prev_logits is not None:
            if not torch.equal(idx[:n].cpu(), self._prev_idx.cpu()):
                raise RuntimeError("dlb: the batch does not start with the previous batch's second half")
            self.soft_targets = self._prev_logits
            value = soft_kl(logits[:n], self._prev_logits, self.params["temperature"])
        self._prev_logits, self._prev_idx = logits[n:].detach(), idx[n:].detach()
        return {"dlb": self.params["alpha"] * value}


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(−5 (1 − t)²)``, t = current / length clipped to [0, 1] (Laine & Aila 2017; Mean Teacher's code)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


@register
class MeanTeacher(Scheme):
    """Mean Teacher (Tarvainen & Valpola, NeurIPS 2017).

    A copy of the student whose weights are an exponential moving average of the student's,
    ``θ' ← α θ' + (1 − α) θ`` after every optimiser step with ``α = min(1 − 1/(step + 1), ema_decay)``
    (the official code's ramp; step counts from 1), provides a consistency target as in the paper: the
    term ``consistency × ramp × MSE(softmax(student), softmax(ema))`` (mean over batch and classes, the
    official ``softmax_mse_loss / batch``), ``ramp`` the sigmoid ramp-up over ``rampup_fraction`` of the
    epochs; logged as ``mean_teacher`` and added to the recipe's loss (the recipe's terms keep the real
    teacher). The EMA model runs in train mode (batch statistics, as the official code) under ``no_grad``;
    with a random train transform it sees a fresh augmentation of the batch. It starts as a copy of the
    student (the official code starts it from its own initialisation). The exported model is the student.
    """

    name = "mean_teacher"
    paper = "Tarvainen & Valpola, NeurIPS 2017, Mean teachers are better role models"
    hparams = {
        "ema_decay": HParam(0.999, 0.99, 0.9999, log=True),
        "consistency": HParam(100.0, 1.0, 1000.0, log=True, doc="max weight of the consistency MSE"),
        "rampup_fraction": HParam(0.25, 0.0, 0.5, doc="fraction of the epochs of the sigmoid ramp-up"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if not 0.0 <= p["ema_decay"] < 1.0 or p["consistency"] < 0 or not 0.0 <= p["rampup_fraction"] <= 1.0:
            raise ConfigError("scheme 'mean_teacher': needs 0 <= ema_decay < 1, consistency >= 0, "
                              f"0 <= rampup_fraction <= 1; got {p}")
        self.ema: nn.Module | None = None
        self.student: nn.Module | None = None
        self.global_step = 0
        self._pos = (0, 1, 1, 0)  # epoch, total epochs, steps per epoch, step in epoch
        self._dataset = None

    def setup(self, *, distiller, data=None, **context) -> None:
        self.student = distiller.student
        self.ema = copy.deepcopy(distiller.student).requires_grad_(False)
        self.global_step = 0
        self._dataset = None if data is None or data.deterministic_train else data.train

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self._pos = (epoch, total_epochs, max(1, steps_per_epoch), 0)

    def ramp(self) -> float:
        epoch, total, spe, step = self._pos
        return sigmoid_rampup(epoch + step / spe, self.params["rampup_fraction"] * total)

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        x_t = x if self._dataset is None else fetch_batch(self._dataset, idx).to(device=x.device, dtype=x.dtype)
        self.ema.train()
        with torch.no_grad():
            ema_logits = self.ema(x_t)
        s = step.student.logits
        mse = F.mse_loss(F.softmax(s.float(), dim=1), F.softmax(ema_logits.float(), dim=1))
        return {"mean_teacher": (self.params["consistency"] * self.ramp()) * mse}

    @torch.no_grad()
    def after_step(self) -> None:
        self.global_step += 1
        alpha = min(1.0 - 1.0 / (self.global_step + 1), self.params["ema_decay"])
        for e, p in zip(self.ema.parameters(), self.student.parameters(), strict=True):
            e.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
        epoch, total, spe, step = self._pos
        self._pos = (epoch, total, spe, step + 1)
