"""A committed index of the registries, so ``autokd list`` answers without importing torch.

The index (``catalog.json`` beside this module) holds the rows :func:`live_rows` computes from the registries,
keyed by a hash of the source files that define them. A listing uses it only when that hash matches the
installed sources; otherwise it imports the registries (slower, always right). ``python -m
autokd.cli.catalog_index`` rewrites it; a test fails when the committed one is stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..files import atomic_write_text

PACKAGE = Path(__file__).resolve().parents[1]
INDEX = Path(__file__).with_name("catalog.json")
#: what defines the registered components and the rows shown for them
SOURCES = ("losses", "models", "schemes", "proxies", "data", "search/samplers", "search/pruners.py",
           "registry.py", "hparams.py", "cli/catalog_index.py")
FAMILIES = ("losses", "models", "schemes", "samplers", "pruners", "datasets", "proxies")


def source_key() -> str:
    """SHA-256 over the path and bytes of every ``.py`` file in :data:`SOURCES`."""
    h = hashlib.sha256()
    for entry in SOURCES:
        p = PACKAGE / entry
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(PACKAGE).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _registry(family: str):
    if family == "losses":
        from ..losses import LOSSES as reg
    elif family == "schemes":
        from ..schemes import SCHEMES as reg
    elif family == "models":
        from ..models import MODELS as reg
    elif family == "samplers":
        from ..search.samplers import SAMPLERS as reg
    elif family == "pruners":
        from ..search.pruners import PRUNERS as reg
    elif family == "proxies":
        from ..proxies import PROXIES as reg
    else:
        from ..data import DATASETS as reg
    return reg


def live_rows(family: str) -> list[dict[str, Any]]:
    """One row per registered component, from the registry itself: name, description/paper, and for losses
    level, needs and hyper-parameter defaults, for schemes their parameters (JSON values)."""
    reg = _registry(family)
    rows = []
    for name, obj in reg.items():
        meta = reg.meta(name)
        row: dict[str, Any] = {"name": name}
        if family == "losses":
            row.update(level=obj.level, needs=sorted(obj.needs),
                       hparams={k: h.default for k, h in obj.hparams.items()}, paper=obj.paper)
        elif family == "schemes":
            row.update(params={k: h.default for k, h in obj.hparams.items()}, paper=obj.paper)
        else:
            desc = meta.get("description") or meta.get("paper") or meta.get("family", "")
            if family == "proxies":
                desc = f"{desc} [BN {meta.get('bn_mode', '-')}{', needs teacher' if meta.get('needs_teacher') else ''}]"
            row["description"] = str(desc)
        rows.append(row)
    return json.loads(json.dumps(rows, default=str))


def build_index() -> dict[str, Any]:
    return {"source_key": source_key(), "families": {f: live_rows(f) for f in FAMILIES}}


def write_index(path: Path = INDEX) -> dict[str, Any]:
    index = build_index()
    atomic_write_text(path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def _read_index(path: Path) -> dict[str, Any] | None:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("source_key") == source_key() else None


def rows(family: str, path: Path = INDEX) -> list[dict[str, Any]]:
    """The family's rows from the index when it matches the sources, else from the registries."""
    index = _read_index(path)
    return index["families"][family] if index is not None else live_rows(family)


if __name__ == "__main__":
    written = write_index()
    print(f"wrote {INDEX.name}: " + ", ".join(f"{len(v)} {k}" for k, v in written["families"].items()))
