"""Monte Carlo tree search over the categorical decisions of a define-by-run space (Auto-KD, ICCV 2023).

Also holds what :mod:`.evolution` shares with it: reading a study's trials into records (a trial's path
through the decision tree and its normalised value), uniform sampling from an Optuna distribution, and
the unit-interval transform of numeric parameters.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from .. import trial_record
from ..params import Fixed
from ..tree import Decision, walk

if TYPE_CHECKING:
    from optuna.study import Study

    from ..space import SearchSpace

__all__ = ["MCTSSampler", "uct_score"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

Key = tuple[str, str, Any]  # (param name, type name, value): True and 1 stay distinct as dict keys
Path_ = tuple[Key, ...]


def _key(name: str, value: Any) -> Key:
    return (name, type(value).__name__, value)


def _public(path: Iterable[Key]) -> tuple[tuple[str, Any], ...]:
    return tuple((k[0], k[2]) for k in path)


def uct_score(mean: float, n_child: int, n_parent: int, c: float) -> float:
    """UCT (Kocsis & Szepesvári 2006): ``mean + c * sqrt(ln N_parent / N_child)``; ``inf`` when unvisited."""
    if n_child <= 0:
        return math.inf
    return mean + c * math.sqrt(math.log(max(n_parent, 1)) / n_child)


# ------------------------------------------------------------------------------------------- the tree
class _TreeInfo:
    """What a sampler knows about the decision tree: given (a SearchSpace or Decision list) or learned.

    A *branching* decision is one whose value selects the next decisions: every categorical parameter,
    plus integer decisions that the declared tree gives children (``terms.n``). Other numeric
    parameters are leaves.
    """

    def __init__(self, space: SearchSpace | str | Path | None, tree: Sequence[Decision] | None, who: str) -> None:
        if space is not None and tree is not None:
            raise ValueError(f"{who}: give space= or tree=, not both")
        if isinstance(space, (str, Path)):
            from ..space import SearchSpace

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
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        assert isinstance(dist, IntDistribution)
        return list(range(dist.low, dist.high + 1, dist.step))

    def path(self, params: dict[str, Any], dists: dict[str, BaseDistribution]) -> tuple[Path_, dict[str, Path_]]:
        """The branching choices of a trial in suggestion order, and the node each parameter was
        suggested at (the branching choices made before it)."""
        path: list[Key] = []
        node_of: dict[str, Path_] = {}
        for name, value in params.items():  # storages keep suggestion order (RDB: by param id)
            node_of[name] = tuple(path)
            dist = dists.get(name)
            if dist is not None and self.is_branching(name, dist):
                path.append(_key(name, value))
        return tuple(path), node_of


# ------------------------------------------------------------------------------------- trial records
@dataclass
class _Record:
    number: int
    state: TrialState
    params: dict[str, Any]
    dists: dict[str, BaseDistribution]
    value: float | None  # the raw objective value (COMPLETE only)
    q: float  # normalised: 1 = best completed value, 0 = worst (failed, diverged)
    path: Path_
    node_of: dict[str, Path_]
    diverged: bool = False


@dataclass
class _Snapshot:
    """Everything learnt from a study's finished trials (rebuilt when their count changes)."""

    key: tuple
    records: list[_Record]
    edges: dict[Path_, dict[Key, list[float]]] = field(default_factory=dict)  # node -> child -> [N, W]
    low: float | None = None
    high: float | None = None


def _is_searched(t: FrozenTrial) -> bool:
    return bool(t.params) and not trial_record.is_baseline(t)


def _diverged(t: FrozenTrial) -> bool:
    return trial_record.is_diverged(t)


def _last_intermediate(t: FrozenTrial) -> float | None:
    if not t.intermediate_values:
        return None
    v = t.intermediate_values[max(t.intermediate_values)]
    return float(v) if v is not None and math.isfinite(v) else None


def build_records(trials: Sequence[FrozenTrial], maximize: bool,
                  info: _TreeInfo) -> tuple[list[_Record], float | None, float | None]:
    """Records of the finished searched trials (param-less and baseline trials are skipped) with the
    direction-aware min-max normalised value ``q`` in [0, 1] (higher is better for both directions).

    COMPLETE: its value, normalised over the completed trials. PRUNED: its last intermediate value on the
    same scale, clipped to [0, 1]; 0 when it has none or when it diverged (``prune_reason`` "training
    diverged..."). FAIL: 0, the worst.
    """
    sign = 1.0 if maximize else -1.0
    usable = [t for t in trials if t.state in _FINISHED and _is_searched(t)]
    finals = [sign * t.value for t in usable
              if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    if not finals:  # nothing completed yet: scale by the pruned trials' intermediate values
        finals = [sign * v for t in usable if t.state == TrialState.PRUNED and not _diverged(t)
                  for v in [_last_intermediate(t)] if v is not None]
    low, high = (min(finals), max(finals)) if finals else (None, None)

    def norm(v: float | None) -> float:
        if v is None or low is None or high is None or math.isnan(v):
            return 0.0
        if high <= low:
            return 0.5
        return min(1.0, max(0.0, (sign * v - low) / (high - low)))

    out = []
    for t in usable:
        diverged = t.state == TrialState.PRUNED and _diverged(t)
        value = None
        if t.state == TrialState.COMPLETE:
            value = t.value
            q = norm(value)
        elif t.state == TrialState.PRUNED and not diverged:
            q = norm(_last_intermediate(t))
        else:
            q = 0.0
        path, node_of = info.path(t.params, t.distributions)
        out.append(_Record(t.number, t.state, t.params, t.distributions, value, q, path, node_of, diverged))
    return out, low, high


def fetch(study: Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """The study's finished and running trials, straight from its storage (shared by all workers)."""
    trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING))
    return ([t for t in trials if t.state != TrialState.RUNNING],
            [t for t in trials if t.state == TrialState.RUNNING])


def refuse_multi_objective(study: Study, who: str) -> None:
    if len(study.directions) > 1:
        raise ValueError(f"{who} supports single-objective studies only; this study has "
                         f"{len(study.directions)} objectives (use nsga2 for multi-objective search)")


# ------------------------------------------------------------------------------- numeric parameters
def _bounds(dist: FloatDistribution | IntDistribution) -> tuple[float, float, bool]:
    """The continuous interval a numeric distribution is modelled on (log scale when ``dist.log``)."""
    half = 0.0
    if isinstance(dist, IntDistribution):
        half = 0.5 * dist.step
    elif dist.step is not None:
        half = 0.5 * dist.step
    low, high = dist.low - half, dist.high + half
    if dist.log:
        return math.log(low), math.log(high), True
    return low, high, False


def to_unit(dist: FloatDistribution | IntDistribution, value: float) -> float | None:
    """``value`` mapped onto [0, 1] (None when outside ``dist``)."""
    if not (dist.low <= value <= dist.high):
        return None
    lo, hi, log = _bounds(dist)
    if hi <= lo:
        return 0.5
    x = math.log(value) if log else float(value)
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def from_unit(dist: FloatDistribution | IntDistribution, u: float) -> Any:
    lo, hi, log = _bounds(dist)
    x = lo + min(1.0, max(0.0, float(u))) * (hi - lo)
    v = math.exp(x) if log else x
    if isinstance(dist, IntDistribution):
        k = round((v - dist.low) / dist.step)
        return int(min(dist.high, max(dist.low, dist.low + k * dist.step)))
    if dist.step is not None:
        k = round((v - dist.low) / dist.step)
        v = dist.low + k * dist.step
    return float(min(dist.high, max(dist.low, v)))


def uniform(dist: BaseDistribution, rng: np.random.RandomState) -> Any:
    """A uniform draw (log-uniform for log ranges) from an Optuna distribution."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.randint(len(dist.choices)))]
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return from_unit(dist, rng.uniform(0.0, 1.0))
    raise ValueError(f"unsupported distribution {dist!r}")


def contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _parzen_pick(xs: np.ndarray, qs: np.ndarray, ws: np.ndarray, rng: np.random.RandomState, gamma: float,
                 n_candidates: int) -> float:
    """TPE-style choice on [0, 1] from weighted observations: the best observations holding a ``gamma``
    share of the weight form the "good" density l, the rest g; each is a weighted mixture of
    truncated-Gaussian Parzen windows plus a uniform prior. Candidates are drawn from l and the one
    maximising l(x) / g(x) is returned."""
    order = np.argsort(-qs, kind="stable")
    xs, qs, ws = xs[order], qs[order], ws[order]
    cum = np.cumsum(ws)
    n_good = int(np.searchsorted(cum, gamma * cum[-1], side="left")) + 1
    n_good = min(max(1, n_good), len(xs) - 1)
    good, bad = (xs[:n_good], ws[:n_good]), (xs[n_good:], ws[n_good:])

    def bandwidth(pts: np.ndarray, w: np.ndarray) -> tuple[float, float]:
        m = float(w.sum() ** 2 / (w * w).sum())  # effective number of observations
        mean = float(np.average(pts, weights=w))
        sigma = math.sqrt(float(np.average((pts - mean) ** 2, weights=w))) if len(pts) > 1 else 0.5
        # Scott's rule, floored at 1/(1+m) of the range (the "magic clip" of Bergstra et al.)
        return float(np.clip(1.06 * sigma * m ** -0.2, 1.0 / min(100.0, 1.0 + m), 0.5)), m

    def logpdf(x: np.ndarray, pts: np.ndarray, w: np.ndarray) -> np.ndarray:
        h, m = bandwidth(pts, w)
        w0 = 1.0 / (m + 1.0)
        z = (x[:, None] - pts[None, :]) / h
        mass = _ncdf((1.0 - pts) / h) - _ncdf(-pts / h)
        dens = np.exp(-0.5 * z * z) / (h * math.sqrt(2 * math.pi) * mass[None, :])
        return np.log(w0 + (1 - w0) * (dens * (w / w.sum())[None, :]).sum(axis=1))

    h, m = bandwidth(*good)
    p = good[1] / good[1].sum()
    cands = np.empty(n_candidates)
    for i in range(n_candidates):
        if rng.uniform() < 1.0 / (m + 1.0):
            cands[i] = rng.uniform()
            continue
        mu = good[0][int(rng.choice(len(p), p=p))]
        x = mu
        for _ in range(20):
            x = rng.normal(mu, h)
            if 0.0 <= x <= 1.0:
                break
        cands[i] = min(1.0, max(0.0, x))
    score = logpdf(cands, *good) - logpdf(cands, *bad)
    return float(cands[int(np.argmax(score))])


def _ncdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


def _shared(a: Path_, b: Path_) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def sample_numeric(records: Sequence[_Record], node: Path_, name: str, dist: FloatDistribution | IntDistribution,
                   rng: np.random.RandomState, *, n_startup: int, gamma: float, n_candidates: int,
                   decay: float) -> Any:
    """Sample a numeric leaf from the trials that suggested it, each weighted by how much of its path
    it shares with ``node``: ``decay ** d``, with ``d`` the tree distance between the node where the
    trial suggested the parameter and ``node`` (1 at the same node; ``decay=0``: that node only, backing
    off to the nearest nodes with observations). Uniform until ``n_startup`` trials suggested it."""
    obs: list[tuple[int, float, float]] = []
    for r in records:
        if name in r.params and not isinstance(r.dists.get(name), CategoricalDistribution):
            u = to_unit(dist, r.params[name])
            if u is not None:
                p = r.node_of[name]
                obs.append((len(node) + len(p) - 2 * _shared(p, node), u, r.q))
    if len(obs) < max(2, n_startup):
        return uniform(dist, rng)
    nearest = min(d for d, _, _ in obs)
    ws = np.array([decay ** (d - nearest) if decay > 0 else float(d == nearest) for d, _, _ in obs])
    keep = ws > 1e-12
    xs = np.array([u for _, u, _ in obs])[keep]
    qs = np.array([q for _, _, q in obs])[keep]
    ws = ws[keep]
    if len(xs) < 2:
        return uniform(dist, rng)
    return from_unit(dist, _parzen_pick(xs, qs, ws, rng, gamma, n_candidates))


# -------------------------------------------------------------------------------------------- MCTS
class TreeSamplerBase(BaseSampler):
    """Shared plumbing of autokd's tree samplers: everything is sampled independently (define-by-run),
    the numpy RNG can be reseeded, and the cache named by ``_cache_attr`` (a snapshot of the storage) is
    dropped on pickling and rebuilt from the storage on first use."""

    _cache_attr = "_snap"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state[self._cache_attr] = None
        return state

    def reseed_rng(self) -> None:
        self._rng = np.random.RandomState()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}


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
    intermediate values, one whose ``prune_reason`` starts with "training diverged" (the loss exploded),
    and a failed trial count as the worst value, 0. Param-less trials (autokd's enqueued baselines) are
    ignored. Multi-objective studies are refused with a ``ValueError``.

    **State.** Statistics are rebuilt from the study's storage (``study.get_trials``) at
    ``before_trial`` and each ``sample_*`` call, cached by the number of finished trials, so several
    workers sharing one study, or a sampler resumed on a stored study, see the same tree. The sampler
    pickles (the cache is dropped; the random state is kept) and is deterministic for a given ``seed``.

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
        self._info = _TreeInfo(space, tree, who)
        self.c = float(c)
        self.n_startup_leaf = n_startup_leaf
        self.gamma = float(gamma)
        self.n_ei_candidates = n_ei_candidates
        self.leaf_decay = float(leaf_decay)
        self.virtual_loss = bool(virtual_loss)
        self._seed = seed
        self._salt = int(seed) if seed is not None else secrets.randbits(63)
        self._rng = np.random.RandomState(seed)
        self._snap: _Snapshot | None = None

    # ---- Optuna's interface ------------------------------------------------------------------
    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        refuse_multi_objective(study, type(self).__name__)
        self._sync(study)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        refuse_multi_objective(study, type(self).__name__)
        snap, running = self._sync(study)
        node, _ = self._info.path(trial.params, trial.distributions)
        dist = param_distribution
        if self._info.is_branching(param_name, dist):
            choices = self._info.choices(param_name, dist)
            pending = self._pending(running, trial.number)
            scores = self._scores(snap, pending, node, param_name, choices)
            return self._argmax(node, param_name, choices, scores)
        if isinstance(dist, (FloatDistribution, IntDistribution)):
            return sample_numeric(snap.records, node, param_name, dist, self._rng, n_startup=self.n_startup_leaf,
                                  gamma=self.gamma, n_candidates=self.n_ei_candidates, decay=self.leaf_decay)
        return uniform(dist, self._rng)

    # ---- statistics -----------------------------------------------------------------------------
    def _sync(self, study: Study) -> tuple[_Snapshot, list[FrozenTrial]]:
        finished, running = fetch(study)
        key = (study.study_name, len(finished), finished[-1].number if finished else -1)
        snap = self._snap
        if snap is None or snap.key != key:
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            records, low, high = build_records(finished, maximize, self._info)
            snap = _Snapshot(key, records, low=low, high=high)
            for r in records:
                for i, k in enumerate(r.path):
                    nw = snap.edges.setdefault(r.path[:i], {}).setdefault(k, [0, 0.0])
                    nw[0] += 1
                    nw[1] += r.q
            self._snap = snap
        return snap, running

    def _pending(self, running: Sequence[FrozenTrial], current: int) -> dict[Path_, dict[Key, int]]:
        out: dict[Path_, dict[Key, int]] = {}
        if not self.virtual_loss:
            return out
        for t in running:
            if t.number == current or not _is_searched(t):
                continue
            path, _ = self._info.path(t.params, t.distributions)
            for i, k in enumerate(path):
                d = out.setdefault(path[:i], {})
                d[k] = d.get(k, 0) + 1
        return out

    def _scores(self, snap: _Snapshot, pending: dict[Path_, dict[Key, int]], node: Path_, name: str,
                choices: Sequence[Any]) -> list[float]:
        edges = snap.edges.get(node, {})
        virt = pending.get(node, {})
        nw = []
        for ch in choices:
            k = _key(name, ch)
            n, w = edges.get(k, (0, 0.0))
            v = virt.get(k, 0)
            nw.append((n + v, w))  # a running trial elsewhere: one more visit, value 0
        total = sum(n for n, _ in nw)
        return [uct_score(w / n if n else 0.0, n, total, self.c) for n, w in nw]

    def _order(self, node: Path_, name: str, choice: Any) -> int:
        h = hashlib.blake2b(repr((self._salt, node, _key(name, choice))).encode(), digest_size=8)
        return int.from_bytes(h.digest(), "big")

    def _argmax(self, node: Path_, name: str, choices: Sequence[Any], scores: Sequence[float]) -> Any:
        best = max(scores)
        tied = [ch for ch, s in zip(choices, scores, strict=True) if s == best]
        return min(tied, key=lambda ch: self._order(node, name, ch))

    # ---- inspection -----------------------------------------------------------------------------
    def tree_stats(self, study: Study) -> dict[tuple[tuple[str, Any], ...], dict[tuple[str, Any], tuple[int, float]]]:
        """``{node: {(name, value): (visits, summed normalised value)}}`` of the finished trials, nodes and
        children as ``(name, value)`` tuples. With a declared tree, unvisited choices of each decision
        seen at a node are listed with ``(0, 0.0)``."""
        snap, _ = self._sync(study)
        out: dict[tuple[tuple[str, Any], ...], dict[tuple[str, Any], tuple[int, float]]] = {}
        for node, kids in snap.edges.items():
            row = {(k[0], k[2]): (int(nw[0]), float(nw[1])) for k, nw in kids.items()}
            if self._info.tree is not None:
                for name in {k[0] for k in kids}:
                    d = self._info.declared.get(name)
                    if d is not None:
                        for ch in (d.choices or list(d.children)):
                            row.setdefault((name, ch), (0, 0.0))
            out[_public(node)] = row
        return out

    def uct_scores(self, study: Study, name: str, node: Sequence[tuple[str, Any]] = (),
                   choices: Sequence[Any] | None = None) -> dict[Any, float]:
        """The UCT score of each choice of decision ``name`` at ``node`` (``inf`` when unvisited), as the
        next trial would see them. ``choices`` default to the declared ones, else the observed ones."""
        snap, running = self._sync(study)
        path = tuple(_key(n, v) for n, v in node)
        if choices is None:
            d = self._info.declared.get(name)
            if d is not None:
                choices = list(d.choices or d.children)
            else:
                choices = [k[2] for k in snap.edges.get(path, {}) if k[0] == name]
        scores = self._scores(snap, self._pending(running, -1), path, name, list(choices))
        return dict(zip(choices, scores, strict=True))
