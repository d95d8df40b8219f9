"""Methods that reuse a classifier: the teacher's (SRRL, SimKD) or both models' (CAT-KD)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .factor import pool_to_common

__all__ = [
    "SRRL",
    "SimKD",
    "SimKDStudent",
    "CATKD",
    "classifier_of",
    "frozen_classifier",
    "class_activation_maps",
]


def classifier_of(model: nn.Module, who: str = "model") -> nn.Linear:
    """The model's final ``nn.Linear`` classifier (zoo models and wrapped models expose ``.classifier``)."""
    cls = getattr(model, "classifier", None)
    if not isinstance(cls, nn.Linear):
        raise ConfigError(f"the {who} has no nn.Linear `.classifier` (got {type(cls).__name__})")
    return cls


def frozen_classifier(model: nn.Module, who: str = "teacher") -> nn.Linear:
    """A frozen copy of the model's classifier: part of the loss's state, never trained, never the
    teacher's."""
    cls = copy.deepcopy(classifier_of(model, who))
    cls.requires_grad_(False)
    return cls


def _set_ref(module: nn.Module, name: str, value: nn.Module | None) -> None:
    """Keep a reference to a module that belongs to someone else (not registered: no duplicate parameters)."""
    object.__setattr__(module, name, value)


# --------------------------------------------------------------------------------------------------- SRRL


@register
class SRRL(DistillLoss):
    """Knowledge Distillation via Softmax Regression Representation Learning (Yang et al., ICLR 2021).

    Official code (SRRL as re-implemented in the SemCKD/SimKD repositories): a connector (1×1 conv + BN + ReLU
    on the pooled student embedding, i.e. a bias-free linear layer + BN + ReLU) maps the student's embedding
    to the teacher's dimension, and::

        loss = alpha · MSE(connector(e_s), e_t) + beta · MSE(W_t · connector(e_s) + b_t, z_t)

    where ``W_t, b_t`` is the teacher's (frozen copy of its) classifier and ``z_t`` the teacher's logits.
    Official weights: alpha = beta = 1 and term weight 1. The teacher's classifier comes from :meth:`setup`
    (``teacher_model``).
    """

    name = "srrl"
    paper = "Yang et al., ICLR 2021, Knowledge Distillation via Softmax Regression Representation Learning"
    level = "feature"
    needs = frozenset({"logits", "embedding", "teacher_model"})
    hparams = {
        "alpha": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the feature (embedding) MSE"),
        "beta": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the softmax-regression (logit) MSE"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        s, t = self.student_shapes, self.teacher_shapes
        if s is None or t is None or s.embedding is None or t.embedding is None:
            raise ConfigError("loss 'srrl' needs the student's and teacher's Shapes with an embedding")
        self.connector = nn.Sequential(
            nn.Linear(s.embedding, t.embedding, bias=False),
            nn.BatchNorm1d(t.embedding),
            nn.ReLU(inplace=True),
        )
        self.classifier_t: nn.Linear | None = None

    def setup(self, **context: Any) -> None:
        if context.get("teacher_model") is not None:
            self.classifier_t = frozen_classifier(context["teacher_model"])

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        if self.classifier_t is None:
            raise ConfigError("loss 'srrl' needs the teacher's classifier: call setup(teacher_model=...)")
        z = self.connector(student.embedding).float()
        feat = F.mse_loss(z, teacher.embedding.float())
        pred = self.classifier_t(z).float()
        return self.alpha * feat + self.beta * F.mse_loss(pred, teacher.logits.float())


# -------------------------------------------------------------------------------------------------- SimKD


class SimKDProjector(nn.Sequential):
    """SimKD's ``transfer``: 1×1 conv (C_s -> C_t/f) BN ReLU, 3×3 conv BN ReLU, 1×1 conv (-> C_t) BN ReLU."""

    def __init__(self, c_in: int, c_out: int, factor: int = 2) -> None:
        mid = max(1, c_out // factor)
        super().__init__(
            nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )  # fmt: skip


class SimKDStudent(nn.Module):
    """The SimKD student at inference: student backbone -> stage feature (average-pooled to the common size)
    -> projector -> global average pool -> the teacher's classifier (a frozen copy).

    ``forward(x)`` returns the logits; ``forward_outputs(x)`` an :class:`Outputs` whose ``feats`` are the
    student's plus the projected map (the one pooled into ``embedding``). Modules are shared with the loss, so
    this wrapper always reflects the trained state; its ``state_dict`` is the exported student.
    """

    def __init__(
        self, student: nn.Module, projector: nn.Module, classifier: nn.Linear, stage: int, hw: tuple[int, int]
    ) -> None:
        super().__init__()
        self.student = student
        self.projector = projector
        self.classifier = classifier
        self.stage = int(stage)
        self.hw = tuple(int(v) for v in hw)
        self.num_classes = int(classifier.out_features)
        self.embedding_dim = int(classifier.in_features)

    def forward_outputs(self, x: Tensor) -> Outputs:
        out = self.student.forward_outputs(x)
        f = out.feats[self.stage]
        if tuple(f.shape[-2:]) != self.hw:
            f = F.adaptive_avg_pool2d(f, self.hw)
        z = self.projector(f)
        emb = F.adaptive_avg_pool2d(z, 1).flatten(1)
        preacts = out.preacts + [z] if out.preacts else []
        return Outputs(logits=self.classifier(emb), feats=out.feats + [z], preacts=preacts, embedding=emb)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_outputs(x).logits


@register
class SimKD(DistillLoss):
    """Knowledge Distillation with the Reused Teacher Classifier (Chen et al., CVPR 2022).

    Official SimKD code (github.com/DefangChen/SimKD): the larger of the student's and teacher's last feature
    maps is average-pooled to the smaller's size, a projector (1×1, 3×3, 1×1 convs with BN + ReLU, bottleneck
    ``factor`` 2) maps the student's to the teacher's channels, and ``loss = MSE(projector(s), t)``. At
    inference the student is backbone + projector + global pooling + the *teacher's* classifier:
    :meth:`student_head` returns that model (a :class:`SimKDStudent`); the trainer evaluates and exports it.
    The official recipe trains with this term only (CE and KD weights 0, term weight 1): use ``ce_weight: 0``
    in the recipe to reproduce it (the student's own classifier is not used at inference).
    """

    name = "simkd"
    paper = (
        "Chen et al., CVPR 2022, Knowledge Distillation with the Reused Teacher Classifier (arXiv:2203.14001)"
    )
    level = "feature"
    needs = frozenset({"feats", "teacher_model"})
    hparams = {"factor": HParam(2, 1, 4, kind="int", doc="projector bottleneck factor (mid = C_t / factor)")}
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        pairs = self.resolve_pairs("last")
        if len(pairs) != 1:
            raise ConfigError(f"loss 'simkd' uses one (teacher, student) stage pair, got pairs={pairs}")
        self.t_stage, self.s_stage = pairs[0]
        t_shape = self.teacher_shapes.feats[self.t_stage]
        s_shape = self.student_shapes.feats[self.s_stage]
        self.hw = (min(s_shape[1], t_shape[1]), min(s_shape[2], t_shape[2]))
        self.projector = SimKDProjector(s_shape[0], t_shape[0], self.factor)
        self.classifier_t: nn.Linear | None = None

    def setup(self, **context: Any) -> None:
        teacher = context.get("teacher_model")
        if teacher is None:
            return
        cls = frozen_classifier(teacher)
        c_t = self.teacher_shapes.feats[self.t_stage][0]
        if cls.in_features != c_t:
            raise ConfigError(
                f"loss 'simkd': the teacher's classifier takes {cls.in_features} features but teacher stage "
                f"{self.t_stage} has {c_t} channels; pair the teacher's last stage"
            )
        self.classifier_t = cls

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        s, t = pool_to_common(student.feats[self.s_stage], teacher.feats[self.t_stage])
        return F.mse_loss(self.projector(s).float(), t.float())

    def student_head(self, student: nn.Module) -> nn.Module:
        if self.classifier_t is None:
            raise ConfigError("loss 'simkd' needs the teacher's classifier: call setup(teacher_model=...)")
        return SimKDStudent(student, self.projector, self.classifier_t, self.s_stage, self.hw)


# ------------------------------------------------------------------------------------------------- CAT-KD


def class_activation_maps(feat: Tensor, weight: Tensor) -> Tensor:
    """CAMs (N, K, H, W): the classifier weights (K, C) applied at every position as a 1×1 convolution (no
    bias, as CAT-KD's ``conv_test`` head)."""
    return F.conv2d(feat, weight[:, :, None, None])


def _cat_transform(cam: Tensor, size: int, normalize: bool) -> Tensor:
    cam = F.adaptive_avg_pool2d(cam.float(), (size, size))
    if normalize:
        cam = F.normalize(cam.flatten(2), dim=2).view_as(cam)
    return cam


@register
class CATKD(DistillLoss):
    """Class Attention Transfer based Knowledge Distillation (Guo et al., CVPR 2023).

    Official CAT-KD code (github.com/GzyAftermath/CAT-KD, ``CAT_loss``): each model's classifier weights are
    applied as a bias-free 1×1 conv to its last feature map, giving one class activation map per class; both
    CAM stacks are average-pooled to ``pool_size`` × ``pool_size`` (``CAM_RESOLUTION``, 2), optionally
    L2-normalised per map over its positions (``IF_NORMALIZE``) and compared with MSE. The student's CAMs use
    the student's own classifier (which the loss trains too), the teacher's its frozen classifier. Official
    weights range from 0.7 to 600 depending on the pair (15 for vgg13 -> MobileNetV2 with normalisation at
    2×2); default 15.
    """

    name = "cat_kd"
    paper = "Guo et al., CVPR 2023, Class Attention Transfer Based Knowledge Distillation (arXiv:2304.12777)"
    level = "feature"
    needs = frozenset({"feats", "teacher_model"})
    hparams = {
        "pool_size": HParam(2, 1, 4, kind="int", doc="CAM resolution after average pooling"),
        "normalize": HParam(True, kind="bool", doc="L2-normalise each pooled CAM (IF_NORMALIZE)"),
    }
    default_weight = 15.0
    weight_range = (0.5, 1000.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        pairs = self.resolve_pairs("last")
        if len(pairs) != 1:
            raise ConfigError(f"loss 'cat_kd' uses one (teacher, student) stage pair, got pairs={pairs}")
        self.t_stage, self.s_stage = pairs[0]
        self.classifier_t: nn.Linear | None = None
        _set_ref(self, "_student_classifier", None)

    def setup(self, **context: Any) -> None:
        if context.get("teacher_model") is not None:
            self.classifier_t = frozen_classifier(context["teacher_model"])
        if context.get("student_model") is not None:
            _set_ref(self, "_student_classifier", classifier_of(context["student_model"], "student"))
        for cls, shapes, stage, who in (
            (self.classifier_t, self.teacher_shapes, self.t_stage, "teacher"),
            (self._student_classifier, self.student_shapes, self.s_stage, "student"),
        ):
            if cls is not None and shapes is not None and cls.in_features != shapes.feats[stage][0]:
                raise ConfigError(
                    f"loss 'cat_kd': the {who}'s classifier takes {cls.in_features} features but its "
                    f"stage {stage} has {shapes.feats[stage][0]} channels; pair the last stages"
                )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        if self.classifier_t is None or self._student_classifier is None:
            raise ConfigError(
                "loss 'cat_kd' needs both classifiers: call setup(teacher_model=, student_model=)"
            )
        cam_s = class_activation_maps(student.feats[self.s_stage], self._student_classifier.weight)
        with torch.no_grad():
            cam_t = class_activation_maps(teacher.feats[self.t_stage], self.classifier_t.weight)
        s = _cat_transform(cam_s, self.pool_size, self.normalize)
        t = _cat_transform(cam_t, self.pool_size, self.normalize)
        return F.mse_loss(s, t)
