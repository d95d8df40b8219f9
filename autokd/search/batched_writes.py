"""Fewer, larger storage writes for what a trial records: several user attributes in ONE write
(:func:`set_user_attrs`), per-epoch intermediate values written at most once a second
(:class:`IntermediateValues`), and everything a trial writes at one step -- its suggested parameters and
recipe record before training, its last intermediate values and metrics after -- in ONE transaction
(:func:`grouped_writes`).

Optuna offers only ``Trial.set_user_attr`` (one key per call). On an RDB storage every call is its own session:
it loads the trial row, checks that it is still updatable, upserts one row and commits -- about 1 ms each on
SQLite in WAL mode and a network round trip or three on PostgreSQL. A trial records about 15 attributes, so
autokd writes them in groups (what a trial is before it trains; what it produced) and this module turns each
group into one transaction: one trial check and one multi-row upsert into Optuna's own
``trial_user_attributes`` table, with the very values ``set_user_attr`` would store (``json.dumps``), so
Optuna, optuna-dashboard and older autokd read them as before.

Each ``trial.suggest_*`` is its own transaction the same way (trial check, a query for the parameter's
distribution in earlier trials unless cached, insert, commit: ~0.8 ms on SQLite, ~2 ms on PostgreSQL), and a
recipe takes 4-8 of them. Inside :func:`grouped_writes` they are checked and kept, then written in one
transaction with the checks of Optuna's ``_set_trial_param_without_commit`` and the same rows (one trial
check, one query for distributions this process has not seen, one multi-row insert), together with the
user attributes and intermediate values written in the same group.

Intermediate values (``Trial.report``) are one write per epoch the same way (~1 ms on SQLite, ~3 ms on
PostgreSQL: 15-45 ms for a 15-epoch trial). :class:`IntermediateValues` keeps each value in the live trial at
once -- the pruner reads it from there, exactly as after ``Trial.report`` -- and writes the pending ones in
one statement when a second has passed since training started or since the last write, and when the trial's
training ends. The last group of a trial (its last values and metrics) goes, on a lean RDB storage, into the
transaction that changes its state (``grouped_writes(until_tell=True)``).

The RDB storages (SQLite, PostgreSQL) and Optuna's journal storage (a journal file: one append, one file
lock, for a whole group instead of one per value) are written this way, by the writers of
:mod:`.trial_writers`; any other storage (in-memory, gRPC proxy) and anything that is not a live
``optuna.Trial`` (a ``FrozenTrial`` under construction, a plain mapping with ``set_user_attr``) gets one
``set_user_attr`` per key, which is the same contract, key by key.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .trial_writers import writer_of

__all__ = ["set_user_attrs", "grouped_writes", "IntermediateValues"]


def set_user_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    """Store every ``key: value`` of ``attrs`` as a user attribute of ``trial`` (one write where the storage
    allows it; see the module docstring)."""
    if not attrs:
        return
    group = _group_of(trial)
    if group is not None:  # inside grouped_writes: written with the rest of the group
        group.attrs.update(attrs)
        trial._cached_frozen_trial.user_attrs.update(attrs)
        return
    writer = writer_of(trial)
    if writer is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    writer.write(trial._trial_id, attrs=attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr keeps in step with storage


class _Group:
    """The trial's storage, except that this trial's parameters and user attributes are kept for one write."""

    def __init__(self, storage: Any, trial_id: int, writer: Any) -> None:
        self._storage, self._trial_id, self.writer = storage, trial_id, writer
        self.params: list[tuple[str, float, Any]] = []
        self.attrs: dict[str, Any] = {}
        self.values: dict[int, float] = {}

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_param(trial_id, name, value, distribution)
            return
        from optuna.distributions import check_distribution_compatibility

        known = self.writer.known_distribution(trial_id, name)
        if known is not None:  # the error Optuna raises at this call, raised at the same call
            check_distribution_compatibility(known, distribution)
        self.params.append((name, value, distribution))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id != self._trial_id:
            self._storage.set_trial_user_attr(trial_id, key, value)
            return
        self.attrs[key] = value

    def write(self, until_tell: bool = False) -> None:
        if not (self.params or self.attrs or self.values):
            return
        defer = getattr(self.writer, "defer", None)
        if until_tell and not self.params and defer is not None and defer(self._trial_id, self.attrs, self.values):
            return
        self.writer.write(self._trial_id, self.params, self.attrs, self.values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _group_of(trial: Any) -> _Group | None:
    storage = getattr(trial, "storage", None)
    return storage if isinstance(storage, _Group) else None


@contextlib.contextmanager
def grouped_writes(trial: Any, until_tell: bool = False) -> Iterator[None]:
    """Inside: ``trial.suggest_*``, ``trial.set_user_attr``, :func:`set_user_attrs` and
    :meth:`IntermediateValues.flush` of ``trial`` act on the live trial at once (it holds every value, as
    after Optuna's own writes); on leaving, they reach the storage in ONE write (an RDB transaction, a
    journal append), with the checks Optuna's writes make (trial still running, parameter distributions
    compatible with the study's).

    Leaving by an exception writes them too (they are what Optuna would have stored before the exception),
    unless that write fails: then the original exception goes on. Inside a group, another group is the same
    group. Other storages are written at each call, as usual.

    ``until_tell`` (a trial's last writes, just before it is told): where the storage offers it (a lean RDB
    storage inside ``telling``, see ``run_one_trial``), user attributes and intermediate values left by a
    normal exit are stored in the transaction of the trial's state change instead of one of their own;
    reads of the trial until then show them, and they are written on their own if no state change comes."""
    writer = None if _group_of(trial) is not None else writer_of(trial)
    if writer is None:
        yield
        return
    storage = trial.storage
    group = _Group(storage, trial._trial_id, writer)
    trial.storage = group
    try:
        yield
    except BaseException:
        trial.storage = storage
        with contextlib.suppress(Exception):
            group.write()
        raise
    trial.storage = storage
    group.write(until_tell=until_tell)


class IntermediateValues:
    """``report(value, step)`` for one live trial, as ``Trial.report`` (same checks; a step reported twice is
    ignored), with the storage writes grouped: the value is in the live trial at once (``should_prune`` and
    the pruner read it there) and reaches the storage with the first report ``interval_s`` seconds or more
    after the last write (or, for the first write, after this object was made: the trial's training
    started), or at :meth:`flush`, which the caller runs when training ends, before the trial is told. A
    trial shorter than ``interval_s`` thus stores its curve in one write with its results (a demo trial:
    ~0.6 s). Storages without a grouped writer (:mod:`.trial_writers`) are written at once."""

    def __init__(self, trial: Any, interval_s: float = 1.0) -> None:
        self.trial, self.interval_s = trial, float(interval_s)
        self.writer = writer_of(trial)
        self.pending: dict[int, float] = {}
        self.last = time.monotonic()  # training starts: its first second of values goes in one write

    def report(self, value: float, step: int) -> None:
        if self.writer is None:
            self.trial.report(value, step)
            return
        value, step = float(value), int(step)
        if step < 0:
            raise ValueError(f"step must be non-negative (got {step})")
        cached = self.trial._cached_frozen_trial.intermediate_values
        if step in cached:
            return
        cached[step] = value
        self.pending[step] = value
        if time.monotonic() - self.last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the pending values (one write; inside :func:`grouped_writes`, with the group)."""
        if not self.pending:
            return
        group = _group_of(self.trial)
        if group is not None:
            group.values.update(self.pending)
        else:
            self.writer.write(self.trial._trial_id, values=self.pending)
        self.pending.clear()
        self.last = time.monotonic()
