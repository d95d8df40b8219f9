"""The local Ray processes a run starts, remembered so that a later run can stop what a killed one left.

``ray.shutdown()`` stops the local Ray a run started; a driver killed with SIGKILL cannot, and its Ray
(GCS server, raylet, agents) keeps running with ~1 GiB. Right after ``ray.init`` the run writes the process
ids and start times of its descendants to ``<study>/ray/processes-<pid>.json``; the next run stops those of
a dead owner whose start time still matches (a reused process id is never touched). Linux ``/proc`` only;
elsewhere nothing is recorded.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from ...files import atomic_write_text
from .workers import pid_alive

__all__ = ["descendants", "remember_processes", "forget_processes", "reap_orphans"]


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


def remember_processes(folder: Path) -> Path:
    """Record this process's descendants (the local Ray it just started); returns the record's path."""
    path = folder / f"processes-{os.getpid()}.json"
    atomic_write_text(path, json.dumps({"owner": os.getpid(), "processes": descendants(os.getpid())}))
    return path


def forget_processes(record: Path) -> None:
    record.unlink(missing_ok=True)


def reap_orphans(folder: Path) -> list[int]:
    """Stop the recorded Ray processes of runs whose driver is dead; returns the process ids stopped."""
    stopped = []
    for record in sorted(folder.glob("processes-*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(record.read_text())
            owner, procs = int(data["owner"]), {int(k): int(v) for k, v in data["processes"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if pid_alive(owner):
            continue
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
