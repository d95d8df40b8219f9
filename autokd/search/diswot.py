"""``search.mode: diswot`` — training-free student search, then KD training of the top-k (DisWOT, CVPR 2023).

1. Search the space's student decisions (``student``, ``student.<label>.<kwarg>``) for the students that
   maximise a zero-cost proxy (default ``diswot``), on ONE batch of the training split, with at most
   ``spec.candidates`` proxy evaluations (distinct students): ``random`` (a seeded uniform sample) or
   ``evolution`` (regularised evolution, Real et al. AAAI 2019: population ``spec.population``, tournament
   of a quarter of it, the child changes ONE student decision of the winner, the oldest member dies).
2. Record every candidate's score in the study (user attribute ``diswot_candidates``: a list of rows
   ``{order, student, option, name, kwargs, params, score, time_s}``; a summary under ``diswot``).
3. Enqueue the ``spec.top_k`` best as ordinary trials (user attributes ``diswot_rank`` 0..k-1 and
   ``proxy_score``) and train them with :class:`~autokd.search.objective.Objective` — the same trial path,
   storage, pruner and report as ``mode: search``.

Resuming re-uses the recorded scores (the seeded search replays without recomputing them) and does not
re-enqueue ranks that already have a trial.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError
from . import trial_record as tr
from .students import (
    StudentCandidate,
    enumerate_students,
    mutate_student,
    random_student,
    sample_students,
)

__all__ = ["run_diswot", "search_students"]


def search_students(space, evaluate: Callable[[StudentCandidate], float], *, method: str = "evolution",
                    budget: int = 200, population: int = 20, seed: int = 0,
                    on_eval: Callable[[int, StudentCandidate, float], None] | None = None
                    ) -> list[tuple[StudentCandidate, float]]:
    """Maximise ``evaluate(candidate)`` over the space's students, at most ``budget`` distinct evaluations.

    Returns ``(candidate, score)`` in evaluation order. Stops early when the space has no unseen student
    left. Deterministic for a seed (given a deterministic ``evaluate``).
    """
    if method not in ("random", "evolution"):
        raise ConfigError(f"search.diswot.method: must be random or evolution, got {method!r}")
    if budget < 1:
        raise ConfigError(f"search.diswot.candidates: must be >= 1, got {budget}")
    done: list[tuple[StudentCandidate, float]] = []
    seen: set[str] = set()

    def run(c: StudentCandidate) -> float:
        s = evaluate(c)
        seen.add(c.key)
        done.append((c, s))
        if on_eval is not None:
            on_eval(len(done) - 1, c, s)
        return s

    if method == "random":
        for c in sample_students(space, budget, seed=seed):
            run(c)
        return done

    rng = random.Random(seed)
    every = enumerate_students(space)
    total = len(every) if every is not None else None

    def exhausted() -> bool:
        return total is not None and len(seen) >= total

    def fresh() -> StudentCandidate | None:
        for _ in range(200):
            c = random_student(space, rng)
            if c.key not in seen:
                return c
        if every is not None:
            left = [c for c in every if c.key not in seen]
            return rng.choice(left) if left else None
        return None

    pop: deque[tuple[StudentCandidate, float]] = deque()
    while len(pop) < population and len(done) < budget and not exhausted():
        c = fresh()
        if c is None:
            break
        pop.append((c, run(c)))
    tournament = max(2, math.ceil(population / 4))
    while len(done) < budget and not exhausted() and pop:
        contenders = rng.sample(list(pop), min(tournament, len(pop)))
        parent = max(contenders, key=lambda cs: _key(cs[1]))[0]
        child = None
        for _ in range(20):
            c = mutate_student(space, parent, rng)
            if c.key not in seen:
                child = c
                break
        if child is None:
            child = fresh()
        if child is None:
            break
        pop.append((child, run(child)))
        if len(pop) > population:
            pop.popleft()
    return done


def _key(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


def run_diswot(ctx, space, study, spec, progress=None, *, epochs: int | None = None,
               log: Callable[[str], None] | None = None, fingerprint: str | None = None) -> list[dict[str, Any]]:
    """Training-free student search over ``ctx.space`` with ``spec`` (:class:`~autokd.config.DiswotSpec`),
    then KD training of the top-k as trials of ``study``. Returns the top-k rows, best first:
    ``{rank, student, option, name, kwargs, params, score, trial, state, val_acc}``.

    ``epochs`` (default ``ctx.cfg.search.epochs``) overrides each trained trial's epoch budget. Every trial
    WAITING in the study when training starts is run (the top-k, plus anything enqueued before, such as
    baselines). ``progress`` may implement ``candidate_scored(i, total, row)`` (search phase) and the
    ``search_started`` / ``trial_started`` / ``epoch`` / ``trial_finished`` methods of ``mode: search``.
    """
    import optuna

    from .. import proxies
    from ..proxies.score import build_student
    from .objective import Objective

    log = log or (lambda *_: None)
    cfg = ctx.cfg
    name = proxies.PROXIES.canonical(spec.proxy, where="search.diswot.proxy")
    proxy = proxies.create(name)
    teacher = ctx.teacher
    if proxies.needs_teacher(name) and teacher is None:
        raise ConfigError(f"search.diswot.proxy: {name!r} compares students with the teacher; there is none")
    seed = int(cfg.seed)
    x, y = proxies.proxy_batch(ctx.data, spec.batch_size, seed=seed)
    x, y = x.to(ctx.device), y.to(ctx.device)
    num_classes, in_channels = ctx.data.num_classes, ctx.data.input_shape[0]

    previous = {r["key"]: r for r in (study.user_attrs.get(tr.StudyKey.DISWOT_CANDIDATES.value) or [])
                if isinstance(r, dict) and r.get("proxy") == name and "key" in r}
    rows: list[dict[str, Any]] = []
    budget = int(spec.candidates)
    t_start = time.perf_counter()

    def save() -> None:
        study.set_user_attr(tr.StudyKey.DISWOT_CANDIDATES.value, rows)

    def evaluate(c: StudentCandidate) -> float:
        old = previous.get(c.key)
        if old is not None:
            row = dict(old)
        else:
            student = build_student(c, num_classes, in_channels, seed=seed, device=ctx.device)
            t0 = time.perf_counter()
            err = None
            try:
                s = proxy(student, teacher, (x, y), seed=seed)
            except ConfigError:
                raise
            except Exception as e:  # one architecture the proxy cannot score must not end the search
                s, err = float("nan"), f"{type(e).__name__}: {e}"
            row = {**c.to_dict(), "key": c.key, "proxy": name,
                   "params": sum(p.numel() for p in student.parameters()),
                   "score": s if math.isfinite(s) else None, "time_s": time.perf_counter() - t0}
            if err:
                row["error"] = err
        row["order"] = len(rows)
        rows.append(row)
        if len(rows) % 10 == 0:
            save()
        if progress is not None and hasattr(progress, "candidate_scored"):
            progress.candidate_scored(len(rows) - 1, budget, row)
        return float("nan") if row["score"] is None else float(row["score"])

    with torch.random.fork_rng(devices=[]):
        found = search_students(space, evaluate, method=spec.method, budget=budget,
                                population=spec.population, seed=seed)
    save()
    search_s = time.perf_counter() - t_start
    log(f"diswot: scored {len(found)} students with {name!r} in {search_s:.1f}s "
        f"({len(found) - sum(1 for c, _ in found if c.key not in previous)} reused)")

    ranked = sorted((r for r in rows if r["score"] is not None), key=lambda r: (-r["score"], r["order"]))
    top = ranked[: int(spec.top_k)]
    study.set_user_attr(tr.StudyKey.DISWOT.value, {"proxy": name, "method": spec.method, "budget": budget,
                                       "evaluated": len(rows), "top_k": len(top),
                                       "batch_size": spec.batch_size,
                                       "search_seconds": round(search_s, 3), "seed": seed})

    existing = _ranked_trials(study)
    for rank, r in enumerate(top):
        t = existing.get(rank)
        if t is not None and t.user_attrs.get(tr.Key.DISWOT_KEY.value) == r["key"]:
            continue  # resumed: this rank already has its trial
        cand = StudentCandidate(r["option"], r["name"], dict(r["kwargs"]))
        study.enqueue_trial(cand.params(space), user_attrs=tr.record_diswot(rank, r["score"], name, r["key"]))
        log(f"diswot: rank {rank} {r['student']} (score {r['score']:.6g}) enqueued")

    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if waiting:
        multi = len(study.directions) > 1
        objective = Objective(ctx, space, epochs=epochs if epochs is not None else cfg.search.epochs,
                              multi_objective=multi, progress=progress, fingerprint=fingerprint)
        if progress is not None and hasattr(progress, "search_started"):
            progress.search_started(study, len(waiting), len(waiting))
        callbacks = []
        if progress is not None and hasattr(progress, "trial_finished"):
            callbacks.append(lambda s, t: progress.trial_finished(s, t))
        study.optimize(objective, n_trials=len(waiting), catch=(), gc_after_trial=True, callbacks=callbacks)

    trials = _ranked_trials(study)
    out = []
    for rank, r in enumerate(top):
        t = trials.get(rank)
        row = {"rank": rank, **{k: r[k] for k in ("student", "option", "name", "kwargs", "params", "score")}}
        row["trial"] = t.number if t is not None else None
        row["state"] = t.state.name if t is not None else None
        row["val_acc"] = (t.values[0] if t.values else tr.metric_of(t, tr.Key.VAL_ACC)) if t is not None else None
        out.append(row)
    return out


def _ranked_trials(study) -> dict[int, Any]:
    """The latest non-failed trial of each ``diswot_rank``."""
    import optuna

    out: dict[int, Any] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rank = tr.diswot_rank_of(t)
        if rank is not None and t.state != optuna.trial.TrialState.FAIL:
            out[rank] = t
    return out
