"""The :class:`StudyContext`: what a study opens once — device, data, teacher, teacher source, trainer.

Search, the multi-seed retrain and the training-free proxy ranking all work from one context, so the
teacher is obtained (trained once and stored, or loaded) and its outputs are cached in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import StudyConfig
    from .data import DataBundle
    from .outputs import Shapes
    from .train import TeacherSource, Trainer

__all__ = ["StudyContext"]

#: ``check(teacher_shapes, data)``: validation run once the data and the teacher's architecture are known,
#: before the teacher trains (e.g. a search space's layer pairs against the study's models)
ModelCheck = Callable[["Shapes", "DataBundle"], None]


@dataclass
class StudyContext:
    """A study's shared resources, opened once with :meth:`open`."""

    cfg: StudyConfig
    device: torch.device
    data: DataBundle
    trainer: Trainer
    teacher: nn.Module | None = None
    teacher_source: TeacherSource | None = None
    teacher_info: dict[str, Any] = field(default_factory=dict)
    _trial_trainer: Trainer | None = field(default=None, repr=False)

    def trial_trainer(self) -> Trainer:
        """The trainer of searched trials: with ``search.fidelity.data_fraction < 1`` one over a fixed random
        subset of the training split (fixed by the study seed; its own teacher source, cached like the
        study's), else the study's trainer."""
        fraction = self.cfg.search.fidelity.data_fraction
        if fraction >= 1:
            return self.trainer
        if self._trial_trainer is None:
            from .data.fidelity import train_subset
            from .train import Trainer, make_teacher_source

            sub = train_subset(self.data, fraction, self.cfg.seed)
            source = None
            if self.teacher is not None:
                source = make_teacher_source(self.cfg.teacher_cache, self.teacher, sub, self.device,
                                             cache_dir=self.trainer.cache_dir, key="fidelity", seed=self.cfg.seed,
                                             topk=self.cfg.teacher_cache_topk,
                                             feature_budget_mb=self.cfg.teacher_cache_feature_mb)
            self._trial_trainer = Trainer(sub, teacher=self.teacher, teacher_source=source, device=self.device,
                                          on_epoch=self.trainer.on_epoch, cache_dir=self.trainer.cache_dir,
                                          teacher_data=self.trainer.teacher_data)
        return self._trial_trainer

    @classmethod
    def open(cls, cfg: StudyConfig, *, need_teacher: bool = True, log: Callable[[str], None] = print,
             on_epoch: Callable[[dict], None] | None = None, check: ModelCheck | None = None,
             teacher_weights: dict[str, torch.Tensor] | None = None) -> StudyContext:
        """Build the data, run ``check`` against the teacher's probed shapes, then obtain the teacher (trained
        once and stored under the study folder, or loaded from ``teacher.checkpoint``) and its output source.
        ``teacher_weights``: the teacher's state dict as another process obtained it (a Ray worker receives
        the driver's): the teacher is built from ``cfg.teacher`` and loaded with them, never trained."""
        from . import models
        from .train import Trainer, make_teacher_source, obtain_teacher, resolve_device
        from .train.threads import set_cpu_threads

        device = resolve_device(cfg.device)
        data = cfg.data.create(cfg.base_dir)
        set_cpu_threads(device, data.input_shape)
        if check is not None:
            probe = models.from_spec(cfg.teacher, data.num_classes, data.input_shape[0])
            check(models.shapes(probe, data.input_shape), data)
            del probe
        teacher, info, source = None, {}, None
        cache_dir = cfg.study_dir / "cache"
        t_data = data
        if need_teacher:
            if cfg.teacher.train_fraction != cfg.data.train_fraction and not cfg.teacher.checkpoint:
                t_data = cfg.data.model_copy(update={"train_fraction": cfg.teacher.train_fraction}).create(cfg.base_dir)
            if teacher_weights is not None:
                from .fingerprint import model_fingerprint

                teacher = models.from_spec(cfg.teacher, data.num_classes, data.input_shape[0])
                teacher.load_state_dict(teacher_weights)
                teacher.arch_name = cfg.teacher.name
                teacher = teacher.to(device).eval().requires_grad_(False)
                info = {"fingerprint": model_fingerprint(teacher)}
            else:
                teacher, info = obtain_teacher(cfg.teacher, t_data, cfg.study_dir, device, log=log)
            source = make_teacher_source(cfg.teacher_cache, teacher, data, device, cache_dir=cache_dir,
                                         seed=cfg.seed, topk=cfg.teacher_cache_topk, log=log,
                                         feature_budget_mb=cfg.teacher_cache_feature_mb)
        trainer = Trainer(data, teacher=teacher, teacher_source=source, device=device, on_epoch=on_epoch,
                          cache_dir=cache_dir, teacher_data=t_data)
        return cls(cfg=cfg, device=device, data=data, trainer=trainer, teacher=teacher, teacher_source=source,
                   teacher_info=info)
