"""The local Ray processes a run starts, remembered so that a later run can stop what a killed one left.

``ray.shutdown()`` stops the local Ray a run started, but not always all of it (a Ctrl-C sent to the whole
process group can orphan its agents), and a driver killed with SIGKILL cannot call it: its Ray (GCS server,
raylet, agents) keeps running with ~1 GiB. Right after ``ray.init`` the run writes the process ids and start
times of the processes ``ray.init`` started to ``<study>/ray/processes-<pid>.json`` (and adds their children
before shutting down); after ``ray.shutdown()`` it stops the survivors, and the next run stops those of a dead
owner. A process is stopped only if its start time still matches (a reused process id is never touched).
Linux ``/proc`` only; elsewhere nothing is recorded.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from ...files import atomic_write_text
from .workers import pid_alive

__all__ = ["descendants", "remember_processes", "stop_processes", "reap_orphans"]


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a process, from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid ... starttime (22nd)
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of ``pid``: ``{pid: start time}``."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
                started[int(entry.name)] = st[1]
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = started[child]
            todo.append(child)
    return out


def remember_processes(folder: Path, before: dict[int, int] | None = None) -> Path:
    """Record the processes of the local Ray this process started: its descendants that were not there
    ``before`` ``ray.init``; called again, add the descendants of those recorded (workers and agents started
    since). Other children of this process are never recorded. Returns the record's path."""
    path = folder / f"processes-{os.getpid()}.json"
    if path.is_file():
        known = {int(k): int(v) for k, v in json.loads(path.read_text())["processes"].items()}
        for pid in list(known):
            known.update(descendants(pid))
    else:
        known = {pid: start for pid, start in descendants(os.getpid()).items() if (before or {}).get(pid) != start}
    atomic_write_text(path, json.dumps({"owner": os.getpid(), "processes": known}))
    return path


def stop_processes(record: Path) -> list[int]:
    """SIGKILL the recorded processes that still run (same process id *and* start time), delete the record;
    returns the process ids stopped. After ``ray.shutdown()`` this stops the agents a Ctrl-C sent to the
    whole process group orphaned; for a dead owner's record, its whole Ray."""
    try:
        procs = {int(k): int(v) for k, v in json.loads(record.read_text())["processes"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        procs = {}
    stopped = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                stopped.append(pid)
            except ProcessLookupError:
                pass
    record.unlink(missing_ok=True)
    return stopped


def reap_orphans(folder: Path) -> list[int]:
    """Stop the recorded Ray processes of runs whose driver is dead; returns the process ids stopped."""
    stopped: list[int] = []
    for record in sorted(folder.glob("processes-*.json")) if folder.is_dir() else ():
        try:
            owner = int(json.loads(record.read_text())["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            owner = None
        if owner is None or not pid_alive(owner):
            stopped += stop_processes(record)
    return stopped
