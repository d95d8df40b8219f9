"""The record of a local Ray's processes: only what ``ray.init`` started, stopped when its owner is dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from autokd.search.backends.ray_processes import descendants, reap_orphans, remember_processes, stop_processes


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_processes_started_after_the_snapshot_are_recorded(tmp_path):
    old = _sleeper()
    try:
        before = descendants(os.getpid())
        assert old.pid in before
        new = _sleeper()
        try:
            record = remember_processes(tmp_path, before)
            procs = json.loads(record.read_text())["processes"]
            assert str(new.pid) in procs and str(old.pid) not in procs
            assert stop_processes(record) == [new.pid]
            assert new.wait(timeout=10) == -9 and not record.exists()
            assert old.poll() is None  # never touched
        finally:
            new.kill()
            new.wait()
    finally:
        old.kill()
        old.wait()


def test_a_dead_owners_processes_are_stopped_and_a_reused_pid_is_not(tmp_path):
    orphan, bystander = _sleeper(), _sleeper()
    try:
        time.sleep(0.1)
        start = descendants(os.getpid())
        (tmp_path / "processes-1.json").write_text(json.dumps(
            {"owner": _dead_pid(), "processes": {orphan.pid: start[orphan.pid], bystander.pid: start[bystander.pid] + 1}}))
        (tmp_path / "processes-2.json").write_text(json.dumps(
            {"owner": os.getpid(), "processes": {bystander.pid: start[bystander.pid]}}))  # owner alive: kept
        assert reap_orphans(tmp_path) == [orphan.pid]
        assert orphan.wait(timeout=10) == -9 and bystander.poll() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["processes-2.json"]
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()
