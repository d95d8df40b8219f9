"""``autokd list`` and ``autokd space``: what is registered and what a search space holds."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from ._app import app, space_app
from ._common import clean, console

__all__ = ["Family", "Level", "catalog_rows"]


class Family(str, Enum):
    losses = "losses"
    models = "models"
    schemes = "schemes"
    samplers = "samplers"
    pruners = "pruners"
    datasets = "datasets"
    proxies = "proxies"


class Level(str, Enum):
    logit = "logit"
    feature = "feature"
    relation = "relation"
    primitive = "primitive"


def catalog_rows(family: Family, level: Level | None = None) -> list[dict[str, Any]]:
    """One row per registered component: name, description/paper, and for losses level, needs and
    hyper-parameters (defaults), for schemes their parameters (from the index when it is current)."""
    from .catalog_index import rows

    out = rows(family.value)
    if level is not None:
        out = [r for r in out if r["level"] == level.value]
    return out


@app.command("list")
@clean
def list_(family: Family = typer.Argument(..., help="what to list"),
          level: Optional[Level] = typer.Option(None, "--level", help="losses only: logit, feature, relation, ..."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="full citations and hyper-parameters"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List registered components (losses: a compact table; --verbose for citations)."""
    rows = catalog_rows(family, level)
    if as_json:
        print(json.dumps(rows, indent=1, default=str))
        return
    from rich.table import Table

    table = Table(title=f"{family.value} ({len(rows)})")
    table.add_column("name", no_wrap=True)
    if family is Family.losses:
        table.add_column("level")
        table.add_column("needs")
        if verbose:
            table.add_column("hyper-parameters (default)")
            table.add_column("paper")
        for r in rows:
            cells = [r["name"], r["level"], ",".join(r["needs"])]
            if verbose:
                cells += [", ".join(f"{k}={v}" for k, v in r["hparams"].items()), r["paper"]]
            table.add_row(*[escape(c) for c in cells])
    elif family is Family.schemes:
        table.add_column("parameters (default)")
        table.add_column("paper")
        for r in rows:
            table.add_row(escape(r["name"]), escape(", ".join(f"{k}={v}" for k, v in r["params"].items())),
                          escape(r["paper"] if verbose else r["paper"].split("(")[0].strip()))
    else:
        table.add_column("description")
        for r in rows:
            table.add_row(escape(r["name"]), escape(r["description"]))
    console.print(table)
    if family is Family.losses and not verbose:
        console.print("citations and hyper-parameters: autokd list losses --verbose", highlight=False)


@space_app.command("show")
@clean
def space_show(path: Path = typer.Argument(..., help="search space YAML"),
               study: Optional[Path] = typer.Option(None, "--study", help="study YAML: show the default term "
                                                    "weight ranges for its teacher and data (loads the data)")) -> None:
    """Print a search space's decisions and parameters."""
    from ..search.space import SearchSpace

    sp = SearchSpace.load(path)
    if study is not None:
        from .. import models
        from ..api import load_study_config
        from ..search.weight_ranges import space_for_models

        cfg = load_study_config(study)
        data = cfg.data.create(cfg.base_dir)
        teacher = models.shapes(models.from_spec(cfg.teacher, data.num_classes, data.input_shape[0]),
                                tuple(data.input_shape))
        sp.check_models(teacher, data.num_classes, data.input_shape)
        sp = space_for_models(sp, teacher, data.num_classes, data.input_shape)
        console.print(f"default term weight ranges for the models of {study} (teacher {cfg.teacher.name}, inputs "
                      f"{'x'.join(map(str, data.input_shape))})", highlight=False, soft_wrap=True, markup=False)
    console.print(sp.describe(), highlight=False, soft_wrap=True, markup=False)


@space_app.command("schema")
@clean
def space_schema() -> None:
    """Print the JSON Schema of search-space files."""
    from ..search.space import SpaceFile

    print(json.dumps(SpaceFile.model_json_schema(by_alias=True), indent=2))
