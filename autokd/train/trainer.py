"""Fit a :class:`~autokd.recipe.Recipe` under an epoch budget.

One loop for every recipe: the :class:`~autokd.distiller.Distiller` computes the loss, the scheme's hooks
change the loop, a :class:`~autokd.train.teacher.TeacherSource` supplies teacher outputs, and validation
accuracy is handed to a ``report(epoch, value) -> stop?`` callback each epoch (Optuna pruning).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models, schemes
from ..distiller import Distiller, Step
from ..errors import AutoKDError, ConfigError
from ..recipe import Recipe
from .checks import check_recipe
from .precision import (
    autocast,
    available_cores,
    channels_last,
    limit_threads,
    make_scaler,
    resolve_precision,
    scaled_backward_step,
)
from .source_modes import make_teacher_source
from .sources import OnlineTeacher, TeacherSource

__all__ = ["Trainer", "FitResult", "TrainingDiverged", "resolve_device", "evaluate", "measure_model"]


class TrainingDiverged(AutoKDError):
    """The loss became NaN/inf (e.g. an exploding distillation term)."""

    def __init__(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        self.epoch, self.step, self.losses = epoch, step, losses
        bad = ", ".join(f"{k}={v}" for k, v in losses.items())
        super().__init__(f"training diverged at epoch {epoch}, step {step} ({bad})")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or str(device).startswith("cuda"):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but CUDA is not available; use auto or cpu")
        return torch.device(device)
    raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")


@dataclass
class FitResult:
    student: nn.Module  # the model to evaluate and export (the student, or a SimKD-/scheme-wrapped student)
    distiller: Distiller
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: bool = False  # True when the report callback asked to stop (pruned)
    scheme: Any = None  # the fitted Scheme (its helpers: TAKD's assistant, DML's peers, the EMA teacher, ...)


def evaluate(model: nn.Module, loader, device: torch.device, dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (eval mode, ``torch.inference_mode``, autocast to ``dtype``
    when given; the mode is restored afterwards). Counts stay on the device: one host sync at the end."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    with torch.inference_mode(), autocast(device, dtype):
        for x, y, _ in loader:
            x, y = channels_last(x.to(device, non_blocking=True), device), y.to(device, non_blocking=True)
            correct += (model(x).argmax(1) == y).sum()
            total += y.numel()
    model.train(was_training)
    return int(correct) / max(1, total)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure_model(model: nn.Module, input_shape, repeats: int = 20) -> dict[str, float]:
    """Parameters, FLOPs per sample (torch's FlopCounterMode; 2 FLOPs per multiply-add) and CPU latency
    per sample in ms (median of ``repeats`` batch-1 forwards on a CPU copy, eval mode)."""
    import copy

    m = copy.deepcopy(model).cpu().eval()
    x = models.example_input(m, input_shape, batch=1)  # float zeros, or token ids for text models
    with models.flop_counter() as fc:
        m(x)
    flops = int(fc.get_total_flops())
    for _ in range(3):
        m(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m(x)
        times.append(time.perf_counter() - t0)
    return {"params": count_params(model), "flops": flops, "latency_ms": 1000 * statistics.median(times)}


class LRSchedule:
    """The learning-rate multiplier as a function of training progress in epochs: warm-up over
    ``optim.warmup_epochs``, then cosine / step / constant.

    Progress is ``epoch + step / steps_this_epoch`` (the trainer calls :meth:`start_epoch` with the epoch's
    length and :meth:`step` after every optimiser step), not a global step count, so a training loader whose
    length changes between epochs (KCD's condensed set) still reaches the end of the schedule on its last
    step. For a fixed length it equals a per-step schedule over ``steps_per_epoch × epochs`` steps: the step
    taken at global step ``s`` uses ``(s + 1) / warm`` during warm-up, then
    ``½ (1 + cos(π (s − warm) / (total − warm)))`` (cosine) or ``gamma ** #(milestones passed)`` (step).
    """

    def __init__(self, opt: torch.optim.Optimizer, optim, epochs: int) -> None:
        self.opt, self.optim, self.epochs = opt, optim, int(epochs)
        self.base = [g["lr"] for g in opt.param_groups]
        self.start_epoch(0, 1)

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.epoch, self.i, self.n = int(epoch), 0, max(1, int(steps))
        self._apply()

    def step(self) -> None:
        self.i += 1
        self._apply()

    def factor(self) -> float:
        """The multiplier of the coming optimiser step."""
        o, pos, one = self.optim, self.epoch + self.i / self.n, 1.0 / self.n
        warm = o.warmup_epochs
        if warm and pos < warm:
            return (pos + one) / warm
        if o.schedule == "cosine":
            p = (pos - warm) / max(one, self.epochs - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))
        if o.schedule == "step":
            return o.gamma ** sum(pos >= m * self.epochs for m in o.milestones)
        return 1.0

    def _apply(self) -> None:
        f = self.factor()
        for g, lr in zip(self.opt.param_groups, self.base, strict=True):
            g["lr"] = lr * f


def _rng_devices(dev: torch.device) -> list[int]:
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


def _add_extra_losses(step: Step, scheme, extra: dict[str, torch.Tensor]) -> None:
    """Add a scheme's extra (already weighted) loss terms: each to ``"loss"``, and to ``"distill"`` unless it
    trains a helper model (``scheme.helper_loss_keys``); logged under its own key."""
    losses = step.losses
    for k, v in extra.items():
        if k in losses:
            raise ConfigError(f"scheme {scheme.name!r}: its loss term {k!r} clashes with a recipe term's key")
        losses[k] = v
        if k not in scheme.helper_loss_keys:
            losses["distill"] = losses["distill"] + v
        losses["loss"] = losses["loss"] + v


class Trainer:
    """Trains students on one dataset, with one teacher source, for many recipes.

    ``teacher`` is the frozen teacher model (needed to build connectors); ``teacher_source`` supplies its
    outputs per batch (online or cached). ``on_epoch(info)`` receives a dict after each epoch (progress
    display). ``cache_dir`` is where schemes and losses may cache trained helpers (TAKD's assistant, BAN's
    generations), keyed by their config. ``teacher_data`` (default ``data``) is what the teacher trained on:
    extra teachers a loss asks for (:meth:`helper_teacher`, e.g. CiT's involution teacher) train on it too.

    The loop keeps loss sums on the device (one host sync per epoch) and checks for divergence every
    ``check_every`` steps and at each epoch's end (default: every step on the CPU, where a check costs
    nothing; every 50 steps on an accelerator, where each check waits for the device). ``threads``: torch CPU
    threads (default: the cores this process may use).
    """

    def __init__(
        self,
        data,
        *,
        teacher: nn.Module | None = None,
        teacher_source=None,
        device: str | torch.device = "auto",
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        cache_dir: str | Path | None = None,
        teacher_data=None,
        check_every: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.data = data
        self.teacher_data = teacher_data if teacher_data is not None else data
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = resolve_device(device)
        self.teacher = teacher
        if teacher is not None:
            teacher.to(self.device).eval().requires_grad_(False)
        if teacher_source is None and teacher is not None:
            teacher_source = OnlineTeacher(teacher)
        self.teacher_source = teacher_source
        self.on_epoch = on_epoch
        if check_every is not None and check_every < 1:
            raise ConfigError(f"check_every must be >= 1, got {check_every}")
        self.check_every = int(check_every or (1 if self.device.type == "cpu" else 50))
        self.threads = limit_threads(threads)

    def fit(
        self,
        recipe: Recipe,
        *,
        epochs: int | None = None,
        report: Callable[[int, float], bool] | None = None,
        measure: bool = True,
        eval_split: str = "val",
    ) -> FitResult:
        epochs = int(epochs or recipe.optim.epochs)
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        dev = self.device
        recipe = check_recipe(recipe)
        if recipe.terms and self.teacher is None:
            raise ConfigError("the recipe has distillation terms but the trainer has no teacher")
        scheme = schemes.create(recipe.scheme.name, **recipe.scheme.params)
        torch.manual_seed(recipe.seed)
        student = models.from_spec(recipe.student, self.data.num_classes, self.data.input_shape[0])
        # student.init (e.g. Net2Net from the teacher) and student.quantize, applied here and nowhere else
        calib = self._calibration_inputs() if models.needs_calibration(recipe.student) else None
        student = models.prepare_student(student, recipe.student, teacher=self.teacher, calib=calib)
        context = {"num_samples": len(self.data.train), "num_classes": self.data.num_classes,
                   "input_shape": tuple(self.data.input_shape), "cache_dir": self.cache_dir,
                   "batch_size": recipe.optim.batch_size,
                   "helper_teacher": partial(self.helper_teacher, default_epochs=epochs)}
        distiller = Distiller.from_recipe(recipe, self.teacher if recipe.terms else None, student,
                                          input_shape=self.data.input_shape, context=context).to(dev)
        # helpers a scheme trains or loads in setup (TAKD's assistant, BAN's generations, DML's peers) draw
        # from a forked RNG: the student's run is the same whether they were trained or loaded from cache
        with torch.random.fork_rng(devices=_rng_devices(dev)):
            scheme.setup(distiller=distiller, recipe=recipe, data=self.data, device=dev, epochs=epochs,
                         teacher=self.teacher, teacher_source=self.teacher_source, cache_dir=self.cache_dir,
                         trainer=self)
        base_loader = self._train_loader(recipe.optim.batch_size, recipe.seed)
        for t in distiller.terms:  # optional per-method stage before training (e.g. FT's paraphraser)
            t.loss.pretrain(teacher_model=self.teacher, loader=base_loader, device=dev, epochs=epochs)
        train_loader = scheme.wrap_loader(base_loader)
        opt = scheme.build_optimizer(distiller, recipe.optim)
        model = scheme.inference_model(distiller.inference_model())
        dtype = resolve_precision(recipe.optim.precision, dev)
        backward = self._backward_step(scheme, make_scaler(dev, dtype))
        if dev.type == "cuda":
            distiller.to(memory_format=torch.channels_last)
        if recipe.optim.compile:
            student.compile()  # the student's forward (logit-level recipes); forward_outputs stays eager
        eval_loader = self.data.loader(eval_split, 512, shuffle=False, device=self._data_device())
        sched = LRSchedule(opt, recipe.optim, epochs)
        keys = [t.key for t in distiller.terms]
        history: list[dict[str, float]] = []
        stopped = False
        t_start = time.perf_counter()
        epoch_times: list[float] = []
        for epoch in range(epochs):
            t0 = time.perf_counter()
            distiller.train()
            distiller.set_progress(epoch, epochs)
            scales = scheme.term_scales(epoch, epochs, keys)
            steps_per_epoch = len(train_loader)  # may change between epochs (KCD's condensed set)
            scheme.on_epoch_start(epoch, epochs, steps_per_epoch)
            sched.start_epoch(epoch, steps_per_epoch)
            active = any(t.weight * scales.get(t.key, 1.0) != 0 for t in distiller.terms)
            sums: dict[str, torch.Tensor] = {}
            first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # first step with a non-finite loss
            n_batches = 0
            for step, (x, y, idx) in enumerate(train_loader):
                x, y = channels_last(x.to(dev, non_blocking=True), dev), y.to(dev, non_blocking=True)
                with autocast(dev, dtype):
                    t_out = None
                    if active:
                        t_out = scheme.teacher_outputs(x, idx, partial(self._source_outputs, x, idx,
                                                                       distiller.needs_feats))
                    out = distiller.step(x, y, teacher_outputs=t_out, index=idx, term_scales=scales,
                                         full_outputs=scheme.student_outputs)
                    _add_extra_losses(out, scheme, scheme.extra_losses(x, y, idx, out))
                losses = out.losses
                bad = ~torch.isfinite(losses["loss"].detach())
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
                if (step + 1) % self.check_every == 0:
                    self._check_finite(first_bad, epoch, losses)  # a host sync: only every check_every steps
                backward(losses, opt)
                sched.step()
                scheme.after_step()
                for k, v in losses.items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
                n_batches += 1
            self._check_finite(first_bad, epoch, losses if n_batches else {})
            scheme.on_epoch_end(epoch, epochs)
            means = {f"train_{k}": float(v) / max(1, n_batches) for k, v in sums.items()}  # the epoch's sync
            train_time = time.perf_counter() - t0
            epoch_times.append(train_time)
            acc = evaluate(model, eval_loader, dev, dtype)
            row = {"epoch": epoch, f"{eval_split}_acc": acc, "epoch_time_s": train_time, **means}
            history.append(row)
            if self.on_epoch is not None:
                self.on_epoch({**row, "epochs": epochs})
            if report is not None and report(epoch, acc):
                stopped = True
                break
        distiller.finish()  # terms fold what they trained for the student into it (e.g. an encoded embedding)
        metrics: dict[str, Any] = {
            f"{eval_split}_acc": history[-1][f"{eval_split}_acc"],
            f"best_{eval_split}_acc": max(h[f"{eval_split}_acc"] for h in history),
            "epochs": len(history),
            "train_time_s": time.perf_counter() - t_start,
            "epoch_time_s": statistics.mean(epoch_times),
            "seed": recipe.seed,
        }
        if measure:
            metrics.update(measure_model(model, self.data.input_shape))
        else:
            metrics["params"] = count_params(model)
        return FitResult(model, distiller, metrics, history, stopped, scheme)

    def sibling(self, teacher: nn.Module | None, teacher_source: TeacherSource | None = None) -> Trainer:
        """A trainer over the same data, device and cache folder with another teacher (schemes train their
        helpers with it: TAKD's assistant, BAN's generations)."""
        return Trainer(self.data, teacher=teacher, teacher_source=teacher_source, device=self.device,
                       cache_dir=self.cache_dir, teacher_data=self.teacher_data)

    def helper_teacher(self, name: str, kwargs: dict[str, Any] | None = None, epochs: int | None = None, *,
                       default_epochs: int = 15) -> nn.Module:
        """A frozen extra teacher for a loss (e.g. CiT's involution teacher): zoo model ``name(**kwargs)``
        trained with CE alone on ``teacher_data`` for ``epochs`` (default: the current student's) with the
        default optimiser (SGD, cosine, seed 0), once, and cached under ``cache_dir`` keyed by its recipe and
        the data. Runs under a forked RNG, so the student's run is the same whether it was trained or loaded."""
        from ..recipe import OptimSpec, StudentSpec
        from ..schemes._helpers import recipe_identity, trained_helper

        n = int(epochs or default_epochs)
        recipe = Recipe(student=StudentSpec(name=name, kwargs=dict(kwargs or {})), ce_weight=1.0, terms=[],
                        optim=OptimSpec(epochs=n), seed=0)
        check_recipe(recipe, source=f"helper teacher {name!r}")
        data = self.teacher_data
        trainer = Trainer(data, device=self.device, cache_dir=self.cache_dir)
        key_obj = {"helper_teacher": recipe_identity(recipe), "data": data.info}
        with torch.random.fork_rng(devices=_rng_devices(self.device)):  # CE only: no teacher outputs asked for
            model, _ = trained_helper("helper-teacher", recipe, key_obj, trainer=trainer, teacher=None,
                                      teacher_source=OnlineTeacher(None), epochs=n, events=[])
        return model

    def source_for(self, model: nn.Module, key: str) -> TeacherSource:
        """A teacher source over a frozen helper model: its outputs cached by sample index under
        ``key`` when the training transform is deterministic, else computed online."""
        return make_teacher_source("auto", model, self.data, self.device, cache_dir=self.cache_dir, key=key)

    def _calibration_inputs(self, n: int = 256) -> torch.Tensor:
        """The first ``n`` training inputs (eval transform): statistics for a student's inserted layers and
        quantizer ranges."""
        x, _, _ = next(iter(self.data.loader("train_eval", n, shuffle=False)))
        return x

    @staticmethod
    def _check_finite(first_bad: torch.Tensor, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        step = int(first_bad)
        if step >= 0:
            raise TrainingDiverged(epoch, step, {k: float(v.detach()) for k, v in losses.items()})

    @staticmethod
    def _backward_step(scheme, scaler) -> Callable[[dict[str, torch.Tensor], torch.optim.Optimizer], None]:
        """The scheme's backward step, or the standard one through ``scaler`` (fp16)."""
        if scaler is None:
            return scheme.backward_step
        if type(scheme).backward_step is not schemes.Scheme.backward_step:
            raise ConfigError(f"optim.precision: fp16 needs loss scaling, which scheme {scheme.name!r} (its own "
                              "backward step) does not support; use bf16 or fp32")
        return scaled_backward_step(scaler)

    def _data_device(self) -> torch.device | None:
        """Where in-memory datasets are held while training: on the accelerator (moved once per loader;
        crop/flip then run there too), else where they are."""
        return self.device if self.device.type == "cuda" else None

    def _loader_workers(self) -> int:
        """DataLoader worker processes for file datasets (pinned batches): up to 4 on an accelerator, none on
        the CPU, where workers would take cores from training. In-memory datasets ignore it."""
        return min(4, available_cores() - 1) if self.device.type == "cuda" else 0

    def _train_loader(self, batch_size: int, seed: int):
        """The training batches: the teacher source's (the views cache serves its stored views), else the data's."""
        kw = {"device": self._data_device(), "num_workers": self._loader_workers()}
        if self.teacher_source is None:
            return self.data.loader("train", batch_size, shuffle=True, seed=seed, **kw)
        return self.teacher_source.train_loader(self.data, batch_size, seed, **kw)

    def _source_outputs(self, x: torch.Tensor, idx: torch.Tensor, needs_feats: bool):
        """The teacher source's outputs for a batch (``None`` without a source: the distiller runs its teacher)."""
        if self.teacher_source is None:
            return None
        return self.teacher_source.batch(x, idx, needs_feats=needs_feats)

    def test(self, model: nn.Module) -> float:
        """Accuracy on the test split; only for reporting a finished recipe, never for selection."""
        return evaluate(model, self.data.loader("test", 512, shuffle=False), self.device)
