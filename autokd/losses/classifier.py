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
    "srrl_loss",
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


def srrl_loss(connected_map: Tensor, teacher_map: Tensor, teacher_logits: Tensor, classifier: nn.Linear,
              alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """SRRL as its authors' code computes it, on the *connected* student map (N, C_t, H, W) and the teacher's last
    map: alpha · mean over (N, C_t) of (spatial mean of the student's − spatial mean of the teacher's)² (their
    ``statm_loss``) + beta · MSE(classifier(spatial mean of the student's), teacher logits)."""
    pooled = connected_map.float().mean(dim=(2, 3))
    feat = (pooled - teacher_map.float().mean(dim=(2, 3))).pow(2).mean()
    return alpha * feat + beta * F.mse_loss(classifier(pooled).float(), teacher_logits.float())


@register
class SRRL(DistillLoss):
    """Knowledge Distillation via Softmax Regression Representation Learning (Yang et al., ICLR 2021).

    ``variant="map"`` (default) follows the authors' code (github.com/jingyang2017/KD_SRRL, ``transfer_conv`` and
    ``statm_loss``): a connector — 1×1 conv (no bias) + BN + ReLU, He-normal init — is applied to the student's
    last *feature map*, giving C_t channels; then::

        loss = alpha · mean_{n,c} (mean_hw connector(f_s) − mean_hw f_t)²
             + beta  · MSE(W_t · mean_hw connector(f_s) + b_t, z_t)

    i.e. the spatial means (the pooled features) are matched and the teacher's (frozen copy of its) classifier
    ``W_t, b_t`` is run on the pooled connected map and matched to the teacher's logits ``z_t``. The official
    script adds this with weight 1 (``--weight 1``) and alpha = beta = 1. Pooling is the global average the zoo
    models use before their classifier; student and teacher maps may differ in size.

    ``variant="embedding"``: the re-implementation in the SemCKD/SimKD repositories, which applies the connector
    to the already pooled student embedding (a 1×1 conv on a 1×1 map = bias-free linear + BN + ReLU) and matches
    it to the teacher's embedding. Because BN + ReLU do not commute with the pooling, the two variants differ.

    Pair: the last stages (``pairs`` may name another teacher stage only if its channels feed the teacher's
    classifier). The teacher's classifier comes from :meth:`setup` (``teacher_model``).
    """

    name = "srrl"
    paper = "Yang et al., ICLR 2021, Knowledge Distillation via Softmax Regression Representation Learning"
    level = "feature"
    needs = frozenset({"logits", "feats", "embedding", "teacher_model"})
    hparams = {
        "alpha": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the feature (pooled-map) MSE"),
        "beta": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the softmax-regression (logit) MSE"),
        "variant": HParam("map", kind="categorical", choices=("map", "embedding"),
                          doc="map: connector on the feature map (authors' code); embedding: on the pooled vector"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        s, t = self.student_shapes, self.teacher_shapes
        if s is None or t is None or not s.feats or not t.feats:
            raise ConfigError("loss 'srrl' needs the student's and teacher's Shapes with stage features")
        pairs = self.resolve_pairs("last")
        if len(pairs) != 1:
            raise ConfigError(f"loss 'srrl' uses one (teacher, student) stage pair, got pairs={pairs}")
        self.t_stage, self.s_stage = (int(v) for v in pairs[0])
        c_s, c_t = s.feats[self.s_stage][0], t.feats[self.t_stage][0]
        if self.variant == "embedding":
            if s.embedding is None or t.embedding is None:
                raise ConfigError("loss 'srrl' (variant embedding) needs models with an embedding")
            c_s, c_t = s.embedding, t.embedding
        self.connector = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t), nn.ReLU())
        nn.init.kaiming_normal_(self.connector[0].weight, mode="fan_out", nonlinearity="relu")
        self.classifier_t: nn.Linear | None = None

    def setup(self, **context: Any) -> None:
        if context.get("teacher_model") is None:
            return
        cls = frozen_classifier(context["teacher_model"])
        c_t = self.connector[0].out_channels
        if cls.in_features != c_t:
            raise ConfigError(f"loss 'srrl': the teacher's classifier takes {cls.in_features} features but the "
                              f"connector gives {c_t}; pair the teacher's last stage")
        self.classifier_t = cls

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        if self.classifier_t is None:
            raise ConfigError("loss 'srrl' needs the teacher's classifier: call setup(teacher_model=...)")
        if self.variant == "embedding":
            s_map = student.embedding[:, :, None, None]
            t_map = teacher.embedding[:, :, None, None]
        else:
            s_map, t_map = student.feats[self.s_stage], teacher.feats[self.t_stage]
        return srrl_loss(self.connector(s_map), t_map, teacher.logits, self.classifier_t, self.alpha, self.beta)


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
    the student's own classifier (which the loss trains too), the teacher's its frozen classifier.

    Defaults: the official CIFAR-100 config of the field's standard pair (``configs/cifar100/CAT_KD/
    res32x4_res8x4.yaml``): ``CAT_loss_weight`` 15, ``CAM_RESOLUTION`` 2, ``IF_NORMALIZE: False``. The official
    configs normalise only for cross-family pairs (vgg13 -> MobileNetV2: True, 15; res32x4 -> ShuffleNet: True,
    4×4, 600) and not for same-family ones (weights 0.7 to 15); ``normalize`` is searchable.
    """

    name = "cat_kd"
    paper = "Guo et al., CVPR 2023, Class Attention Transfer Based Knowledge Distillation (arXiv:2304.12777)"
    level = "feature"
    needs = frozenset({"feats", "teacher_model"})
    hparams = {
        "pool_size": HParam(2, 1, 4, kind="int", doc="CAM resolution after average pooling"),
        "normalize": HParam(False, kind="bool", doc="L2-normalise each pooled CAM (IF_NORMALIZE)"),
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
