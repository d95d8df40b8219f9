"""Monte Carlo tree search over the categorical decisions of a define-by-run space (Auto-KD, ICCV 2023).

The shared pieces (base class, trial records, numeric ranges, Parzen estimator) live in :mod:`._tree`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from ..tree import Decision
from ._tree.base import TreeSamplerBase
from ._tree.distributions import uniform
from ._tree.records import BranchKey, TreePath, branch_key, is_searched, public_path
from ._tree.tree_stats import TreeLedger, sample_leaf

if TYPE_CHECKING:
    from optuna.study import Study

    from ..space import SearchSpace

__all__ = ["MCTSSampler", "uct_score"]


def uct_score(mean: float, n_child: int, n_parent: int, c: float) -> float:
    """UCT (Kocsis & Szepesvári 2006): ``mean + c * sqrt(ln N_parent / N_child)``; ``inf`` when unvisited."""
    if n_child <= 0:
        return math.inf
    return mean + c * math.sqrt(math.log(max(n_parent, 1)) / n_child)


class MCTSSampler(TreeSamplerBase):
    """UCT Monte Carlo tree search over the categorical decisions of a define-by-run objective (Auto-KD).

    **The tree.** A node is the sequence of ``(name, value)`` branching choices a trial has made so far,
    in suggestion order; its children are the values of the next branching decision. Without a declared
    tree the sampler learns it from the order of ``suggest_*`` calls, and every categorical parameter
    branches. With ``space=`` (an autokd ``SearchSpace`` or a path to its YAML) or ``tree=`` (a list of
    :class:`~autokd.search.tree.Decision`) it also knows, before observing them, which integer
    decisions branch (those with children, e.g. ``terms.n``) and every decision's choices
    (:meth:`tree_stats` then lists unvisited children too).

    **Selection.** At a branching decision the sampler picks, among the current distribution's choices,
    an unvisited child first (in a seeded pseudo-random order that depends only on ``seed``, the node
    and the choice, so parallel workers and a restored sampler agree), otherwise the child maximising
    ``mean_q + c * sqrt(ln N_parent / N_child)``, where ``N_parent`` sums the visits of the decision's
    children. Expansion therefore happens on first visit, and the rest of a new path is a random rollout.
    Back-propagation: every finished trial adds one visit and its normalised value ``q`` to each edge
    of its path. ``q`` is min-max normalised over the completed trials so that 1 is the best value and 0
    the worst, in either direction. Trials still running in other workers count as a visit with value 0
    (a "virtual loss", ``virtual_loss=True``) so that workers spread out.

    **Numeric parameters** (floats, ints that do not branch; log and step respected) are sampled at
    their node by a small TPE-like Parzen estimator on [0, 1] (log-transformed for log ranges). It is
    fitted to the trials that suggested the parameter, each weighted by how much of the path it shares
    with the current node: ``leaf_decay ** d``, ``d`` the tree distance between the node where that
    trial suggested it and this one (1 for the trials that share this node's path; ``leaf_decay=0``
    uses only the nearest node with observations). Before ``n_startup_leaf`` observations it samples
    uniformly. The best observations holding a ``gamma`` share of the weight form the "good" density
    l, the rest g; of ``n_ei_candidates`` draws from l the one maximising l/g is returned.

    **Pruned and failed trials.** A pruned trial counts as a visit with its last intermediate value,
    normalised on the same scale as the completed values and clipped to [0, 1] (an early-epoch
    accuracy is usually below the finals, so this is already a mild penalty); a pruned trial without
    intermediate values, one that diverged (the loss became non-finite; ``trial_record.is_diverged``),
    and a failed trial count as the worst value, 0. Param-less trials (autokd's enqueued baselines) are
    ignored. Multi-objective studies are refused with ``ValueError`` by ``before_trial``, ``sample_relative``
    and ``sample_independent``, as Optuna's contract for single-objective samplers requires.

    **State.** At a trial's first sampler call the sampler reads the study's storage (``study.get_trials``;
    the trial's other calls share that read), so trials finished by other workers sharing the study count
    from the next trial on, and
    absorbs the trials finished since its last look into incremental statistics (a
    :class:`._tree.tree_stats.TreeLedger`: the records of :mod:`._tree.ledger`, each edge's visits and
    value, each numeric parameter's observations), each trial exactly once even when it finishes out of
    order. They equal what a computation from scratch over all finished trials gives, so a sampler resumed
    on a stored study, or another worker, sees the same tree. The sampler pickles (the statistics are
    dropped and rebuilt from the storage; the random state is kept) and is deterministic for a given
    ``seed``.

    Args:
        space: an autokd ``SearchSpace`` (or a path to a space YAML) whose decision tree to use.
        tree: a declared decision tree (``SearchSpace.tree()``), instead of ``space``.
        c: UCT exploration constant. Values are in [0, 1] and children of a node often differ by a few
            hundredths, so the classic ``1/sqrt(2)`` explores almost uniformly; 0.3 did better on
            ``benchmarks/sampler_efficiency.py``.
        n_startup_leaf: observations of a numeric parameter (anywhere in the tree) before it is modelled.
        gamma: fraction of the observations forming the "good" density of the numeric leaf model.
        n_ei_candidates: candidates drawn from the good density per numeric sample.
        leaf_decay: weight factor per step of tree distance for the numeric leaf model, in [0, 1].
        virtual_loss: count other workers' running trials as visits with value 0.
        seed: seed of the random state and of the expansion order.
    """

    _ledger_type = TreeLedger

    def __init__(self, *, space: SearchSpace | str | Path | None = None, tree: Sequence[Decision] | None = None,
                 c: float = 0.3, n_startup_leaf: int = 4, gamma: float = 0.15, n_ei_candidates: int = 24,
                 leaf_decay: float = 0.5, virtual_loss: bool = True, seed: int | None = None) -> None:
        who = type(self).__name__
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ValueError(f"{who}: c must be a finite number >= 0, got {c!r}")
        if not (isinstance(n_startup_leaf, int) and n_startup_leaf >= 1):
            raise ValueError(f"{who}: n_startup_leaf must be an integer >= 1, got {n_startup_leaf!r}")
        if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
            raise ValueError(f"{who}: gamma must be in (0, 1], got {gamma!r}")
        if not (isinstance(n_ei_candidates, int) and n_ei_candidates >= 1):
            raise ValueError(f"{who}: n_ei_candidates must be an integer >= 1, got {n_ei_candidates!r}")
        if not (isinstance(leaf_decay, (int, float)) and 0 <= leaf_decay <= 1):
            raise ValueError(f"{who}: leaf_decay must be in [0, 1], got {leaf_decay!r}")
        super().__init__(space=space, tree=tree, seed=seed)
        self.c = float(c)
        self.n_startup_leaf = n_startup_leaf
        self.gamma = float(gamma)
        self.n_ei_candidates = n_ei_candidates
        self.leaf_decay = float(leaf_decay)
        self.virtual_loss = bool(virtual_loss)
        self._salt = int(seed) if seed is not None else secrets.randbits(63)


    # ---- sampling -------------------------------------------------------------------------------
    def _before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._ledger(study, trial)

    def _sample(self, study: Study, trial: FrozenTrial, param_name: str, dist: BaseDistribution) -> Any:
        led = self._ledger(study, trial)
        node, _ = self._info.path(trial.params, trial.distributions)
        if self._info.is_branching(param_name, dist):
            choices = self._info.choices(param_name, dist)
            pending = self._pending(led.running, trial.number)
            scores = self._scores(led, pending, node, param_name, choices)
            return self._argmax(node, param_name, choices, scores)
        if isinstance(dist, (FloatDistribution, IntDistribution)):
            return sample_leaf(led.leaf(param_name, dist), led.node_ids(node), led.version, self._rng,
                               n_startup=self.n_startup_leaf, gamma=self.gamma, n_candidates=self.n_ei_candidates,
                               decay=self.leaf_decay)
        return uniform(dist, self._rng)

    # ---- statistics -----------------------------------------------------------------------------
    def _pending(self, running: Sequence[FrozenTrial], current: int) -> dict[TreePath, dict[BranchKey, int]]:
        out: dict[TreePath, dict[BranchKey, int]] = {}
        if not self.virtual_loss:
            return out
        for t in running:
            if t.number == current or not is_searched(t):
                continue
            path, _ = self._info.path(t.params, t.distributions)
            for i, k in enumerate(path):
                d = out.setdefault(path[:i], {})
                d[k] = d.get(k, 0) + 1
        return out

    def _scores(self, led: TreeLedger, pending: dict[TreePath, dict[BranchKey, int]], node: TreePath, name: str,
                choices: Sequence[Any]) -> list[float]:
        edges = led.edges.get(node, {})
        virt = pending.get(node, {})
        nw = []
        for ch in choices:
            k = branch_key(name, ch)
            e = edges.get(k)
            n, w = (e.n, e.w(led.version)) if e is not None else (0, 0.0)
            v = virt.get(k, 0)
            nw.append((n + v, w))  # a running trial elsewhere: one more visit, value 0
        total = sum(n for n, _ in nw)
        return [uct_score(w / n if n else 0.0, n, total, self.c) for n, w in nw]

    def _order(self, node: TreePath, name: str, choice: Any, prefix: Any = None) -> int:
        """The seeded hash ranking ``choice`` among tied children: blake2b of ``repr((salt, node, branch))``.
        ``prefix``: the hash already fed ``"(salt, node, "``, for a caller ranking several choices."""
        if prefix is None:
            prefix = hashlib.blake2b(f"({self._salt!r}, {node!r}, ".encode(), digest_size=8)
        h = prefix.copy()
        h.update((repr(branch_key(name, choice)) + ")").encode())
        return int.from_bytes(h.digest(), "big")

    def _argmax(self, node: TreePath, name: str, choices: Sequence[Any], scores: Sequence[float]) -> Any:
        best = max(scores)
        tied = [ch for ch, s in zip(choices, scores, strict=True) if s == best]
        if len(tied) == 1:
            return tied[0]
        prefix = hashlib.blake2b(f"({self._salt!r}, {node!r}, ".encode(), digest_size=8)
        return min(tied, key=lambda ch: self._order(node, name, ch, prefix))

    # ---- inspection -----------------------------------------------------------------------------
    def tree_stats(self, study: Study) -> dict[tuple[tuple[str, Any], ...], dict[tuple[str, Any], tuple[int, float]]]:
        """``{node: {(name, value): (visits, summed normalised value)}}`` of the finished trials, nodes and
        children as ``(name, value)`` tuples. With a declared tree, unvisited choices of each decision
        seen at a node are listed with ``(0, 0.0)``."""
        with self._lock:
            led = self._ledger(study)
            out: dict[tuple[tuple[str, Any], ...], dict[tuple[str, Any], tuple[int, float]]] = {}
            for node, kids in led.edges.items():
                row = {(k[0], k[2]): (e.n, e.w(led.version)) for k, e in kids.items()}
                if self._info.tree is not None:
                    for name in {k[0] for k in kids}:
                        d = self._info.declared.get(name)
                        if d is not None:
                            for ch in (d.choices or list(d.children)):
                                row.setdefault((name, ch), (0, 0.0))
                out[public_path(node)] = row
            return out

    def uct_scores(self, study: Study, name: str, node: Sequence[tuple[str, Any]] = (),
                   choices: Sequence[Any] | None = None) -> dict[Any, float]:
        """The UCT score of each choice of decision ``name`` at ``node`` (``inf`` when unvisited), as the
        next trial would see them. ``choices`` default to the declared ones, else the observed ones."""
        with self._lock:
            led = self._ledger(study)
            path = tuple(branch_key(n, v) for n, v in node)
            if choices is None:
                d = self._info.declared.get(name)
                if d is not None:
                    choices = list(d.choices or d.children)
                else:
                    choices = [k[2] for k in led.edges.get(path, {}) if k[0] == name]
            scores = self._scores(led, self._pending(led.running, -1), path, name, list(choices))
            return dict(zip(choices, scores, strict=True))
