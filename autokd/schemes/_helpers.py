"""Shared pieces of the schemes: soft-target KL, helper models trained once and cached like the teacher,
fingerprints for cache keys, and re-fetching samples for a fresh augmented view."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..errors import ConfigError
from ..files import atomic_write
from ..fingerprint import config_hash, model_fingerprint
from ..locks import build_once
from ..outputs import Outputs

__all__ = ["cached_module", "soft_kl", "model_fingerprint", "recipe_identity", "require_logit_terms", "MeanLogits", "fetch_batch",
           "trained_helper"]

log = logging.getLogger("autokd.schemes")

#: what a term may need when a scheme replaces the teacher by a logits-only model (assistant, generation)
LOGIT_NEEDS = frozenset({"logits", "index", "input"})


def soft_kl(student_logits: Tensor, target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(softmax(target/T) ‖ softmax(student/T)), summed over classes, batch-mean, × T²."""
    t = float(temperature)
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    log_q = F.log_softmax(target_logits.float() / t, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (t * t)


def recipe_identity(recipe) -> dict[str, Any]:
    """The parts of a recipe that decide a trained model (provenance, timestamps included, are dropped)."""
    return recipe.model_dump(mode="json", exclude={"provenance"})


def require_logit_terms(scheme: str, distiller, what: str) -> None:
    """Raise a one-line ConfigError unless every term of ``distiller`` is logit-level (see ``LOGIT_NEEDS``)."""
    if not len(distiller.terms):
        raise ConfigError(f"scheme {scheme!r} needs at least one distillation term (e.g. kd) in the recipe")
    for t in distiller.terms:
        bad = sorted(set(t.loss.needs) - LOGIT_NEEDS)
        if bad:
            raise ConfigError(
                f"scheme {scheme!r}: term {t.key!r} needs the teacher's {', '.join(bad)}, but {what} replaces "
                f"the teacher at the logit level only; use logit-level terms (needs within "
                f"{', '.join(sorted(LOGIT_NEEDS))})"
            )


class MeanLogits(nn.Module):
    """A frozen ensemble whose logits are the mean of its members' logits (BAN's ensemble teacher)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    def forward_outputs(self, x: Tensor) -> Outputs:
        return Outputs(logits=self.forward(x))


def fetch_batch(dataset, idx: Tensor) -> Tensor:
    """The inputs of samples ``idx`` of ``dataset`` loaded again (a fresh draw of a random train transform)."""
    from ..data.loading import ArrayDataset, IndexedDataset

    base = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    ids = idx.detach().cpu().long()
    if isinstance(base, ArrayDataset) and base.transform is None:
        return base.x[ids]
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in ids.tolist()])


def cached_module(path: Path | None, key: str, fresh: nn.Module, train: Callable[[], tuple[nn.Module, dict[str, Any]]],
                  *, map_location: Any) -> tuple[nn.Module, dict[str, Any] | None]:
    """A model trained once per ``key`` and stored at ``path``: ``fresh`` with the stored weights when ``path``
    holds ``key`` (a corrupt or foreign file is retrained, never trusted), else ``train()``'s ``(model,
    fields stored beside its weights)``, saved atomically. Several processes: one trains, the others wait
    and load (:func:`autokd.locks.build_once`). Returns the model and the stored fields, None when loaded.
    Without a ``path`` it trains on every call."""
    if path is None:
        return train()

    def load(p: Path) -> tuple[nn.Module, None] | None:
        if not p.is_file():
            return None
        try:
            blob = torch.load(p, map_location=map_location, weights_only=True)
            if blob.get("config_hash") != key:
                return None
            fresh.load_state_dict(blob["state_dict"])
        except Exception:  # a corrupt cache entry is retrained, never trusted
            return None
        return fresh, None

    def save(p: Path, value: tuple[nn.Module, dict[str, Any]]) -> None:
        with atomic_write(p) as tmp:
            torch.save({"state_dict": value[0].state_dict(), "config_hash": key, **value[1]}, tmp)

    return build_once(path, load, train, save)


def trained_helper(
    kind: str,
    recipe,
    key_obj: dict[str, Any],
    *,
    trainer,
    teacher: nn.Module | None,
    teacher_source=None,
    epochs: int,
    events: list[str],
) -> tuple[nn.Module, str]:
    """Return ``(model, key)``: a model trained by ``trainer.sibling(teacher).fit(recipe)`` (its scheme may train
    helpers of its own, cached the same way; ``teacher`` may be ``None`` for a recipe without terms whose scheme
    needs no teacher), stored once as ``<trainer.cache_dir>/<kind>-<key>.pt`` where ``key`` hashes ``key_obj``;
    later calls with the same key load it (``torch.load(weights_only=True)``) instead of training. Without a
    cache folder it is trained on every call. ``events`` receives one line per action ("<kind>: trained …" /
    "loaded …")."""
    data, device, cache_dir = trainer.data, trainer.device, trainer.cache_dir
    key = config_hash({**key_obj, "kind": kind, "v": 1})
    path = Path(cache_dir) / f"{kind}-{key}.pt" if cache_dir is not None else None

    def train() -> tuple[nn.Module, dict[str, Any]]:
        source = teacher_source
        if source is None and teacher is not None:
            source = trainer.source_for(teacher, key=f"{kind}-{key}")
        res = trainer.sibling(teacher, source).fit(recipe, epochs=epochs, measure=False)
        trained = res.distiller.student
        trained.arch_name = recipe.student.name
        return trained, {"config": key_obj, "metrics": {"val_acc": res.metrics["val_acc"], "epochs": epochs}}

    fresh = models.from_spec(recipe.student, data.num_classes, data.input_shape[0])
    model, stored = cached_module(path, key, fresh, train, map_location="cpu")
    if stored is None:
        events.append(f"{kind}: loaded {path} (config hash {key})")
        log.info(events[-1])
        return model.to(device).eval().requires_grad_(False), key
    metrics = stored["metrics"]
    events.append(f"{kind}: trained for {epochs} epochs (val acc {metrics['val_acc']:.4f})"
                  + (f", saved {path}" if path is not None else ", not cached (no cache_dir)"))
    log.info(events[-1])
    return model.to(device).eval().requires_grad_(False), key
