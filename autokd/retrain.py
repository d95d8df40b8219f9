"""The multi-seed retrain: a finished recipe trained for several seeds beside its like-for-like baselines
(CE-only and plain KD with the same student, optimiser and schedule), evaluated on the test split.

A searched recipe's optimiser was tuned together with its losses: a KD loss at temperature T scales its
gradient by about T^2, so the learning rate that suits the recipe can leave CE-only and plain KD far from
converged in the same epochs -- and the like-for-like gain then measures the optimiser, not the distillation.
So when the study's space has a default optimiser that differs from the recipe's, both baselines are also
trained with it (same student, same epochs; runs ``kd_default_optim`` and ``ce_only_default_optim``), and the
evidence reports the recipe's gain over the stronger of each pair (:mod:`autokd.report.data.evidence`).

``final/results.json`` holds, per run (``recipe``, ``kd``, ``ce_only``): test and validation accuracy per
seed, their summary, the teacher-student fidelity on the test split (Stanton et al., "Does Knowledge
Distillation Really Work?", NeurIPS 2021: top-1 agreement and predictive KL(p_t || p_s) at T = 1), and a
``comparison`` section with the PAIRED difference recipe - baseline (seed i of both runs paired, Student t with
n - 1 degrees of freedom). The report and ``autokd train`` print these same numbers.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import stats
from .files import atomic_dir, atomic_write_text
from .recipe import OptimSpec, Recipe, TermSpec

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = ["retrain", "FinalResult", "baselines_for", "with_optimiser", "RESULTS_VERSION", "BASELINE_NAMES"]

RESULTS_VERSION = 3  # 3: the baselines also at the space's default optimiser
#: run label -> how the report and the CLI name it
BASELINE_NAMES = {"kd": "KD", "ce_only": "CE-only", "kd_default_optim": "KD (default optimiser)",
                  "ce_only_default_optim": "CE-only (default optimiser)"}


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


@dataclass
class FinalResult:
    rows: dict[str, list[float]] = field(default_factory=dict)  # label -> test accuracies per seed
    val: dict[str, list[float]] = field(default_factory=dict)
    agreement: dict[str, list[float]] = field(default_factory=dict)  # label -> top-1 agreement per seed
    kl: dict[str, list[float]] = field(default_factory=dict)  # label -> predictive KL(p_t || p_s) per seed
    recipes: dict[str, dict] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # images per split
    description: str = ""
    path: Path | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: _summary(v) for k, v in self.rows.items()}

    def comparison(self, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
        """``{"recipe_vs_kd": ..., "recipe_vs_ce_only": ...}``: :func:`autokd.stats.paired_difference` of the
        test accuracies (in accuracy units, not points)."""
        out = {}
        if "recipe" not in self.rows:
            return out
        for label, name in BASELINE_NAMES.items():
            if label in self.rows and len(self.rows[label]) == len(self.rows["recipe"]):
                out[f"recipe_vs_{label}"] = stats.paired_difference(self.rows["recipe"], self.rows[label],
                                                                    confidence=confidence, baseline=name)
        return out

    def fidelity(self) -> dict[str, dict[str, Any]]:
        return {label: {"agreement": self.agreement[label], "kl": self.kl.get(label, []),
                        "agreement_summary": _summary(self.agreement[label]),
                        "kl_summary": _summary(self.kl[label]) if self.kl.get(label) else None}
                for label in self.agreement if self.agreement[label]}

    def to_json(self) -> dict[str, Any]:
        return {"version": RESULTS_VERSION, "description": self.description, "seeds": self.seeds,
                "sizes": self.sizes, "test_acc": self.rows, "val_acc": self.val, "summary": self.summary(),
                "comparison": self.comparison(), "fidelity": self.fidelity(), "recipes": self.recipes}


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


@torch.no_grad()
def _test_logits(model: torch.nn.Module, loader, device: torch.device) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x.to(device)).float().cpu() for x, _, _ in loader])
    model.train(was_training)
    return out


def with_optimiser(recipe: Recipe, optim: OptimSpec) -> Recipe:
    """``recipe`` trained with ``optim``'s optimiser and schedule, for the recipe's epochs and with its
    precision and compile settings (how it runs, not what it learns)."""
    r = recipe.model_copy(deep=True)
    r.optim = optim.model_copy(update={"epochs": recipe.optim.epochs, "precision": recipe.optim.precision,
                                       "compile": recipe.optim.compile})
    return r


def retrain(ctx: StudyContext, recipe: Recipe, *, seeds: int = 5, epochs: int | None = None, out_dir: Path | None = None,
            log=print, baselines: bool = True, default_optim: OptimSpec | None = None) -> FinalResult:
    """Train ``recipe`` (and the CE-only / KD baselines, same student and optimiser; again with
    ``default_optim``, the space's default optimiser, when it differs from the recipe's) for each seed; the
    test split is evaluated only here, on finished students (accuracy, and fidelity to the teacher when there
    is one). ``out_dir`` (checkpoints + ``results.json``) is built in a temporary folder and swapped in whole
    at the end: an interrupted retrain leaves the previous ``out_dir`` untouched."""
    kw = {"seeds": seeds, "epochs": epochs, "log": log, "baselines": baselines, "default_optim": default_optim}
    if out_dir is None:
        return _retrain(ctx, recipe, out_dir=None, **kw)
    with atomic_dir(out_dir) as tmp:
        res = _retrain(ctx, recipe, out_dir=tmp, **kw)
    res.path = Path(out_dir) / "results.json"
    return res


def _retrain(ctx: StudyContext, recipe: Recipe, *, seeds: int, epochs: int | None, out_dir: Path | None,
             log, baselines: bool, default_optim: OptimSpec | None) -> FinalResult:
    if epochs:
        recipe = recipe.model_copy(deep=True)
        recipe.optim.epochs = epochs
    runs = {"recipe": recipe}
    if baselines:
        cfg = ctx.cfg.search
        kw = {"temperature": cfg.baseline_temperature, "kd_weight": cfg.baseline_kd_weight,
              "ce_weight": cfg.baseline_ce_weight}
        runs.update(baselines_for(recipe, **kw))
        if default_optim is not None and with_optimiser(recipe, default_optim).optim != recipe.optim:
            own = baselines_for(with_optimiser(recipe, default_optim), **kw)
            runs.update({f"{label}_default_optim": r for label, r in own.items()})
    res = FinalResult(seeds=list(range(seeds)), description=recipe.describe(), sizes=dict(ctx.data.sizes))
    test_loader = ctx.data.loader("test", 512, shuffle=False)
    labels = torch.cat([y for _, y, _ in test_loader])
    teacher_logits = _test_logits(ctx.teacher, test_loader, ctx.device) if ctx.teacher is not None else None
    total = len(runs) * seeds
    for i, (label, r) in enumerate(runs.items()):
        res.recipes[label] = r.to_dict()
        for k, seed in enumerate(res.seeds):
            fit = ctx.trainer.fit(r.with_seed(seed), measure=False)
            logits = _test_logits(fit.student, test_loader, ctx.device)
            test = float((logits.argmax(1) == labels).float().mean())
            res.rows.setdefault(label, []).append(test)
            res.val.setdefault(label, []).append(fit.metrics["val_acc"])
            fid = ""
            if teacher_logits is not None:
                agree = stats.top1_agreement(logits.numpy(), teacher_logits.numpy())
                kl = stats.predictive_kl(teacher_logits.numpy(), logits.numpy())
                res.agreement.setdefault(label, []).append(agree)
                res.kl.setdefault(label, []).append(kl)
                fid = f" agreement {agree:.4f} KL {kl:.4f}"
            log(f"final [{i * seeds + k + 1}/{total}] {label:8s} seed {k + 1}/{seeds}: "
                f"val {fit.metrics['val_acc']:.4f} test {test:.4f}{fid}")
            if out_dir is not None and label == "recipe":
                out_dir.mkdir(parents=True, exist_ok=True)
                # the exported model (SimKD: student + projector + teacher classifier) ...
                torch.save(fit.student.state_dict(), out_dir / f"student_seed{seed}.pt")
                # ... and the terms' own trained state (connectors, CTKD's temperature, CRD's memory bank)
                if len(fit.distiller.terms):
                    torch.save(fit.distiller.terms.state_dict(), out_dir / f"terms_seed{seed}.pt")
    if out_dir is not None:
        res.path = out_dir / "results.json"
        atomic_write_text(res.path, json.dumps(res.to_json(), indent=1))
    return res
