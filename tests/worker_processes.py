"""Helpers for tests that run ``autokd search`` workers in their own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker_env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    return env


def start_worker(study: Path, *args: str, log: Path | None = None, env: dict[str, str] | None = None
                 ) -> subprocess.Popen:
    """``autokd search STUDY`` in a new process (stdout+stderr to ``log``); ``env`` adds variables."""
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed by the caller
    return subprocess.Popen([sys.executable, "-m", "autokd", "search", str(study), "--threads", "1", *args],
                            stdout=out, stderr=subprocess.STDOUT, env={**worker_env(), **(env or {})}, cwd=ROOT,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """A worker started from a background job would inherit an ignored SIGINT; Ctrl-C tests need it live."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
