"""KCD: train on a condensed, re-estimated subset of the teacher's knowledge (Li et al., ECCV 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.loading import epoch_order
from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from ._helpers import fetch_batch
from .base import Scheme, register

__all__ = ["KCD", "knowledge_scores", "condense", "summary_weights"]


def knowledge_scores(value_sum: Tensor, seen: Tensor, interval: int) -> Tensor:
    """Online global value estimation (the official ``update_dataset_mul_entropy_V3``): each sample's mean
    value over the epochs it was trained in, times ``(seen / interval) ** 0.03`` (a sample seen in fewer
    epochs, i.e. pruned earlier, is slightly discounted). Never-seen samples score 0."""
    seen_f = seen.double()
    mean = torch.where(seen > 0, value_sum.double() / seen_f.clamp_min(1.0), torch.zeros_like(seen_f))
    return mean * (seen_f / float(interval)) ** 0.03


def summary_weights(n: int, low: float) -> Tensor:
    """Weights of the retained samples in the value-adaptive knowledge summary: ``low + (1 − low)(n − k)/n``
    for the k-th pair (k = 0 .. n−1, the most valuable pair first), as the official ``MIXUPNet``."""
    k = torch.arange(n, dtype=torch.float64)
    return low + (1.0 - low) * (n - k) / max(n, 1)


def condense(scores: Tensor, kept: int, keep: float, rounds: int) -> tuple[Tensor, Tensor]:
    """One condensation (M-step) over all ``N`` samples ranked by ``scores`` (descending, stable):
    keep the top ``max(int(keep·N), kept − int(N·(1 − keep)/rounds))``; return ``(kept_idx, lost_idx)``,
    ``lost_idx`` the ranks between the new and the previous kept size (the official code; they may
    include samples pruned in an earlier round)."""
    n = scores.numel()
    remain = max(int(keep * n), kept - int(n * (1.0 - keep) / rounds))
    order = torch.from_numpy(np.argsort(-scores.numpy(), kind="stable").copy())
    return order[:remain], order[remain:max(kept, remain)]


class _CondensedLoader:
    """Batches of the condensed set (KCD's current knowledge set), shuffled per epoch by the recipe's seed;
    the full loader's own batches while nothing is condensed yet (identical to standard training)."""

    def __init__(self, loader, scheme: KCD) -> None:
        self.loader, self.scheme = loader, scheme

    def __len__(self) -> int:
        s = self.scheme
        if s.is_full():
            return len(self.loader)
        return math.ceil(len(s.kept) / s.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        s = self.scheme
        if s.is_full():
            yield from self.loader
            return
        order = s.kept[epoch_order(len(s.kept), True, s.seed, s.epoch)]
        for b in range(len(self)):
            idx = order[b * s.batch_size:(b + 1) * s.batch_size]
            yield s.inputs(idx), s.targets[idx], idx


@register
class KCD(Scheme):
    """Knowledge Condensation Distillation (Li et al., ECCV 2022).

    An EM loop over the teacher's knowledge set {(x_i, p_t(x_i))}. E-step (online global value estimation):
    every training step records each sample's knowledge value; a sample's score is its mean value over the
    epochs it was trained in × ``(epochs seen / interval) ** 0.03``. M-step, every ``interval`` =
    ``max(1, round(epochs / rounds))`` epochs: all samples are re-ranked and the top
    ``max(int(keep·N), kept − int(N(1 − keep)/rounds))`` form the next epoch's training set (a pruned sample
    can come back); the ``L`` samples that drop out are summarised into the ``L`` least valuable retained
    ones (value-adaptive knowledge summary): retained input ← ``w_k`` × itself + ``(1 − w_k)`` × the k-th
    dropped input, ``w_k = mix_low + (1 − mix_low)(L − k)/L`` (pairs ranked by value), labels kept. The
    teacher sees the summarised inputs: for in-memory data its outputs on them are computed once per round
    (the source serves the other samples); with a random train transform it runs online on batches holding one.
    The recipe's losses are unchanged; an epoch has ``ceil(kept / batch)`` steps (the learning-rate schedule
    follows epochs, so it still ends on the last step).

    Conventions of the official code (``super_train_student.py``, ``update_dataset_mul_entropy_V3``, defaults
    ``--purification 40 --threshold 0.7`` of 240 epochs = 6 rounds, ``--version v3``), which we follow:
    ``value: entropy`` is the entropy of the *student's* prediction (softmax at T = 1, recorded in the
    training forward, train mode): a sample the student is still unsure of carries valuable knowledge.
    ``value: kd`` scores a sample with the teacher's predictions instead, KL(p_t ‖ p_s) per sample at T = 1
    (the official ``strategys`` list names this ``KD`` alternative). Deviations: the summary mixes float
    inputs (the official code rounds the mixed images to uint8); with a random train transform each
    component of a summarised input is augmented on its own (the official code mixes before augmenting).
    """

    name = "kcd"
    paper = "Li et al., ECCV 2022, Knowledge Condensation Distillation"
    hparams = {
        "keep": HParam(0.7, 0.3, 1.0, doc="fraction of the training set kept after the last condensation",
                       valid="(0, 1]"),
        "rounds": HParam(6, 2, 10, kind="int", doc="condensation rounds over training (interval = epochs/rounds)"),
        "value": HParam("entropy", kind="categorical", choices=("entropy", "kd"),
                        doc="knowledge value: the student's prediction entropy (official) or KL(teacher‖student)"),
        "summary": HParam(True, kind="bool", doc="mix the dropped samples into the least valuable kept ones"),
        "mix_low": HParam(0.7, 0.5, 1.0, doc="smallest weight of a kept input in the summary mix"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if not 0.0 < p["keep"] <= 1.0 or p["rounds"] < 1 or not 0.0 <= p["mix_low"] <= 1.0:
            raise ConfigError(f"scheme 'kcd': needs 0 < keep <= 1, rounds >= 1, 0 <= mix_low <= 1; got {p}")
        self.kept = torch.zeros(0, dtype=torch.long)
        self.epoch = 0
        self.events: list[str] = []
        self._t_logits: Tensor | None = None

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, *, distiller, recipe, data, epochs, device, **context) -> None:
        if self.params["value"] == "kd" and distiller.teacher is None:
            raise ConfigError("scheme 'kcd': value: kd scores samples with the teacher's predictions, but the "
                              "recipe has no distillation term (no teacher); use value: entropy")
        self.distiller, self.device = distiller, device
        self.dataset = data.train
        self.n = len(data.train)
        self.targets = _targets(data.train)
        self.batch_size, self.seed = recipe.optim.batch_size, recipe.seed
        self.interval = max(1, round(epochs / self.params["rounds"]))
        self.kept = torch.arange(self.n)
        self.value_sum = torch.zeros(self.n, dtype=torch.float64)
        self.seen = torch.zeros(self.n, dtype=torch.long)
        # the summary: sample i's input is sum_j mix[i][j] * x_j (identity until a summary round)
        self.mix: dict[int, dict[int, float]] = {}
        self.mixed = torch.zeros(self.n, dtype=torch.bool)
        self._arrays = _array_inputs(data.train)  # transform-free inputs: the summary is materialised
        self._summarised: Tensor | None = None
        self._summary_out: Outputs | None = None  # the teacher's outputs on the summarised inputs
        self._summary_row = torch.full((self.n,), -1, dtype=torch.long)

    def is_full(self) -> bool:
        return len(self.kept) == self.n and not self.mix

    def wrap_loader(self, loader):
        return _CondensedLoader(loader, self)

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.epoch = epoch

    # -- inputs of the (summarised) knowledge set -------------------------------------------------------
    def inputs(self, idx: Tensor) -> Tensor:
        """The inputs of samples ``idx``: each a weighted sum of original inputs (itself when not summarised)."""
        if self._arrays is not None:
            x = self._summarised if self._summarised is not None else self._arrays
            return x[idx.cpu()].float()
        pos, src, w = [], [], []
        for p, i in enumerate(idx.tolist()):
            for j, wj in self.mix.get(i, {i: 1.0}).items():
                pos.append(p)
                src.append(j)
                w.append(wj)
        parts = fetch_batch(self.dataset, torch.tensor(src, dtype=torch.long)).float()
        weighted = parts * torch.tensor(w, dtype=parts.dtype).view(-1, *([1] * (parts.dim() - 1)))
        out = torch.zeros((len(idx), *parts.shape[1:]), dtype=parts.dtype)
        return out.index_add_(0, torch.tensor(pos, dtype=torch.long), weighted)

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        mixed = self.mixed[idx.cpu()]
        if mixed.any() and self._summary_out is None:  # augmented data: the teacher sees this batch's inputs
            out = self.distiller.teacher_outputs(x)
        else:
            out = default()
            if out is None:  # no teacher source: the distiller runs its teacher
                out = self.distiller.teacher_outputs(x)
            if mixed.any():  # in-memory data: the summarised inputs' outputs, computed once per round
                pos = mixed.nonzero().flatten().to(out.logits.device)
                rows = self._summary_row[idx.cpu()[mixed]].to(out.logits.device)
                src = self._summary_out
                out = out.apply(lambda t: t.clone())
                for dst, val in [(out.logits, src.logits), *zip(out.feats, src.feats, strict=True),
                                 *zip(out.preacts, src.preacts, strict=True)]:
                    dst[pos] = val[rows].to(dst.dtype)
                if out.embedding is not None:
                    out.embedding[pos] = src.embedding[rows].to(out.embedding.dtype)
        self._t_logits = out.logits
        return out

    @torch.no_grad()
    def _summarise_teacher(self) -> None:
        """The teacher's outputs on every summarised input (deterministic in-memory data), row per sample."""
        if self.distiller.teacher is None:
            return
        ids = self.mixed.nonzero().flatten()
        parts = [self.distiller.teacher_outputs(self._summarised[ids[i:i + 512]].to(self.device))
                 for i in range(0, len(ids), 512)]
        self._summary_out = Outputs.cat(parts)
        self._summary_row[ids] = torch.arange(len(ids))

    # -- E-step: record each sample's value ----------------------------------------------------------------
    @torch.no_grad()
    def sample_values(self, student_logits: Tensor, teacher_logits: Tensor | None) -> Tensor:
        s = student_logits.float()
        if self.params["value"] == "entropy":
            return -(F.softmax(s, 1) * F.log_softmax(s, 1)).sum(1)
        t = teacher_logits.float()
        return (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        t_logits = self._t_logits
        if self.params["value"] == "kd" and t_logits is None:
            t_logits = self.distiller.teacher_outputs(x).logits
        values = self.sample_values(step.student.logits.detach(), t_logits).double().cpu()
        ids = idx.detach().cpu().long()
        self.value_sum[ids] += values
        self.seen[ids] += 1
        self._t_logits = None
        return {}

    # -- M-step: condense (and summarise) -------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        if (epoch + 1) % self.interval or epoch + 1 >= total_epochs:
            return
        scores = knowledge_scores(self.value_sum, self.seen, self.interval)
        previous = len(self.kept)
        kept, lost = condense(scores, previous, self.params["keep"], self.params["rounds"])
        self.kept = kept
        lost = lost[:len(kept)]
        if self.params["summary"] and len(lost):
            tail = kept[-len(lost):]
            weights = summary_weights(len(lost), self.params["mix_low"])
            new = {}
            for r, lo, w in zip(tail.tolist(), lost.tolist(), weights.tolist(), strict=True):
                combo: dict[int, float] = {}
                for j, v in self.mix.get(r, {r: 1.0}).items():
                    combo[j] = combo.get(j, 0.0) + w * v
                for j, v in self.mix.get(lo, {lo: 1.0}).items():
                    combo[j] = combo.get(j, 0.0) + (1.0 - w) * v
                new[r] = combo
            self.mix.update(new)
            self.mixed[list(new)] = True
            if self._arrays is not None:
                if self._summarised is None:
                    self._summarised = self._arrays.clone()
                for r, combo in new.items():
                    self._summarised[r] = sum(v * self._arrays[j] for j, v in combo.items())
                self._summarise_teacher()
        self.events.append(f"epoch {epoch + 1}: kept {len(kept)}/{self.n} samples (was {previous}), "
                           f"{len(lost)} summarised")


def _array_inputs(dataset) -> Tensor | None:
    """The input tensor of a transform-free in-memory dataset (its samples never change), else ``None``."""
    from ..data.loading import ArrayDataset, IndexedDataset

    base = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    return base.x if isinstance(base, ArrayDataset) and base.transform is None else None


def _targets(dataset) -> Tensor:
    """All labels of ``dataset`` (its ``targets`` when it has them)."""
    from ..data.loading import IndexedDataset

    base = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    if hasattr(base, "targets"):
        return torch.as_tensor(np.asarray(base.targets)).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)
