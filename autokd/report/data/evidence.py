"""The like-for-like evidence of a study: ``<study dir>/final/results.json`` written by ``autokd train``
(:mod:`autokd.retrain`), read into the rows the report's headline and the CLI print.

Accuracies are shown in points (accuracy × 100). A results file without a ``comparison`` section (written by
an older version) gets one computed here with the same :func:`autokd.stats.paired_difference`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ... import stats

__all__ = ["RUNS", "load_final", "evidence", "train_command"]

#: run label in results.json -> display name (the recipe first)
RUNS = {"recipe": "best recipe", "kd": "plain KD", "ce_only": "CE-only"}
_BASELINE_NAMES = {"kd": "KD", "ce_only": "CE-only"}
IN_STUDY_NOTE = "vs in-study baselines trained with the space's default optimiser (not like-for-like)"


def load_final(path: str | Path | None) -> dict[str, Any] | None:
    """The parsed results file, or None when there is none (or it is not a results file)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / "final" / "results.json" if (p / "final").is_dir() else p / "results.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("test_acc"), dict):
        return None
    data.setdefault("_path", str(p))
    return data


def train_command(study_file: str | Path | None, recipe_path: str | Path | None = None) -> str:
    """The command that writes the missing retrain."""
    recipe = str(recipe_path) if recipe_path else "<study dir>/best_recipe.yaml"
    return f"autokd train {recipe}" + (f" --study {study_file}" if study_file else "")


def _pts(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) of accuracies, in points."""
    return {"mean": 100.0 * statistics.fmean(values),
            "std": 100.0 * statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": [100.0 * v for v in values]}


def _scale(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def evidence(final: dict[str, Any] | None) -> dict[str, Any] | None:
    """Display rows of a results file (None without one).

    ``{"runs": [{label, name, mean, std, n, values (points), agreement, kl (means or None)}],
    "comparisons": [{label, name, mean, low, high, n, verdict} in points], "headline": verdict vs KD,
    "sizes": {split: images}, "test_point": points one test image is worth, "seeds", "description", "recipe",
    "path"}``.
    """
    if not final:
        return None
    test = final.get("test_acc") or {}
    fidelity = final.get("fidelity") or {}
    runs = []
    for label, name in RUNS.items():
        if label not in test or not test[label]:
            continue
        row = {"label": label, "name": name, **_pts([float(x) for x in test[label]]),
               "agreement": None, "kl": None}
        fid = fidelity.get(label) or {}
        if fid.get("agreement"):
            row["agreement"] = sum(fid["agreement"]) / len(fid["agreement"])
        if fid.get("kl"):
            row["kl"] = sum(fid["kl"]) / len(fid["kl"])
        runs.append(row)
    comp = final.get("comparison")
    if not comp and "recipe" in test:
        comp = {f"recipe_vs_{b}": stats.paired_difference(test["recipe"], test[b], baseline=name)
                for b, name in _BASELINE_NAMES.items() if b in test and len(test[b]) == len(test["recipe"])}
    comparisons = []
    for b, name in _BASELINE_NAMES.items():
        c = (comp or {}).get(f"recipe_vs_{b}")
        if not c:
            continue
        comparisons.append({"label": b, "name": name, "mean": _scale(c["mean"]), "low": _scale(c.get("low")),
                            "high": _scale(c.get("high")), "n": c["n"], "confidence": c.get("confidence", 0.95),
                            "verdict": c["verdict"]})
    sizes = {k: int(v) for k, v in (final.get("sizes") or {}).items()}
    test_n = sizes.get("test")
    recipes = final.get("recipes") or {}
    return {"runs": runs, "comparisons": comparisons,
            "headline": next((c["verdict"] for c in comparisons if c["label"] == "kd"), None),
            "sizes": sizes, "test_point": 100.0 / test_n if test_n else None,
            "seeds": final.get("seeds") or [], "description": final.get("description"),
            "recipe": recipes.get("recipe"), "path": final.get("_path")}
