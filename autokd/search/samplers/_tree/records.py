"""What the tree samplers read from a study: the decision tree they know (declared or learned) and one record
per finished trial — its path through the tree, the node each parameter was suggested at, and its value
normalised to [0, 1]. Baselines and diverged trials are recognised through :mod:`autokd.search.trial_record`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ... import trial_record
from ...params import Fixed
from ...tree import Decision, walk

if TYPE_CHECKING:

    from ...space import SearchSpace

__all__ = ["FINISHED", "BranchKey", "Record", "TreeInfo", "TreePath", "branch_key", "build_records", "is_searched",
           "make_record", "normalise", "public_path", "scale_point"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

BranchKey = tuple[str, str, Any]  # (param name, type name, value): True and 1 stay distinct as dict keys
TreePath = tuple[BranchKey, ...]  # the branching choices made so far, in suggestion order: a node


def branch_key(name: str, value: Any) -> BranchKey:
    return (name, type(value).__name__, value)


def public_path(path: Iterable[BranchKey]) -> tuple[tuple[str, Any], ...]:
    """A path as the ``(name, value)`` pairs users read and write."""
    return tuple((k[0], k[2]) for k in path)


class TreeInfo:
    """What a sampler knows about the decision tree: given (a SearchSpace or Decision list) or learned.

    A *branching* decision is one whose value selects the next decisions: every categorical parameter,
    plus integer decisions that the declared tree gives children (``terms.n``). Other numeric
    parameters are leaves.
    """

    def __init__(self, space: SearchSpace | str | Path | None, tree: Sequence[Decision] | None, who: str) -> None:
        if space is not None and tree is not None:
            raise ValueError(f"{who}: give space= or tree=, not both")
        if isinstance(space, (str, Path)):
            from ...space import SearchSpace

            space = SearchSpace.load(space)
        if space is not None:
            if not hasattr(space, "tree"):
                raise ValueError(f"{who}: space= expects an autokd SearchSpace (or a path to one), "
                                 f"got {type(space).__name__}")
            tree = space.tree()
        if tree is not None:
            tree = list(tree)
            if not all(isinstance(d, Decision) for d in tree):
                raise ValueError(f"{who}: tree= expects a list of autokd.search.tree.Decision")
        self.tree: list[Decision] | None = tree
        self.declared: dict[str, Decision] = {}
        self.branching_ints: set[str] = set()
        for d in walk(tree or []):
            if isinstance(d.param, Fixed):
                continue
            self.declared.setdefault(d.name, d)
            if d.kind == "int" and d.children:
                self.branching_ints.add(d.name)

    def is_branching(self, name: str, dist: BaseDistribution) -> bool:
        if isinstance(dist, CategoricalDistribution):
            return True
        return isinstance(dist, IntDistribution) and name in self.branching_ints

    def choices(self, name: str, dist: BaseDistribution) -> list[Any]:
        """The children of a branching decision under its current distribution."""
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        assert isinstance(dist, IntDistribution)
        return list(range(dist.low, dist.high + 1, dist.step))

    def path(self, params: dict[str, Any], dists: dict[str, BaseDistribution]) -> tuple[TreePath, dict[str, TreePath]]:
        """The branching choices of a trial in suggestion order, and the node each parameter was
        suggested at (the branching choices made before it)."""
        path: list[BranchKey] = []
        node_of: dict[str, TreePath] = {}
        for name, value in params.items():  # storages keep suggestion order (RDB: by param id)
            node_of[name] = tuple(path)
            dist = dists.get(name)
            if dist is not None and self.is_branching(name, dist):
                path.append(branch_key(name, value))
        return tuple(path), node_of


@dataclass
class Record:
    """A finished searched trial as the tree samplers use it."""

    number: int
    state: TrialState
    params: dict[str, Any]
    dists: dict[str, BaseDistribution]
    value: float | None  # the raw objective value (COMPLETE only)
    q: float  # normalised: 1 = best completed value, 0 = worst (failed, diverged)
    path: TreePath
    node_of: dict[str, TreePath]
    diverged: bool = False
    raw: float | None = None  # what ``q`` normalises: the value, or a pruned trial's last intermediate one


def is_searched(t: FrozenTrial) -> bool:
    """A trial the sampler proposed: it has parameters and is not one of autokd's enqueued baselines."""
    return bool(t.params) and not trial_record.is_baseline(t)


def _last_intermediate(t: FrozenTrial) -> float | None:
    if not t.intermediate_values:
        return None
    v = t.intermediate_values[max(t.intermediate_values)]
    return float(v) if v is not None and math.isfinite(v) else None


def make_record(t: FrozenTrial, info: TreeInfo) -> Record:
    """The record of a finished searched trial, its ``q`` still 0 (see :func:`normalise`). ``raw`` is the value
    to normalise: COMPLETE, its value; PRUNED, its last intermediate value, ``None`` when it has none or
    diverged (``trial_record.is_diverged``); FAIL, ``None``."""
    diverged = t.state == TrialState.PRUNED and trial_record.is_diverged(t)
    value = raw = None
    if t.state == TrialState.COMPLETE:
        value = raw = t.value
    elif t.state == TrialState.PRUNED and not diverged:
        raw = _last_intermediate(t)
    path, node_of = info.path(t.params, t.distributions)
    return Record(t.number, t.state, t.params, t.distributions, value, 0.0, path, node_of, diverged, raw)


def scale_point(r: Record, sign: float) -> tuple[bool, float] | None:
    """What ``r`` contributes to the normalisation scale: ``(True, signed value)`` for a finite completed
    value, ``(False, signed last value)`` for a pruned trial that did not diverge, else ``None``."""
    if r.state == TrialState.COMPLETE:
        v = r.value
        return (True, sign * v) if v is not None and math.isfinite(v) else None
    if r.state == TrialState.PRUNED and r.raw is not None:
        return False, sign * r.raw
    return None


def normalise(v: float | None, sign: float, low: float | None, high: float | None) -> float:
    """``v`` on the [0, 1] scale from ``low`` to ``high`` (signed): 0 when there is no value or scale,
    0.5 when the scale is a single point, clipped to [0, 1]."""
    if v is None or low is None or high is None or math.isnan(v):
        return 0.0
    if high <= low:
        return 0.5
    return min(1.0, max(0.0, (sign * v - low) / (high - low)))


def build_records(trials: Sequence[FrozenTrial], maximize: bool,
                  info: TreeInfo) -> tuple[list[Record], float | None, float | None]:
    """Records of the finished searched trials (param-less and baseline trials are skipped) with the
    direction-aware min-max normalised value ``q`` in [0, 1] (higher is better for both directions), and
    the signed low and high ends of that scale, computed from scratch (the samplers keep the same records
    up to date incrementally: :class:`.ledger.Ledger`).

    COMPLETE: its value, normalised over the completed trials. PRUNED: its last intermediate value on the
    same scale, clipped to [0, 1]; 0 when it has none or when it diverged (``trial_record.is_diverged``).
    FAIL: 0, the worst. Until a trial completes, the scale is that of the pruned trials' last values.
    """
    sign = 1.0 if maximize else -1.0
    out = [make_record(t, info) for t in trials if t.state in FINISHED and is_searched(t)]
    points = [p for r in out for p in [scale_point(r, sign)] if p is not None]
    finals = [v for done, v in points if done] or [v for _, v in points]
    low, high = (min(finals), max(finals)) if finals else (None, None)
    for r in out:
        r.q = normalise(r.raw, sign, low, high)
    return out, low, high
