"""What every command shares: the consoles (soft-wrapped when piped), the user-mistake boundary (one line, exit
code 2) and how a command names a study (a study file, its output folder, or a storage URL and a name)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import AutoKDError, ConfigError

__all__ = ["console", "err_console", "make_console", "clean", "terminate_as_interrupt", "with_device",
           "open_stored_study"]


def make_console(*, stderr: bool = False) -> Console:
    """A rich console that never hard-wraps lines when its output is not a terminal (a pipe, a file, a CI log):
    long lines stay whole (soft wrap) and tables get a wide width unless ``COLUMNS`` says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    if tty:
        return Console(stderr=stderr)
    width = None if os.environ.get("COLUMNS") else 200
    return Console(stderr=stderr, soft_wrap=True, width=width)


console = make_console()
err_console = make_console(stderr=True)


def clean(fn):
    """User mistakes (``AutoKDError``) print one line and exit with code 2 (or the error's ``exit_code``, e.g. a
    stopped worker); Ctrl-C says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutoKDError as e:
            code = getattr(e, "exit_code", 2)
            label = "stopped:" if code != 2 else "[bold red]error:[/]"
            err_console.print(f"{label} {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            err_console.print("stopped: interrupted; rerun the same command to resume (completed trials are kept)",
                              soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM ends the running trial like Ctrl-C does (recorded as failed, retried on resume)."""
    import signal

    def on_term(signum, frame):
        from ..search.backends.optuna_backend import Interrupted

        raise Interrupted("SIGTERM", 143)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_device(cfg, device: str | None):
    if device is None:
        return cfg
    try:
        return cfg.model_copy(update={"device": type(cfg).model_validate({**cfg.model_dump(), "device": device}).device})
    except Exception:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None


def open_stored_study(study: Path | None, storage: str | None, study_name: str | None) -> tuple[Any, Any, Path | None]:
    """``(optuna study, StudyConfig or None, study output folder or None)`` from a study file, its output folder,
    or ``--storage URL --study-name NAME``."""
    if storage is not None or study_name is not None:
        if study is not None:
            raise ConfigError("give a study file/folder OR --storage with --study-name, not both")
        if not storage or not study_name:
            raise ConfigError("--storage and --study-name go together")
        import optuna

        from ..search.backends.storage import make_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            st = optuna.load_study(study_name=study_name, storage=make_storage(storage))
        except KeyError:
            raise ConfigError(f"study {study_name!r} not found in {storage}") from None
        return st, None, None
    if study is None:
        raise ConfigError("name a study: a study YAML, its output folder, or --storage URL --study-name NAME")
    from ..api import load_study_config
    from ..search.backends.storage import load_study

    cfg = load_study_config(study)
    return load_study(cfg), cfg, cfg.study_dir
