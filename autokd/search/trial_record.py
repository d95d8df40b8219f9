"""The one owner of what autokd stores on Optuna trials and studies: every user-attribute key, typed writers
(used by the objective and the backends) and typed readers (used by samplers, export, progress, report).

Nothing else in autokd spells an attribute key. Readers take anything with ``user_attrs`` (a
``FrozenTrial``, a live ``Trial``), so they work on any storage and on studies written by older versions
(the CE-only baseline used to be tagged ``"ce"``; the recipe used to be stored as a nested mapping).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..recipe import Recipe, StudentSpec
from .batched_writes import set_user_attrs

__all__ = [
    "Baseline",
    "Key",
    "baseline_attrs",
    "baseline_of",
    "baseline_student_of",
    "is_baseline",
    "is_diverged",
    "recipe_of",
    "recipe_dict_of",
    "prune_reason_of",
    "fail_reason_of",
    "proxy_score_of",
    "metric_of",
    "description_of",
    "student_of",
    "diswot_rank_of",
    "record_recipe",
    "record_metrics",
    "record_pruned",
    "record_failed",
    "record_proxy",
    "record_diswot",
    "record_worker",
    "record_interrupted",
    "retry_attrs",
    "retry_of",
    "worker_of",
    "StudyKey",
    "METRICS",
    "record_run",
    "runs_of",
]


class Baseline(str, Enum):
    """The in-study baselines every searched trial is compared with (same student)."""

    CE_ONLY = "ce_only"  # the student trained with cross-entropy only
    KD = "kd"  # plain KD (Hinton et al.) at the study's baseline temperature

    @classmethod
    def parse(cls, value: Any) -> Baseline | None:
        if value in (None, "", False):
            return None
        if value == "ce":  # the tag of studies written before this module existed
            return cls.CE_ONLY
        try:
            return cls(value)
        except ValueError:
            return None


class Key(str, Enum):
    """Trial user-attribute keys (their string values are what the storage holds)."""

    RECIPE = "recipe"  # compact JSON of the trained Recipe
    DESCRIPTION = "description"  # Recipe.describe(): one line
    STUDENT = "student"  # StudentSpec.label()
    SEED = "seed"
    BASELINE = "baseline"  # Baseline value on baseline trials
    BASELINE_STUDENT = "baseline_student"  # StudentSpec as a mapping
    BASELINE_STUDENT_LABEL = "baseline_student_label"
    VAL_ACC = "val_acc"
    BEST_VAL_ACC = "best_val_acc"
    PARAMS = "params"
    FLOPS = "flops"
    LATENCY_MS = "latency_ms"
    EPOCHS = "epochs"
    TRAIN_TIME_S = "train_time_s"
    EPOCH_TIME_S = "epoch_time_s"
    VAL_ACC_SEEDS = "val_acc_seeds"
    VAL_ACC_STD = "val_acc_std"
    PRUNE_REASON = "prune_reason"
    DIVERGED = "diverged"  # True when the loss became non-finite (KD-Zero's loss rejection)
    FAIL_REASON = "fail_reason"
    PROXY_SCORE = "proxy_score"
    PROXY = "proxy"
    DISWOT_RANK = "diswot_rank"
    DISWOT_KEY = "diswot_key"
    WORKER = "worker"  # "host:pid" of the process that ran the trial
    RETRY_OF = "retry_of"  # the number of the failed trial this one retries
    INTERRUPTED = "interrupted"  # the signal that stopped the trial (SIGINT / SIGTERM)
    FINGERPRINT = "fingerprint"  # the study fingerprint id the trial ran under


class StudyKey(str, Enum):
    """Study user-attribute keys."""

    AUTOKD_VERSION = "autokd_version"
    STUDY_NAME = "study_name"
    SPACE = "space"
    DATASET = "dataset"
    TEACHER = "teacher"
    MULTI_OBJECTIVE = "multi_objective"
    DISWOT_CANDIDATES = "diswot_candidates"
    DISWOT = "diswot"
    FINGERPRINT = "fingerprint"  # {id, teacher, data, space}: what defines the study's trials
    FINGERPRINT_HISTORY = "fingerprint_history"  # changes accepted with --allow-changed
    RUNS = "runs"  # one record per search run started on the study: who, its sampler seed, what was stored


#: the metrics the objective records on every trained trial
METRICS = (Key.VAL_ACC, Key.BEST_VAL_ACC, Key.PARAMS, Key.FLOPS, Key.LATENCY_MS, Key.EPOCHS, Key.TRAIN_TIME_S,
           Key.EPOCH_TIME_S)


def _attrs(t: Any) -> Mapping[str, Any]:
    return t.user_attrs if hasattr(t, "user_attrs") else t


# ------------------------------------------------------------------------------------------ writers
def baseline_attrs(kind: Baseline, student: StudentSpec | None) -> dict[str, Any]:
    """The user attributes of an enqueued baseline trial."""
    out: dict[str, Any] = {Key.BASELINE.value: Baseline(kind).value}
    if student is not None:
        out[Key.BASELINE_STUDENT.value] = student.model_dump(mode="json")
        out[Key.BASELINE_STUDENT_LABEL.value] = student.label()
    return out


def record_recipe(trial: Any, recipe: Recipe, *, fingerprint: str | None = None) -> None:
    """What a trial trains, before it trains, in one write: the recipe (compact JSON), its one-line
    description, the student's label, the seed and the study fingerprint id it runs under."""
    attrs: dict[str, Any] = {Key.RECIPE.value: json.dumps(recipe.to_dict(), separators=(",", ":")),
                             Key.DESCRIPTION.value: recipe.describe(), Key.STUDENT.value: recipe.student.label(),
                             Key.SEED.value: recipe.seed}
    if fingerprint is not None:
        attrs[Key.FINGERPRINT.value] = fingerprint
    set_user_attrs(trial, attrs)


def record_metrics(trial: Any, metrics: Mapping[str, Any], *, seed_accs: list[float] | None = None,
                   pruned: str | None = None) -> None:
    """What training produced, in one write: the :data:`METRICS` present in ``metrics``, the per-seed
    validation accuracies and their sample standard deviation (``seed_accs``, when several seeds ran), and the
    reason when the trial is pruned after training (by the pruner, at an intermediate epoch)."""
    import statistics

    attrs = {k.value: metrics[k.value] for k in METRICS if k.value in metrics}
    if seed_accs:
        attrs[Key.VAL_ACC_SEEDS.value] = list(seed_accs)
        attrs[Key.VAL_ACC_STD.value] = statistics.stdev(seed_accs) if len(seed_accs) > 1 else 0.0
    if pruned is not None:
        attrs[Key.PRUNE_REASON.value] = pruned
    set_user_attrs(trial, attrs)


def record_pruned(trial: Any, reason: str, *, diverged: bool = False, epochs: int | None = None) -> None:
    """Why a trial is pruned (before ``raise optuna.TrialPruned``); ``diverged`` marks a loss that became
    non-finite, which the tree samplers treat as the worst outcome."""
    attrs: dict[str, Any] = {Key.PRUNE_REASON.value: reason}
    if diverged:
        attrs[Key.DIVERGED.value] = True
    if epochs is not None:
        attrs[Key.EPOCHS.value] = epochs
    set_user_attrs(trial, attrs)


def record_failed(trial: Any, reason: str) -> None:
    trial.set_user_attr(Key.FAIL_REASON.value, reason)


def worker_attrs(worker: str) -> dict[str, Any]:
    """The user attributes that say who runs a trial (``host:pid``)."""
    return {Key.WORKER.value: worker}


def record_worker(trial: Any, worker: str) -> None:
    """Who runs the trial, recorded right after ``ask`` (a kill then leaves a dead owner)."""
    set_user_attrs(trial, worker_attrs(worker))


def record_interrupted(trial: Any, signal_name: str) -> None:
    set_user_attrs(trial, {Key.INTERRUPTED.value: signal_name,
                           Key.FAIL_REASON.value: f"interrupted by {signal_name}; rerun the command to resume"})


def record_proxy(trial: Any, score: float, proxy: str | None = None) -> None:
    attrs: dict[str, Any] = {Key.PROXY_SCORE.value: score}
    if proxy is not None:
        attrs[Key.PROXY.value] = proxy
    set_user_attrs(trial, attrs)


def record_diswot(rank: int, score: float, proxy: str, key: str) -> dict[str, Any]:
    """The user attributes of a trial enqueued by DisWOT mode (its rank among the proxy-ranked students)."""
    return {Key.DISWOT_RANK.value: rank, Key.PROXY_SCORE.value: score, Key.PROXY.value: proxy,
            Key.DISWOT_KEY.value: key}


def record_run(study: Any, run: Mapping[str, Any]) -> int:
    """Append ``run`` to the study's run register (call under the study lock); returns its index (0 for the
    study's first run)."""
    runs = runs_of(study)
    study.set_user_attr(StudyKey.RUNS.value, [*runs, dict(run)])
    return len(runs)


#: what a trial is before it runs, set when it is enqueued (a baseline; a DisWOT candidate): a retry keeps them
ENQUEUED = (Key.BASELINE, Key.BASELINE_STUDENT, Key.BASELINE_STUDENT_LABEL, Key.DISWOT_RANK, Key.DISWOT_KEY,
            Key.PROXY_SCORE, Key.PROXY)


def retry_attrs(failed: Any) -> dict[str, Any]:
    """The user attributes of the retry of ``failed``: what it was enqueued as (:data:`ENQUEUED`) and
    :attr:`Key.RETRY_OF` (its number) -- nothing of the failed run (worker, recipe record, metrics, prune or
    fail reason, interruption), which the retry records afresh."""
    attrs = _attrs(failed)
    out = {k.value: attrs[k.value] for k in ENQUEUED if k.value in attrs}
    out[Key.RETRY_OF.value] = failed.number
    return out


# ------------------------------------------------------------------------------------------ readers
def runs_of(study: Any) -> list[dict[str, Any]]:
    """The study's run register: one record per search run, in the order they started."""
    runs = study.user_attrs.get(StudyKey.RUNS.value)
    return [dict(r) for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def retry_of(t: Any) -> int | None:
    """The number of the failed trial this one retries (``None``: not a retry)."""
    v = _attrs(t).get(Key.RETRY_OF.value)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def baseline_of(t: Any) -> Baseline | None:
    return Baseline.parse(_attrs(t).get(Key.BASELINE.value))


def is_baseline(t: Any) -> bool:
    return baseline_of(t) is not None


def baseline_student_of(t: Any) -> StudentSpec | None:
    d = _attrs(t).get(Key.BASELINE_STUDENT.value)
    return StudentSpec.model_validate(d) if isinstance(d, dict) else None


def is_diverged(t: Any) -> bool:
    a = _attrs(t)
    if a.get(Key.DIVERGED.value):
        return True
    return str(a.get(Key.PRUNE_REASON.value, "")).startswith("training diverged")  # older studies


def recipe_of(t: Any) -> Recipe | None:
    """The recipe a trial trained (``None`` before the objective recorded it)."""
    raw = _attrs(t).get(Key.RECIPE.value)
    if raw is None:
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    return Recipe.from_dict(data, source=f"trial {getattr(t, 'number', '?')}")


def recipe_dict_of(t: Any) -> dict[str, Any] | None:
    raw = _attrs(t).get(Key.RECIPE.value)
    if raw is None:
        return None
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def _str(t: Any, key: Key) -> str | None:
    v = _attrs(t).get(key.value)
    return None if v is None else str(v)


def prune_reason_of(t: Any) -> str | None:
    return _str(t, Key.PRUNE_REASON)


def fail_reason_of(t: Any) -> str | None:
    return _str(t, Key.FAIL_REASON)


def description_of(t: Any) -> str | None:
    return _str(t, Key.DESCRIPTION)


def student_of(t: Any) -> str | None:
    """The student's label (``StudentSpec.label()``)."""
    return _str(t, Key.STUDENT)


def metric_of(t: Any, key: Key) -> float | None:
    """A finite numeric attribute (``val_acc``, ``params``, ...) or ``None``."""
    v = _attrs(t).get(Key(key).value)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def proxy_score_of(t: Any) -> float | None:
    return metric_of(t, Key.PROXY_SCORE)


def worker_of(t: Any) -> tuple[str, int] | None:
    """``(host, pid)`` of the process that ran the trial, or ``None``."""
    v = _attrs(t).get(Key.WORKER.value)
    if not isinstance(v, str) or ":" not in v:
        return None
    host, _, pid = v.rpartition(":")
    return (host, int(pid)) if pid.isdigit() else None


def diswot_rank_of(t: Any) -> int | None:
    v = _attrs(t).get(Key.DISWOT_RANK.value)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None
