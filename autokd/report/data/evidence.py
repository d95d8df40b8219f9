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

__all__ = ["RUNS", "load_final", "evidence", "train_command", "stronger_note"]

#: run label in results.json -> display name (the recipe first)
RUNS = {"recipe": "best recipe", "kd": "plain KD", "kd_default_optim": "plain KD, space's default optimiser",
        "ce_only": "CE-only", "ce_only_default_optim": "CE-only, space's default optimiser"}
_BASELINE_NAMES = {"kd": "KD", "kd_default_optim": "KD (default optimiser)", "ce_only": "CE-only",
                   "ce_only_default_optim": "CE-only (default optimiser)"}
#: a baseline -> its twin trained with the study space's default optimiser (see autokd.retrain)
_DEFAULT_OPTIM_TWIN = {"kd": "kd_default_optim", "ce_only": "ce_only_default_optim"}
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
    "comparisons": [{label, name, mean, low, high, n, verdict} in points], "headline": verdict vs KD (vs the
    stronger KD: see ``stronger``), "stronger": [{baseline, twin, like_for_like, default_optim (mean test
    points of each), gain (the comparison with the stronger one)}] for each baseline whose twin trained with the
    space's default optimiser scored higher, "sizes": {split: images}, "test_point": points one test image is
    worth, "seeds", "description", "recipe", "path"}``.

    The recipe's optimiser was tuned with its losses; a baseline that does better with the space's default
    optimiser was undertrained with the recipe's, and the like-for-like gain then overstates what the
    distillation adds. The headline is therefore the gain over the stronger of the two KD runs.
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
    by_label = {c["label"]: c for c in comparisons}
    means = {r["label"]: r["mean"] for r in runs}
    stronger = [{"baseline": b, "twin": twin, "like_for_like": means[b], "default_optim": means[twin],
                 "gain": by_label[twin]}
                for b, twin in _DEFAULT_OPTIM_TWIN.items()
                if b in means and twin in means and twin in by_label and means[twin] > means[b]]
    kd = next((x["gain"] for x in stronger if x["baseline"] == "kd"), by_label.get("kd"))
    sizes = {k: int(v) for k, v in (final.get("sizes") or {}).items()}
    test_n = sizes.get("test")
    recipes = final.get("recipes") or {}
    return {"runs": runs, "comparisons": comparisons, "stronger": stronger,
            "headline": kd["verdict"] if kd else None,
            "sizes": sizes, "test_point": 100.0 / test_n if test_n else None,
            "seeds": final.get("seeds") or [], "description": final.get("description"),
            "recipe": recipes.get("recipe"), "path": final.get("_path")}


def stronger_note(x: dict[str, Any]) -> str:
    """One line for an entry of ``evidence(...)["stronger"]``: the baseline was undertrained with the
    recipe's optimiser, and the gain to judge the recipe by."""
    g = x["gain"]
    name = _BASELINE_NAMES[x["baseline"]]
    ci = f" [{g['low']:+.2f}, {g['high']:+.2f}]" if g.get("low") is not None else ""
    return (f"{name} with the recipe's optimiser ({x['like_for_like']:.2f} %) is undertrained: with the search "
            f"space's default optimiser it reaches {x['default_optim']:.2f} %. Judge the recipe by its gain over "
            f"that stronger {name}: {g['mean']:+.2f} points{ci} ({g['verdict']}).")
