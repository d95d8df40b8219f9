"""The :class:`DistillLoss` base class, hyper-parameter declarations and the loss registry."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from ..errors import ConfigError
from ..hparams import HParam, resolve
from ..outputs import Outputs, Shapes
from ..pairs import Pairs, auto_pairs
from ..registry import Registry

__all__ = ["HParam", "DistillLoss", "LOSSES", "register", "Pairs"]

#: What a loss may declare in ``needs``. The trainer provides each one without per-method branches.
NEEDS = frozenset(
    {
        "logits",  # Outputs.logits of both models
        "feats",  # Outputs.feats
        "preacts",  # Outputs.preacts
        "embedding",  # Outputs.embedding
        "index",  # dataset indices of the batch samples, passed as ``index=``
        "input",  # the input batch, passed as ``x=``
        "teacher_model",  # the teacher nn.Module, passed once through ``setup(teacher_model=...)``
        "heads",  # Outputs.heads (a transformer's individual classifier heads, e.g. DeiT's distillation head)
        "tokens",  # Outputs.tokens (a transformer's class-like tokens)
        "attention",  # Outputs.attention (each transformer block's Q, K, V)
        "helper_teachers",  # extra frozen teachers, obtained in ``setup`` from ``helper_teacher(name, kwargs)``
    }
)


class DistillLoss(nn.Module):
    """Base class of every distillation term.

    Subclasses set ``name``, ``paper``, ``needs`` and ``hparams`` and implement :meth:`forward`.
    They receive the student's and the teacher's :class:`Outputs` (the runner owns the teacher) and the
    targets, return a scalar tensor, and never back-propagate into the teacher (teacher outputs arrive
    detached). The outer weight of a term lives in the recipe, not in the loss.

    ``student``/``teacher`` are the models' probed :class:`Shapes`, used by losses that build connectors;
    ``pairs`` are (teacher stage, student stage) indices into ``Outputs.feats``.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    level: ClassVar[str] = "logit"  # logit | feature | relation | primitive
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    hparams: ClassVar[dict[str, HParam]] = {}
    #: The outer weight the paper / reference code uses (for its own setting) and a default search range.
    #: Use :meth:`default_weight_for` / :meth:`weight_range_for` for a given pair of models (a study's search
    #: space does, for terms its file leaves without ``weight``: :mod:`autokd.search.weight_ranges`).
    default_weight: ClassVar[float] = 1.0
    weight_range: ClassVar[tuple[float, float]] = (0.1, 10.0)
    #: the inputs the method works on: ``"any"``, or ``"tokens"`` (text models with a token embedding table)
    inputs: ClassVar[str] = "any"
    #: the name of the student head (``Outputs.heads``) the recipe's cross-entropy applies to instead of the
    #: fused prediction ``Outputs.logits``; ``None`` = the prediction (e.g. DeiT: CE on the class head only)
    task_head: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        student: Shapes | None = None,
        teacher: Shapes | None = None,
        pairs: Pairs | None = None,
        **hparams: Any,
    ) -> None:
        super().__init__()
        self.student_shapes = student
        self.teacher_shapes = teacher
        self.pairs = pairs
        values = self.resolve_hparams(hparams)
        for k, v in values.items():
            setattr(self, k, v)
        self.hp = values
        self.progress = 0.0  # fraction of training done, in [0, 1]; set by the trainer each epoch
        self.epoch = 0

    @classmethod
    def weight_scale(cls, student: Shapes | None = None, teacher: Shapes | None = None,
                     pairs: Pairs | None = None) -> float:
        """Factor by which this method's weight must change, for these probed shapes, to keep the loss at the
        magnitude the reference weight was tuned for. 1 unless a method's loss scales with the models'
        shapes (e.g. AT's per-position mean grows as the maps shrink); 1 when shapes are unknown."""
        return 1.0

    @classmethod
    def default_weight_for(cls, student: Shapes | None = None, teacher: Shapes | None = None,
                           pairs: Pairs | None = None) -> float:
        """The default outer weight for a term between models of these shapes (``pairs`` as the loss would
        receive them): ``default_weight`` × :meth:`weight_scale`. Use this wherever a default weight is
        resolved for concrete models."""
        return float(cls.default_weight) * cls.weight_scale(student, teacher, pairs)

    @classmethod
    def weight_range_for(cls, student: Shapes | None = None, teacher: Shapes | None = None,
                         pairs: Pairs | None = None) -> tuple[float, float]:
        """``weight_range`` rescaled by :meth:`weight_scale`, for searching the weight on these models."""
        k = cls.weight_scale(student, teacher, pairs)
        return float(cls.weight_range[0]) * k, float(cls.weight_range[1]) * k

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Every hyper-parameter's value: ``given`` checked (see :func:`autokd.hparams.resolve`), defaults
        for the rest."""
        return resolve(cls.hparams, given, f"loss {cls.name!r}")

    def setup(self, **context: Any) -> None:
        """Receive run-wide context once before training: ``teacher_model``, ``student_model`` and, from the
        trainer, ``num_samples`` (training-set size), ``num_classes``, ``input_shape``, ``cache_dir``,
        ``batch_size`` and ``helper_teacher``: ``helper_teacher(name, kwargs=None, epochs=None) -> nn.Module``
        returns a frozen zoo model trained once with CE on the teacher's training data and cached (a loss that
        needs teachers besides the study's declares ``helper_teachers`` in ``needs``, e.g. CiT's involution
        teacher). Implementations take what they need and ignore the rest."""

    def resolve_pairs(self, default: str = "last") -> Pairs:
        """The (teacher stage, student stage) pairs to use: the given ``pairs``, else the method's default:
        ``last`` = the deepest stages of both, ``auto`` = stage-aligned pairs (see ``auto_pairs``)."""
        if self.pairs is not None:
            return [tuple(p) for p in self.pairs]
        if self.student_shapes is None or self.teacher_shapes is None:
            raise ConfigError(f"loss {self.name!r} needs the student's and teacher's Shapes to build")
        if default == "last":
            return [(self.teacher_shapes.num_stages - 1, self.student_shapes.num_stages - 1)]
        return auto_pairs(self.teacher_shapes, self.student_shapes)

    def pretrain(self, *, teacher_model: nn.Module, loader, device, epochs: int) -> None:
        """Optional stage run once before student training (e.g. Factor Transfer's paraphraser).
        ``loader`` yields (x, y, idx) training batches; the teacher is frozen."""

    def finish(self, student: nn.Module) -> None:
        """Called once after training (``Distiller.finish``): fold into ``student`` what the method trained for
        it to keep (Mou et al.'s encoded embeddings), so the exported student is self-contained."""

    def student_head(self, student: nn.Module) -> nn.Module | None:
        """If the method's student needs parts of this loss at inference (SimKD: projector + the teacher's
        classifier), return the whole inference model wrapping ``student``; else ``None``."""
        return None

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of each epoch (for warm-ups, curricula, annealing)."""
        self.epoch = epoch
        self.progress = epoch / max(1, total_epochs)

    def __call__(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        # Gradients reach the student only, whatever the caller passes: teacher outputs are detached here.
        return super().__call__(student, teacher.detach(), target, **extra)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hp.items())


LOSSES: Registry[type[DistillLoss]] = Registry("loss")


def register(cls: type[DistillLoss]) -> type[DistillLoss]:
    """Class decorator: add a :class:`DistillLoss` subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    bad = set(cls.needs) - NEEDS
    if bad:
        raise ValueError(f"{cls.__name__}.needs has unknown entries {sorted(bad)}; allowed: {sorted(NEEDS)}")
    LOSSES.add(cls.name, cls, paper=cls.paper, level=cls.level)
    return cls
