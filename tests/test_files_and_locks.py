"""Atomic writes, atomic folder swaps, strict YAML and the inter-process file lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from autokd.errors import ConfigError
from autokd.files import atomic_dir, atomic_write, atomic_write_text, load_yaml, parse_yaml
from autokd.locks import LockTimeout, file_lock


def test_atomic_write_replaces_only_on_success(tmp_path):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), atomic_write(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]  # no temporary left behind
    atomic_write_text(p, "new")
    assert p.read_text() == "new"


def test_atomic_write_fsyncs_only_when_durable(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    atomic_write_text(tmp_path / "a.txt", "one")
    assert len(synced) == 1
    atomic_write_text(tmp_path / "b.txt", "two", durable=False)
    assert len(synced) == 1 and (tmp_path / "b.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporaries left


def test_atomic_dir_swaps_the_whole_folder(tmp_path):
    d = tmp_path / "final"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(d) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed half way")
    assert {p.name: p.read_text() for p in d.iterdir()} == {"a": "1", "b": "1"}
    with atomic_dir(d) as tmp:
        (tmp / "c").write_text("3")
    assert {p.name for p in d.iterdir()} == {"c"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    # a crash between the two renames of a swap: the previous folder is restored on the next use
    d.rename(tmp_path / ".final.previous")
    with atomic_dir(d) as tmp:
        assert (d / "c").is_file()
        (tmp / "d").write_text("4")
    assert {p.name for p in d.iterdir()} == {"d"}


def test_yaml_refuses_duplicate_keys_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match=r"x.yaml: malformed YAML \(line 3.*duplicate key 'a' \(first at line 1\)"):
        parse_yaml("a: 1\nb: {c: 2}\na: 3\n", "x.yaml")
    with pytest.raises(ConfigError, match="duplicate key 'c'"):
        parse_yaml("b: {c: 2, c: 3}\n", "x.yaml")
    assert parse_yaml("a: [1, 2]\nb: {c: 2}\n", "x.yaml") == {"a": [1, 2], "b": {"c": 2}}
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(ConfigError, match="not a text"):
        load_yaml(p)


def _hold(path: str, seconds: float, started) -> None:
    with file_lock(path):
        started.set()
        time.sleep(seconds)


def test_file_lock_excludes_another_process_and_is_released_when_it_dies(tmp_path):
    lock = str(tmp_path / "x.lock")
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_hold, args=(lock, 30, started))
    p.start()
    assert started.wait(60)
    with pytest.raises(LockTimeout):
        with file_lock(lock, timeout=0.5):
            pass
    p.kill()  # like kill -9: the kernel releases the lock
    p.join()
    t0 = time.monotonic()
    with file_lock(lock, timeout=5):
        with file_lock(lock):  # re-entrant in one thread
            pass
    assert time.monotonic() - t0 < 5


def test_file_lock_creates_its_folder(tmp_path):
    with file_lock(Path(tmp_path) / "deep" / "x.lock"):
        assert (tmp_path / "deep" / "x.lock").exists()


def test_temporaries_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale_file = tmp_path / f".out.txt.{dead}.abcd1234.tmp"
    stale_file.write_text("torn")
    stale_dir = tmp_path / f".final.{dead}.abcd1234.tmp"
    stale_dir.mkdir()
    mine = tmp_path / f".out.txt.{os.getpid()}.abcd1234.tmp"  # a live writer's temporary is left alone
    mine.write_text("in progress")
    atomic_write_text(tmp_path / "out.txt", "ok")
    with atomic_dir(tmp_path / "final"):
        pass
    assert not stale_file.exists() and not stale_dir.exists() and mine.exists()
