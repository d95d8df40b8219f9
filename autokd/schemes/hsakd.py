"""HSAKD: hierarchical self-supervised augmented knowledge distillation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..fingerprint import config_hash, model_fingerprint
from ..hparams import HParam
from ..models import shapes as probe_shapes
from ..pairs import auto_pairs
from ._heads import ROTATIONS, StageBranch, check_square, joint_labels, rotate4
from ._helpers import cached_module, soft_kl
from .base import Scheme, register

__all__ = ["HSAKD", "RotatedTeacher", "train_teacher_heads", "interleave_rotations"]

log = logging.getLogger("autokd.schemes")


def interleave_rotations(first: Tensor, others: Tensor) -> Tensor:
    """Rows of :func:`~autokd.schemes._heads.rotate4`'s order (sample-major) from ``first`` (N, ...) — the
    unrotated inputs' — and ``others`` (3N, ...), the rotations 1, 2, 3 stacked rotation-major."""
    n = first.shape[0]
    rest = others.reshape(ROTATIONS - 1, n, *others.shape[1:])
    return torch.cat([first.unsqueeze(0), rest]).transpose(0, 1).reshape(n * ROTATIONS, *first.shape[1:])


def _heads(shapes, stages: list[int], out_dim: int) -> nn.ModuleList:
    """HSAKD's auxiliary branches: on stage i, blocks mimicking the later stages (one more at the deepest)."""
    last = shapes.num_stages - 1
    return nn.ModuleList([StageBranch(shapes, i, out_dim, extra=int(i == last)) for i in stages])


class RotatedTeacher(nn.Module):
    """The frozen teacher and its auxiliary heads as one model: for N inputs, its ``forward`` flattens, per
    sample, the teacher's logits on the four rotations and every head's joint logits on them, (N, 4K + 16K·H),
    so the trainer's teacher-output cache stores them; :meth:`split` undoes it."""

    def __init__(self, teacher: nn.Module, heads: nn.ModuleList, stages: list[int]) -> None:
        super().__init__()
        self.teacher, self.heads, self.stages = teacher, heads, list(stages)

    def parts(self, x: Tensor) -> list[Tensor]:
        out = self.teacher.forward_outputs(rotate4(x))
        return [out.logits] + [h(out.feats[i]) for h, i in zip(self.heads, self.stages, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([p.reshape(x.shape[0], -1) for p in self.parts(x)], 1)

    @staticmethod
    def split(flat: Tensor, num_classes: int, n_heads: int) -> list[Tensor]:
        """(N, 4K + 16K·H) -> [(4N, K) logits, (4N, 4K) per head], rows in rotation order."""
        sizes = [ROTATIONS * num_classes] + [ROTATIONS * ROTATIONS * num_classes] * n_heads
        parts = torch.split(flat, sizes, dim=1)
        return [parts[0].reshape(-1, num_classes)] + [p.reshape(-1, ROTATIONS * num_classes) for p in parts[1:]]


def train_teacher_heads(teacher: nn.Module, heads: nn.ModuleList, stages: list[int], data, device, *,
                        epochs: int, batch_size: int, lr: float = 0.05) -> list[float]:
    """Train the auxiliary heads on the frozen teacher (the official ``--freezed`` mode): over the four rotations
    of each batch, Σ_heads CE(head(teacher stage feature), 4y + k); SGD (momentum 0.9, Nesterov, weight decay
    5e-4), cosine learning rate. Returns the mean loss of each epoch."""
    teacher.eval()
    heads.train()
    opt = torch.optim.SGD(heads.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = data.loader("train", batch_size, shuffle=True, seed=0)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total))))
    history = []
    for _ in range(epochs):
        sums, n = 0.0, 0
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                feats = teacher.forward_outputs(rotate4(x)).feats
            labels = joint_labels(y)
            loss = sum(F.cross_entropy(h(feats[i]).float(), labels) for h, i in zip(heads, stages, strict=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums, n = sums + float(loss.detach()), n + 1
        history.append(sums / max(1, n))
    heads.eval()
    return history


@register
class HSAKD(Scheme):
    """Hierarchical Self-supervised Augmented KD (Yang, Xu, An & Xu, IJCAI 2021, "Hierarchical Self-supervised
    Augmented Knowledge Distillation").

    Auxiliary branches (:class:`~autokd.schemes._heads.StageBranch`: blocks mimicking the later stages, one more
    block at the deepest, pooling, a linear layer with 4K outputs) sit on paired stages of teacher and student
    (:func:`~autokd.pairs.auto_pairs`, stems left out) and predict the joint (class × rotation) label of the
    input rotated by 0°, 90°, 180°, 270°. The teacher's branches are trained once on the frozen teacher (the
    official code's ``--freezed`` mode, :func:`train_teacher_heads`, ``teacher_head_epochs`` epochs — 0 = the
    student's; the official code trains them 100 epochs —, learning rate ``teacher_head_lr``, official 0.05) and
    cached as ``hsakd-teacher-heads-<hash>.pt``, keyed by the teacher's fingerprint, the data
    and the branches' layout; a re-run loads them. The student then learns, over the four rotations of each
    batch, ``weight × [Σ_branches T²·KL(p_t^branch ‖ p_s^branch) + T²·KL(p_t ‖ p_s)]`` (logged ``hsakd``:
    the self-supervised augmented distributions of every branch and the final classifier's outputs on all 4N
    inputs, batch-mean, official T = 3), besides the recipe's own loss (its CE on the unrotated inputs is the
    official ``loss_cls``; the official recipe has no other term). The teacher's rotated outputs go through the
    trainer's teacher-output cache when the training transform is deterministic. The exported model is the
    student alone (its branches are dropped, as the official test uses the final classifier).

    Differences from the official code: the official student runs once on the 4N batch; here the distiller's
    forward covers the unrotated inputs and one more forward the 3N rotated ones (BatchNorm statistics over
    the two parts separately). The branches are built from the zoo models' stage shapes (conv-BN-ReLU blocks)
    rather than copies of the backbone's residual stages. Rotations need square inputs; on 8×8 digits the
    deepest stages are 2×2 or 1×1, where rotating carries little spatial information.
    """

    name = "hsakd"
    paper = "Yang, Xu, An & Xu, IJCAI 2021, Hierarchical Self-supervised Augmented Knowledge Distillation"
    hparams = {
        "weight": HParam(1.0, 0.1, 10.0, log=True, valid=">= 0", doc="weight of the augmented-distribution KLs"),
        "temperature": HParam(3.0, 1.0, 8.0),
        "teacher_head_epochs": HParam(0, 0, 200, kind="int", doc="epochs to train the teacher's branches; "
                                                                 "0 = the student's"),
        "teacher_head_lr": HParam(0.05, 0.01, 0.5, log=True, doc="learning rate of the teacher's branches"),
    }
    student_outputs = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.student_heads = nn.ModuleList()
        self.teacher_heads = nn.ModuleList()
        self.pairs: list[tuple[int, int]] = []
        self.events: list[str] = []
        self.student: nn.Module | None = None
        self._source = None
        self._num_classes = 0

    def setup(self, *, distiller, recipe, data, device, epochs, teacher, trainer, cache_dir=None,
              **context) -> None:
        if teacher is None:
            raise ConfigError("scheme 'hsakd' needs a teacher")
        check_square(data.input_shape, self.name)
        shape = tuple(data.input_shape)
        t_shapes, s_shapes = probe_shapes(teacher, shape), probe_shapes(distiller.student, shape)
        self.pairs = auto_pairs(t_shapes, s_shapes)
        k4 = ROTATIONS * data.num_classes
        self._num_classes = data.num_classes
        self.student = distiller.student
        self.student_heads = _heads(s_shapes, [s for _, s in self.pairs], k4).to(device).train()
        t_stages = [t for t, _ in self.pairs]
        h_epochs = self.params["teacher_head_epochs"] or epochs
        torch.manual_seed(0)  # under the trainer's forked RNG: the teacher's branches never depend on the recipe
        self.teacher_heads = _heads(t_shapes, t_stages, k4).to(device)
        lr = self.params["teacher_head_lr"]
        key = config_hash({"teacher": model_fingerprint(teacher), "data": data.info, "stages": t_stages,
                           "heads": repr(self.teacher_heads), "epochs": h_epochs, "lr": lr,
                           "batch_size": recipe.optim.batch_size, "v": 1})
        self._load_or_train(teacher, t_stages, data, device, h_epochs, recipe.optim.batch_size, lr, key,
                            cache_dir if cache_dir is not None else trainer.cache_dir)
        self.teacher_heads.requires_grad_(False).eval()
        rotated = RotatedTeacher(teacher, self.teacher_heads, t_stages).eval()
        self._source = trainer.source_for(rotated, key=f"hsakd-{key}")

    def _load_or_train(self, teacher, stages, data, device, epochs, batch_size, lr, key, cache_dir) -> None:
        path = Path(cache_dir) / f"hsakd-teacher-heads-{key}.pt" if cache_dir is not None else None

        def train() -> tuple[nn.Module, dict]:
            history = train_teacher_heads(teacher, self.teacher_heads, stages, data, device, epochs=epochs,
                                          batch_size=batch_size, lr=lr)
            return self.teacher_heads, {"history": history}

        _, stored = cached_module(path, key, self.teacher_heads, train, map_location=device)
        if stored is None:
            self.events.append(f"hsakd teacher heads: loaded {path}")
        else:
            self.events.append(f"hsakd teacher heads: trained for {epochs} epochs (last loss "
                               f"{stored['history'][-1]:.4f})"
                               + (f", saved {path}" if path is not None else ", not cached (no cache_dir)"))
        log.info(self.events[-1])

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.student_heads.parameters())

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.student_heads.train()

    def student_parts(self, x: Tensor, step: Step) -> list[Tensor]:
        """The student's final logits and branches' joint logits over the 4N rotated inputs (rotation order)."""
        others = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(1, ROTATIONS)])
        rot = self.student.forward_outputs(others)
        logits = interleave_rotations(step.student.logits, rot.logits)
        heads = [h(interleave_rotations(step.student.feats[s], rot.feats[s]))
                 for h, (_, s) in zip(self.student_heads, self.pairs, strict=True)]
        return [logits] + heads

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        t = self.params["temperature"]
        flat = self._source.batch(x, idx).logits.to(x.device)
        teacher_parts = RotatedTeacher.split(flat, self._num_classes, len(self.pairs))
        student_parts = self.student_parts(x, step)
        total = sum(soft_kl(s, tp, t) for s, tp in zip(student_parts, teacher_parts, strict=True))
        return {"hsakd": self.params["weight"] * total}
