"""FerKD: surgical label adaptation by the teacher's confidence (Shen, ICCV 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from .base import Scheme, register

__all__ = ["FerKD", "partition_by_confidence", "softened_hard_labels"]


def partition_by_confidence(conf: Tensor, drop_easy: float, drop_hard: float,
                            calibrate: float) -> tuple[Tensor, Tensor]:
    """Split a batch by the teacher's confidence in the true class: ``(keep, calibrated)`` boolean masks.

    Ranked by confidence (ascending, stable), the ``floor(n·drop_hard)`` least confident and the
    ``floor(n·drop_easy)`` most confident samples are dropped; of the kept ones, the ``floor(n·calibrate)``
    least confident are calibrated. A batch that would keep nothing is kept whole and not calibrated.
    """
    n = conf.numel()
    n_hard, n_easy, n_cal = (math.floor(n * f) for f in (drop_hard, drop_easy, calibrate))
    keep = torch.ones(n, dtype=torch.bool, device=conf.device)
    cal = torch.zeros(n, dtype=torch.bool, device=conf.device)
    if n - n_hard - n_easy < 1:
        return keep, cal
    order = torch.sort(conf, stable=True).indices
    keep[order[:n_hard]] = False
    keep[order[n - n_easy:]] = False
    cal[order[n_hard:min(n_hard + n_cal, n - n_easy)]] = True
    return keep, cal


def softened_hard_labels(y: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """``(1 − ε) one_hot(y) + ε / K``: the ground truth, label-smoothed."""
    return (1.0 - smoothing) * F.one_hot(y, num_classes).float() + smoothing / num_classes


@dataclass
class _Adapted:
    idx: Tensor
    outputs: Outputs


class _SurgicalLoader:
    """The loader's batches without the dropped samples (``len()`` unchanged: one step per batch)."""

    def __init__(self, loader, scheme: FerKD) -> None:
        self.loader, self.scheme = loader, scheme

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for x, y, idx in self.loader:
            yield self.scheme.adapt(x, y, idx)


@register
class FerKD(Scheme):
    """FerKD: Surgical Label Adaptation for Efficient Distillation (Shen, ICCV 2023).

    Partial soft-hard label adaptation by the teacher's confidence ``p_t(y | x)`` (softmax at T = 1) in each
    training sample's true class, the samples of each batch ranked by it: the most confident
    ``drop_easy`` fraction (easy positives, little to learn) and the least confident ``drop_hard`` fraction
    (hard negatives, whose soft labels are unreliable) are dropped from the batch — every loss skips them;
    the next-least-confident ``calibrate`` fraction keep the ground truth as a softened hard label
    ``(1 − ε) one_hot(y) + ε/K`` (``ε = smoothing``) instead of the teacher's soft label; the rest keep the
    teacher's. The adapted label ``q`` reaches the recipe's terms as teacher logits ``T · log q``, T the
    temperature of the recipe's first term that has one (1 when none), so KD at T trains on exactly ``q``
    (probabilities are floored at 1e-8, so ``smoothing: 0`` gives finite logits).

    FerKD ranks the many stored random-resized crops of an image (FKD's region-level soft labels); without
    stored crops the samples of a batch (each its own view of an image) are ranked. The official repository
    releases only the soft labels and trained weights, so the fractions and ε are ours, tuned for nothing.
    SelfMix (FerKD's stabilised mixing augmentation) is not part of this scheme.
    """

    name = "ferkd"
    paper = "Shen, ICCV 2023, FerKD: Surgical Label Adaptation for Efficient Distillation"
    hparams = {
        "drop_easy": HParam(0.1, 0.0, 0.3, doc="fraction of each batch dropped as too easy (most confident)"),
        "drop_hard": HParam(0.1, 0.0, 0.3, doc="fraction of each batch dropped as hard negatives"),
        "calibrate": HParam(0.2, 0.0, 0.5, doc="fraction of each batch given softened hard labels"),
        "smoothing": HParam(0.1, 0.0, 0.5, doc="label smoothing ε of the softened hard labels", valid="[0, 1)"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if any(not 0.0 <= p[k] <= 1.0 for k in ("drop_easy", "drop_hard", "calibrate")) or not 0 <= p["smoothing"] < 1:
            raise ConfigError(f"scheme 'ferkd': fractions must be in [0, 1] and 0 <= smoothing < 1; got {p}")
        self._pending: _Adapted | None = None
        self.dropped = 0  # samples dropped so far
        self.calibrated = 0  # samples given softened hard labels so far

    def setup(self, *, distiller, data, device, teacher_source=None, **context) -> None:
        if distiller.teacher is None:
            raise ConfigError("scheme 'ferkd' adapts the teacher's soft labels: the recipe needs a distillation "
                              "term (e.g. kd)")
        self.distiller, self.source, self.device = distiller, teacher_source, device
        self.num_classes = data.num_classes
        temps = [t.loss.temperature for t in distiller.terms if isinstance(getattr(t.loss, "temperature", None),
                                                                           int | float)]
        self.temperature = float(temps[0]) if temps else 1.0

    def wrap_loader(self, loader):
        return _SurgicalLoader(loader, self)

    @torch.no_grad()
    def adapt(self, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Drop and calibrate one batch; the adapted teacher outputs wait for :meth:`teacher_outputs`."""
        x, y = x.to(self.device), y.to(self.device)
        if self.source is not None:
            out = self.source.batch(x, idx, needs_feats=self.distiller.needs_feats)
        else:
            out = self.distiller.teacher_outputs(x)
        conf = F.softmax(out.logits.float(), 1).gather(1, y.view(-1, 1)).squeeze(1)
        p = self.params
        keep, cal = partition_by_confidence(conf, p["drop_easy"], p["drop_hard"], p["calibrate"])
        kept = out.index(keep)
        logits = kept.logits.clone()
        cal_k = cal[keep]
        if cal_k.any():
            q = softened_hard_labels(y[keep][cal_k], self.num_classes, p["smoothing"])
            logits[cal_k] = (self.temperature * q.clamp_min(1e-8).log()).to(logits.dtype)
        kept.logits = logits
        ids = idx[keep.to(idx.device)]
        self._pending = _Adapted(ids, kept)
        self.dropped += int((~keep).sum())
        self.calibrated += int(cal_k.sum())
        return x[keep], y[keep], ids

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        pending, self._pending = self._pending, None
        if pending is None or not torch.equal(pending.idx.cpu(), idx.cpu()):
            raise RuntimeError("ferkd: the batch is not the one its labels were adapted for")
        return pending.outputs
