"""Obtain the teacher (checkpoint or train-once-and-cache) and supply its outputs (online or cached)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..outputs import Outputs

__all__ = ["TeacherSource", "OnlineTeacher", "CachedTeacher", "make_teacher_source", "obtain_teacher", "config_hash"]


class TeacherSource:
    """Supplies the teacher's :class:`Outputs` for a training batch (``x`` and its sample indices)."""

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        raise NotImplementedError


class OnlineTeacher(TeacherSource):
    """Runs the (frozen, eval-mode) teacher on every batch."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        self.model.eval()
        if needs_feats:
            return self.model.forward_outputs(x).detach()
        return Outputs(logits=self.model(x)).detach()


class CachedTeacher(TeacherSource):
    """Teacher outputs computed once over the training split and looked up by sample index.

    Valid only when the training transform is deterministic (``DataBundle.deterministic_train``): then the
    cached outputs equal what the online teacher would compute on the same batch. Logits (and embeddings)
    are cached eagerly; stage features only on first request. ``cache_dir`` persists them across processes.
    """

    def __init__(self, model: nn.Module, data, device: torch.device, cache_dir: Path | None = None,
                 key: str = "") -> None:
        if not data.deterministic_train:
            raise ConfigError(
                f"teacher_cache: cached teacher outputs need a deterministic training transform; dataset "
                f"{data.name!r} augments its training data — use teacher_cache: online (or auto)"
            )
        self.model, self.data, self.device = model, data, device
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.key = key
        self._store: dict[bool, Outputs] = {}

    def _path(self, feats: bool) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"teacher_outputs_{self.key}_{'feats' if feats else 'logits'}.pt"

    @torch.no_grad()
    def _compute(self, feats: bool) -> Outputs:
        path = self._path(feats)
        if path is not None and path.is_file():
            try:
                d = torch.load(path, map_location=self.device, weights_only=True)
                return Outputs(d["logits"], list(d["feats"]), list(d["preacts"]), d["embedding"])
            except Exception:  # a corrupt cache is recomputed, never trusted
                pass
        self.model.eval()
        parts: list[Outputs] = []
        n = len(self.data.train_eval)
        for x, _, _ in self.data.loader("train_eval", 512, shuffle=False):
            x = x.to(self.device)
            parts.append(self.model.forward_outputs(x).detach() if feats else _logits_and_embedding(self.model, x))
        out = Outputs.cat(parts)
        assert out.logits.shape[0] == n
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"logits": out.logits, "feats": out.feats, "preacts": out.preacts,
                        "embedding": out.embedding}, tmp)
            tmp.replace(path)
        return out

    def batch(self, x: Tensor, idx: Tensor, *, needs_feats: bool = False) -> Outputs:
        if needs_feats not in self._store:
            self._store[needs_feats] = self._compute(needs_feats)
        return self._store[needs_feats].index(idx.to(self._store[needs_feats].logits.device))


def _logits_and_embedding(model: nn.Module, x: Tensor) -> Outputs:
    return Outputs(logits=model(x))


def make_teacher_source(mode: str, model: nn.Module, data, device, cache_dir=None, key="") -> TeacherSource:
    """``mode``: ``online`` | ``cached`` | ``auto`` (cached when the training transform is deterministic)."""
    if mode not in ("online", "cached", "auto"):
        raise ConfigError(f"teacher_cache must be one of auto, cached, online; got {mode!r}")
    if mode == "online" or (mode == "auto" and not data.deterministic_train):
        return OnlineTeacher(model)
    return CachedTeacher(model, data, device, cache_dir=cache_dir, key=key)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_checkpoint(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load weights with ``torch.load(weights_only=True)``; accepts a raw state dict or ``{"state_dict": ...}``."""
    if not path.is_file():
        raise CheckpointError(f"teacher.checkpoint: file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"teacher.checkpoint: cannot read {path}: {str(e).splitlines()[0]}") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"teacher.checkpoint: {path} holds no state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
        raise CheckpointError(
            f"teacher.checkpoint: {path} does not fit architecture {getattr(model, 'arch_name', type(model).__name__)}"
            f" ({detail[:300]})"
        ) from None
    return blob if isinstance(blob, dict) else {}


def obtain_teacher(spec, data, study_dir: Path, device: torch.device, log=print, on_epoch=None):
    """Return ``(teacher, info)``: from ``spec.checkpoint``, or trained once and stored as
    ``study_dir/teacher.pt`` keyed by a hash of its config (a re-run with the same config reuses it)."""
    from .. import models
    from ..recipe import OptimSpec, Recipe, StudentSpec
    from .trainer import Trainer, count_params

    model = models.create(spec.name, data.num_classes, in_channels=data.input_shape[0], **spec.kwargs)
    model.arch_name = spec.name
    if spec.checkpoint:
        blob = load_checkpoint(model, Path(spec.checkpoint))
        info = {"name": spec.name, "kwargs": spec.kwargs, "source": str(spec.checkpoint),
                "params": count_params(model), **(blob.get("metrics") or {})}
        model.to(device).eval()
        return model, info
    key_obj = {"teacher": spec.model_dump(mode="json"), "data": data.info, "v": 1}
    key = config_hash(key_obj)
    path = Path(study_dir) / "teacher.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("config_hash") == key:
                model.load_state_dict(blob["state_dict"])
                log(f"teacher: reusing {path} (config hash {key})")
                return model.to(device).eval(), {**blob.get("metrics", {}), "hash": key, "source": str(path)}
            old = blob.get("config_hash", "unknown")
            backup = path.with_name(f"teacher-{old}.pt")
            path.replace(backup)  # never lose a stored teacher
            log(f"teacher: config changed; previous teacher kept as {backup}")
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable stored teacher ({str(e).splitlines()[0]}); move it away") from None
    recipe = Recipe(
        student=StudentSpec(name=spec.name, kwargs=spec.kwargs),
        ce_weight=1.0,
        terms=[],
        optim=OptimSpec(lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, weight_decay=spec.weight_decay),
        seed=spec.seed,
    )
    log(f"teacher: training {recipe.student.label()} for {spec.epochs} epochs (stored once as {path})")
    trainer = Trainer(data, device=device, on_epoch=on_epoch)
    res = trainer.fit(recipe, measure=False)
    test_acc = trainer.test(res.student)
    metrics = {"name": spec.name, "kwargs": spec.kwargs, "val_acc": res.metrics["val_acc"],
               "test_acc": test_acc, "params": res.metrics["params"], "epochs": spec.epochs}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": res.student.state_dict(), "config_hash": key, "config": key_obj,
                "metrics": metrics}, tmp)
    tmp.replace(path)
    log(f"teacher: val acc {metrics['val_acc']:.4f}, test acc {test_acc:.4f}, saved {path}")
    teacher = res.student
    teacher.arch_name = spec.name
    return teacher.to(device).eval().requires_grad_(False), {**metrics, "hash": key, "source": str(path)}
