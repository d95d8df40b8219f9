"""The multi-seed retrain: a finished recipe trained for several seeds beside its like-for-like baselines
(CE-only and plain KD with the same student, optimiser and schedule), evaluated on the test split."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .recipe import Recipe, TermSpec

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = ["retrain", "FinalResult", "baselines_for"]


@dataclass
class FinalResult:
    rows: dict[str, list[float]] = field(default_factory=dict)  # label -> test accuracies per seed
    val: dict[str, list[float]] = field(default_factory=dict)
    recipes: dict[str, dict] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    path: Path | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, v in self.rows.items():
            out[k] = {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
        return out


def baselines_for(recipe: Recipe, *, temperature: float = 4.0, kd_weight: float = 0.9,
                  ce_weight: float = 0.1) -> dict[str, Recipe]:
    """CE-only and plain-KD recipes with the same student, optimiser and schedule as ``recipe``."""
    ce = recipe.model_copy(deep=True)
    ce.ce_weight, ce.terms = 1.0, []
    ce.scheme.name, ce.scheme.params = "standard", {}
    kd = recipe.model_copy(deep=True)
    kd.ce_weight = ce_weight
    kd.terms = [TermSpec(loss="kd", weight=kd_weight, params={"temperature": temperature})]
    kd.scheme.name, kd.scheme.params = "standard", {}
    return {"ce_only": ce, "kd": kd}


def retrain(ctx: StudyContext, recipe: Recipe, *, seeds: int = 3, epochs: int | None = None, out_dir: Path | None = None,
            log=print, baselines: bool = True) -> FinalResult:
    """Train ``recipe`` (and the CE-only / KD baselines, same student and optimiser) for each seed; the test
    split is evaluated only here, on finished students."""
    if epochs:
        recipe = recipe.model_copy(deep=True)
        recipe.optim.epochs = epochs
    runs = {"recipe": recipe}
    if baselines:
        cfg = ctx.cfg.search
        runs.update(baselines_for(recipe, temperature=cfg.baseline_temperature, kd_weight=cfg.baseline_kd_weight,
                                  ce_weight=cfg.baseline_ce_weight))
    res = FinalResult(seeds=list(range(seeds)))
    for label, r in runs.items():
        res.recipes[label] = r.to_dict()
        for seed in res.seeds:
            rs = r.with_seed(seed)
            fit = ctx.trainer.fit(rs, measure=False)
            test = ctx.trainer.test(fit.student)
            res.rows.setdefault(label, []).append(test)
            res.val.setdefault(label, []).append(fit.metrics["val_acc"])
            log(f"final: {label:8s} seed {seed}: val {fit.metrics['val_acc']:.4f} test {test:.4f}")
            if out_dir is not None and label == "recipe":
                out_dir.mkdir(parents=True, exist_ok=True)
                # the exported model (SimKD: student + projector + teacher classifier) ...
                torch.save(fit.student.state_dict(), out_dir / f"student_seed{seed}.pt")
                # ... and the terms' own trained state (connectors, CTKD's temperature, CRD's memory bank)
                if len(fit.distiller.terms):
                    torch.save(fit.distiller.terms.state_dict(), out_dir / f"terms_seed{seed}.pt")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        res.path = out_dir / "results.json"
        payload: dict[str, Any] = {"seeds": res.seeds, "test_acc": res.rows, "val_acc": res.val,
                                   "summary": res.summary(), "recipes": res.recipes}
        res.path.write_text(json.dumps(payload, indent=1))
    return res
