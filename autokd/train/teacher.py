"""Obtain the teacher: load a checkpoint, or train it once and store it keyed by its configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import atomic_write
from ..fingerprint import config_hash, model_fingerprint
from ..locks import file_lock

__all__ = ["obtain_teacher", "load_checkpoint"]


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
    ``study_dir/teacher.pt`` keyed by a hash of its config and data split (a re-run with the same config reuses
    it; a changed config keeps the old file as ``teacher-<hash>.pt``). Several processes starting together
    train it once: the first holds ``teacher.pt.lock`` while training, the others wait and then load it.
    ``info["fingerprint"]`` is the hash of the teacher's weights (what caches of its outputs are keyed by).
    With ``spec.nasty`` the teacher is trained as a nasty teacher (see :mod:`autokd.train.nasty`)."""
    from .. import models
    from ..recipe import OptimSpec, Recipe, StudentSpec
    from .trainer import Trainer, count_params

    model = models.from_spec(spec, data.num_classes, data.input_shape[0])
    if spec.checkpoint:
        blob = load_checkpoint(model, Path(spec.checkpoint))
        info = {"name": spec.name, "kwargs": spec.kwargs, "source": str(spec.checkpoint),
                "params": count_params(model), **(blob.get("metrics") or {}), "fingerprint": model_fingerprint(model)}
        model.to(device).eval()
        return model, info
    identity = spec.model_dump(mode="json")
    if identity.get("nasty") is None:  # a normal teacher keeps the hash it had before the nasty option existed
        identity.pop("nasty", None)
    key_obj = {"teacher": identity, "data": data.info, "v": 1}
    key = config_hash(key_obj)
    path = Path(study_dir) / "teacher.pt"

    def waiting() -> None:
        log(f"teacher: another process is training it; waiting for {path}")

    with file_lock(path.with_name(path.name + ".lock"), on_wait=waiting):
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{path}: unreadable stored teacher ({str(e).splitlines()[0]}); "
                                      "move it away") from None
            if blob.get("config_hash") == key:
                model.load_state_dict(blob["state_dict"])
                log(f"teacher: reusing {path} (config hash {key})")
                info = {**blob.get("metrics", {}), "hash": key, "source": str(path),
                        "fingerprint": model_fingerprint(model)}
                return model.to(device).eval().requires_grad_(False), info
            old = blob.get("config_hash", "unknown")
            backup = path.with_name(f"teacher-{old}.pt")
            path.replace(backup)  # never lose a stored teacher
            log(f"teacher: config changed; previous teacher kept as {backup}")
        recipe = Recipe(
            student=StudentSpec(name=spec.name, kwargs=spec.kwargs),
            ce_weight=1.0,
            terms=[],
            optim=OptimSpec(lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size,
                            weight_decay=spec.weight_decay),
            seed=spec.seed,
        )
        log(f"teacher: training {recipe.student.label()} for {spec.epochs} epochs (stored once as {path})")
        trainer, extra = Trainer(data, device=device, on_epoch=on_epoch), {}
        if spec.nasty is not None:  # trained against a normally trained adversarial network
            from .nasty import nasty_trainer

            trainer, recipe, extra = nasty_trainer(spec, recipe, data, device, log=log, on_epoch=on_epoch)
        res = trainer.fit(recipe, measure=False)
        test_acc = trainer.test(res.student)
        metrics = {"name": spec.name, "kwargs": spec.kwargs, "val_acc": res.metrics["val_acc"],
                   "test_acc": test_acc, "params": res.metrics["params"], "epochs": spec.epochs, **extra}
        with atomic_write(path) as tmp:
            torch.save({"state_dict": res.student.state_dict(), "config_hash": key, "config": key_obj,
                        "metrics": metrics}, tmp)
    log(f"teacher: val acc {metrics['val_acc']:.4f}, test acc {test_acc:.4f}, saved {path}")
    teacher = res.student
    teacher.arch_name = spec.name
    info = {**metrics, "hash": key, "source": str(path), "fingerprint": model_fingerprint(teacher)}
    return teacher.to(device).eval().requires_grad_(False), info
