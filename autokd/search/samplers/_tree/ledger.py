"""The tree samplers' incremental view of a study: the records of its finished searched trials, kept up to date
from the storage by absorbing only the trials that finished since the last look, instead of rebuilding every
record at every sampler call (which made one suggestion cost O(trials)).

**Absorbing.** Optuna numbers a study's trials 0, 1, 2, ... and its storages list them in that order, so
trial ``i`` sits at index ``i`` of ``study.get_trials()``. A *frontier* marks the first trial not yet known
to be finished; every earlier trial has been absorbed. Each :meth:`Ledger.update` reads the study's trials
(as the samplers did before: other workers' trials arrive through the shared storage) and scans only from the
frontier on: a finished trial whose number is not yet in ``seen`` is absorbed, running trials are collected
(MCTS's virtual loss), and the frontier moves past every absorbed trial. A trial that finishes out of order
(while a lower-numbered one still runs) is absorbed when it is first seen finished, and the set ``seen``
ensures that re-reading it later (every storage read returns it again) never absorbs it twice. Should a
storage list trials in any other order, the ledger scans every trial instead (same result, slower).

**Normalisation.** ``q`` (see :func:`.records.build_records`) depends on the scale of all finished trials:
the lowest and highest completed value (or, before any completes, pruned trials' last values). The ledger
keeps both minima and maxima; when a new trial moves the scale, every record's ``q`` is recomputed and
:attr:`Ledger.version` increases, so that statistics derived from ``q`` know to refresh (most new trials do
not move the scale, and then only the new records get a ``q``).

**Identity.** A ledger belongs to one study in one storage object (a sampler moved to another study builds a
new one); it is never pickled (:class:`.base.TreeSamplerBase` drops it), and a ledger built afresh from the
storage holds exactly the records, in the same order and with the same ``q``, as one kept up to date
trial by trial, and as :func:`.records.build_records` computes from scratch.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from .records import FINISHED, Record, TreeInfo, is_searched, make_record, normalise, scale_point

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["Ledger"]


class Ledger:
    """The records of one study's finished searched trials, in trial-number order, kept up to date by
    :meth:`update`. Subclasses derive further statistics from each new record (:meth:`_added`) and
    refresh what depends on ``q`` when :attr:`version` moves.

    Attributes:
        records: the finished searched trials' records, by trial number (baselines and param-less trials
            are left out); their ``q`` is that of the current scale.
        by_number: the same records by trial number.
        low, high: the signed ends of the normalisation scale (``None`` until a trial gives one).
        version: increases whenever the ``q`` of records absorbed earlier change (a new scale).
        running: the study's running trials at the last :meth:`update`.
    """

    def __init__(self, study: Study, info: TreeInfo, maximize: bool) -> None:
        self.storage, self.study_id = study._storage, study._study_id
        self.info = info
        self.sign = 1.0 if maximize else -1.0
        self.records: list[Record] = []
        self.by_number: dict[int, Record] = {}
        self.low: float | None = None
        self.high: float | None = None
        self.version = 0
        self.running: list[FrozenTrial] = []
        self._numbers: list[int] = []  # the records' trial numbers, sorted (where a late finisher goes)
        self._seen: set[int] = set()  # every finished trial absorbed, searched or not
        self._frontier = 0  # every trial numbered below it is finished and absorbed
        self._ends: dict[bool, list[float]] = {}  # completed (True) / pruned (False) -> [low, high]

    def matches(self, study: Study) -> bool:
        """Whether this ledger describes ``study`` (same storage object, same study)."""
        return study._storage is self.storage and study._study_id == self.study_id

    # ---- absorbing ------------------------------------------------------------------------------
    def update(self, study: Study) -> None:
        """Absorb the trials finished since the last update and note the running ones."""
        trials = study.get_trials(deepcopy=False)
        start = self._frontier if len(trials) >= self._frontier else 0
        running: list[FrozenTrial] = []
        new: list[FrozenTrial] = []
        for i in range(start, len(trials)):
            t = trials[i]
            if t.number != i:  # not listed by number: scan them all
                return self._update_unordered(trials)
            state = t.state
            if state == TrialState.RUNNING:
                running.append(t)
            elif state in FINISHED and i not in self._seen:
                new.append(t)
        self.running = running
        self._absorb(new)
        seen, n = self._seen, len(trials)
        while self._frontier < n and self._frontier in seen:
            self._frontier += 1

    def _update_unordered(self, trials: list[FrozenTrial]) -> None:
        self.running = [t for t in trials if t.state == TrialState.RUNNING]
        self._absorb(sorted((t for t in trials if t.state in FINISHED and t.number not in self._seen),
                            key=lambda t: t.number))

    def _absorb(self, trials: list[FrozenTrial]) -> None:
        """Add ``trials`` (finished, new, by number): records first, then the scale, then ``q``, then the
        subclass's statistics (which therefore always see the final ``q`` of this update)."""
        added: list[Record] = []
        for t in trials:
            self._seen.add(t.number)
            if is_searched(t):
                added.append(make_record(t, self.info))
        if not added:
            return
        moved = False
        for r in added:
            p = scale_point(r, self.sign)
            if p is not None:
                ends = self._ends.get(p[0])
                if ends is None:
                    self._ends[p[0]] = [p[1], p[1]]
                elif p[1] < ends[0]:
                    ends[0] = p[1]
                elif p[1] > ends[1]:
                    ends[1] = p[1]
        low, high = self._ends.get(True) or self._ends.get(False) or (None, None)
        if (low, high) != (self.low, self.high):
            self.low, self.high, moved = low, high, True
        for r in added:
            pos = bisect.bisect_left(self._numbers, r.number)
            self._numbers.insert(pos, r.number)
            self.records.insert(pos, r)
            self.by_number[r.number] = r
        if moved:
            for r in self.records:
                r.q = normalise(r.raw, self.sign, low, high)
            self.version += 1
        else:
            for r in added:
                r.q = normalise(r.raw, self.sign, low, high)
        for r in added:
            self._added(r)

    # ---- for subclasses -------------------------------------------------------------------------
    def _added(self, r: Record) -> None:
        """Called once for each absorbed record, after the scale and every ``q`` are final (statistics
        derived from earlier records' ``q`` refresh themselves when :attr:`version` has moved)."""
