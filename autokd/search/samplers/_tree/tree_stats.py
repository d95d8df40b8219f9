"""MCTS's statistics, kept up to date by a :class:`.ledger.Ledger` as trials finish rather than recomputed from
every finished trial at every sampler call.

* **Edges** (:class:`Edge`): for each node and child, the records whose path goes through it, by trial
  number; the visit count N is their number and the value W the sum of their ``q`` taken in trial-number
  order (so W is the very float a from-scratch loop over the trials gives). A record that arrives after
  every other record of its edge is added to W at once; one that finished out of order, or a new scale
  (every ``q`` changed, :attr:`.ledger.Ledger.version`), leaves W stale, and it is summed again, in order,
  the next time it is read.
* **Leaves** (:class:`Leaf`): for each numeric parameter and distribution the sampler was asked for, one row
  per record that suggested it with a value inside that distribution, by trial number: the value on [0, 1],
  the record's ``q``, and the node it was suggested at, as interned branch ids padded with -1. The tree
  distance from any node to all of them is then one vectorised comparison (:func:`sample_leaf`). A leaf is
  built from all records when first asked for and then gains a row per new record; its ``q`` column is
  refreshed when the scale moves.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from .distributions import from_unit, to_unit, uniform
from .ledger import Ledger
from .parzen import parzen_pick
from .records import BranchKey, Record, TreePath

__all__ = ["Edge", "Leaf", "TreeLedger", "sample_leaf"]

_UNSEEN = -3  # the id of a branch no stored node has (never equal to a stored id nor to the padding -1)


class Edge:
    """A node's child: the records through it by trial number, N and (lazily in-order summed) W."""

    __slots__ = ("records", "_w", "_version")

    def __init__(self, version: int) -> None:
        self.records: list[Record] = []
        self._w = 0.0
        self._version = version

    @property
    def n(self) -> int:
        return len(self.records)

    def add(self, r: Record, version: int) -> None:
        if not self.records or r.number > self.records[-1].number:
            self.records.append(r)
            self._w += r.q  # the in-order sum, one term longer (if W is stale, it is summed anew anyway)
        else:
            bisect.insort(self.records, r, key=lambda x: x.number)
            self._version = -1

    def w(self, version: int) -> float:
        """The sum of the records' ``q`` in trial-number order."""
        if self._version != version:
            w = 0.0
            for r in self.records:
                w += r.q
            self._w, self._version = w, version
        return self._w


class Leaf:
    """The observations of numeric parameter ``name`` under distribution ``dist`` (rows by trial number)."""

    def __init__(self, name: str, dist: FloatDistribution | IntDistribution, version: int) -> None:
        self.name, self.dist = name, dist
        self.n = 0
        self.numbers: list[int] = []
        self.records: list[Record] = []
        self.u = np.zeros(16)
        self.q = np.zeros(16)
        self.depth = np.zeros(16, dtype=np.int64)  # the length of the node each value was suggested at
        self.nodes = np.full((16, 1), -1, dtype=np.int32)  # that node's branch ids, padded with -1
        self.version = version

    def add(self, r: Record, node_ids: list[int], version: int) -> None:
        if self.name not in r.params or isinstance(r.dists.get(self.name), CategoricalDistribution):
            return
        u = to_unit(self.dist, r.params[self.name])
        if u is None:
            return
        n = self.n
        if n == len(self.u):
            self.u, self.q, self.depth = (np.resize(a, 2 * n) for a in (self.u, self.q, self.depth))
            self.nodes = np.vstack([self.nodes, np.full_like(self.nodes, -1)])
        if len(node_ids) + 1 > self.nodes.shape[1]:
            wider = np.full((len(self.nodes), len(node_ids) + 1), -1, dtype=np.int32)
            wider[:, : self.nodes.shape[1]] = self.nodes
            self.nodes = wider
        pos = bisect.bisect_left(self.numbers, r.number)
        if pos < n:  # finished out of order: make room (numpy copies overlapping slices correctly)
            for a in (self.u, self.q, self.depth, self.nodes):
                a[pos + 1: n + 1] = a[pos:n]
        self.u[pos], self.q[pos], self.depth[pos] = u, r.q, len(node_ids)
        self.nodes[pos] = -1
        self.nodes[pos, : len(node_ids)] = node_ids
        self.numbers.insert(pos, r.number)
        self.records.insert(pos, r)
        self.n = n + 1

    def qs(self, version: int) -> np.ndarray:
        if self.version != version:
            self.q[: self.n] = [r.q for r in self.records]
            self.version = version
        return self.q[: self.n]


def sample_leaf(leaf: Leaf, node_ids: list[int], version: int, rng: np.random.RandomState, *, n_startup: int,
                gamma: float, n_candidates: int, decay: float) -> Any:
    """Sample a numeric leaf from the trials that suggested it, each weighted by how much of its path
    it shares with the current node (``node_ids``): ``decay ** d``, with ``d`` the tree distance between the
    node where the trial suggested the parameter and the current one, less the smallest such distance (1 at
    the nearest nodes with observations; ``decay=0``: those nodes only). Uniform until ``n_startup``
    trials suggested it; then the Parzen choice of :func:`.parzen.parzen_pick`."""
    n = leaf.n
    if n < max(2, n_startup):
        return uniform(leaf.dist, rng)
    width = leaf.nodes.shape[1]
    here = np.full(width, -2, dtype=np.int32)  # -2: beyond the current node (differs from ids and padding)
    m = min(len(node_ids), width)
    here[:m] = node_ids[:m]
    shared = (leaf.nodes[:n] != here).argmax(axis=1)  # every row ends in -1 padding: a mismatch exists
    dist = len(node_ids) + leaf.depth[:n] - 2 * shared
    nearest = int(dist.min())
    table = np.array([decay ** k if decay > 0 else float(k == 0) for k in range(int(dist.max()) - nearest + 1)])
    ws = table[dist - nearest]
    keep = ws > 1e-12
    xs, qs, ws = leaf.u[:n][keep], leaf.qs(version)[keep], ws[keep]
    if len(xs) < 2:
        return uniform(leaf.dist, rng)
    return from_unit(leaf.dist, parzen_pick(xs, qs, ws, rng, gamma, n_candidates))


class TreeLedger(Ledger):
    """A :class:`.ledger.Ledger` that also keeps MCTS's edges (``{node: {child: Edge}}``) and the leaves
    the sampler has asked for, updated with each absorbed record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edges: dict[TreePath, dict[BranchKey, Edge]] = {}
        self._leaves: dict[tuple[str, FloatDistribution | IntDistribution], Leaf] = {}
        self._leaves_of: dict[str, list[Leaf]] = {}
        self._ids: dict[BranchKey, int] = {}

    def node_ids(self, node: TreePath) -> list[int]:
        """The interned ids of a node's branches (:data:`_UNSEEN` for a branch no stored node has)."""
        return [self._ids.get(k, _UNSEEN) for k in node]

    def _intern(self, node: TreePath) -> list[int]:
        ids = self._ids
        return [ids.setdefault(k, len(ids)) for k in node]

    def leaf(self, name: str, dist: FloatDistribution | IntDistribution) -> Leaf:
        """The observations of ``name`` under ``dist`` (built from every record on first use)."""
        leaf = self._leaves.get((name, dist))
        if leaf is None:
            leaf = self._leaves[(name, dist)] = Leaf(name, dist, self.version)
            self._leaves_of.setdefault(name, []).append(leaf)
            for r in self.records:
                if name in r.node_of:
                    leaf.add(r, self._intern(r.node_of[name]), self.version)
        return leaf

    def _added(self, r: Record) -> None:
        path, version = r.path, self.version
        for i, k in enumerate(path):
            kids = self.edges.setdefault(path[:i], {})
            edge = kids.get(k)
            if edge is None:
                edge = kids[k] = Edge(version)
            edge.add(r, version)
        for name, leaves in self._leaves_of.items():
            if name in r.node_of:
                ids = self._intern(r.node_of[name])
                for leaf in leaves:
                    leaf.add(r, ids, version)
