"""The typer application objects (commands register themselves on them in their modules)."""

from __future__ import annotations

from typing import Optional

import typer

__all__ = ["app", "space_app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="autokd: search the best knowledge-distillation recipe for a teacher and a task.")
space_app = typer.Typer(no_args_is_help=True, help="Inspect search spaces.")
app.add_typer(space_app, name="space")


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"autokd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="print the version and exit")) -> None:
    """autokd: search the best knowledge-distillation recipe for a teacher and a task."""
