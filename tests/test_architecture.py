"""The house's shape: no import cycle anywhere in ``autokd/`` (function-level imports count), layers that only
point down, a pure-data Recipe, and no oversized module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "autokd"

# Lower number = lower layer. A module may import its own layer or lower ones, never a higher one.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("autokd._version", "autokd.errors", "autokd.registry", "autokd.hparams", "autokd.files",
         "autokd.fingerprint", "autokd.locks", "autokd.recipe", "autokd.stats")),
    (1, ("autokd.outputs", "autokd.pairs")),
    (2, ("autokd.models", "autokd.data")),
    (3, ("autokd.losses",)),
    (4, ("autokd.distiller",)),
    (5, ("autokd.schemes",)),
    (6, ("autokd.train", "autokd.proxies")),
    (7, ("autokd.config",)),  # validates names against every registry, samplers and pruners included
    (8, ("autokd.context", "autokd.retrain", "autokd.teacher_check")),
    (9, ("autokd.search",)),
    (10, ("autokd.report",)),
    (11, ("autokd.api",)),
    (12, ("autokd.cli", "autokd.demo", "autokd.__main__", "autokd")),
]
# config checks sampler/pruner names: those two registries sit below it although they live in search/
EXCEPTIONS = {("autokd.config", "autokd.search.samplers"), ("autokd.config", "autokd.search.pruners")}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the autokd modules it imports anywhere in its body (module, class or function level)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom):
                if n.module == "__future__":
                    continue
                if n.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    name = ".".join(base + ([n.module] if n.module else []))
                else:
                    name = n.module or ""
                targets = [f"{name}.{a.name}" if f"{name}.{a.name}" in mods else name for a in n.names]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v)):
            return found
    return None


def _layer(module: str) -> int:
    best, rank = -1, None
    for r, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), r
    assert rank is not None, f"{module} is in no layer; add it to LAYERS"
    return rank


def test_the_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_autokd():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_only_point_down():
    bad = []
    for m, targets in import_graph().items():
        for t in targets:
            if _layer(t) > _layer(m) and (m, t) not in EXCEPTIONS and not t.startswith(m + "."):
                if m == "autokd":  # the package root re-exports the public API from every layer
                    continue
                bad.append(f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})")
    assert not bad, "\n".join(sorted(bad))


def test_the_loss_library_imports_nothing_above_it():
    allowed = ("autokd.losses", "autokd.errors", "autokd.hparams", "autokd.outputs", "autokd.pairs",
               "autokd.registry", "autokd.models.connectors")
    for m, targets in import_graph().items():
        if m.startswith("autokd.losses"):
            assert all(t.startswith(allowed) for t in targets), (m, sorted(targets))


def test_recipe_is_pure_data():
    code = "import sys, autokd.recipe, autokd.config; print(sorted(m for m in sys.modules if m.startswith('torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    targets = import_graph()["autokd.recipe"]
    assert targets <= {"autokd._version", "autokd.errors", "autokd.files"}, sorted(targets)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_oversized_module(path):
    # registries of small uniform method classes (losses/) are the stated exception
    if "losses" in path.parts:
        return
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= 500, f"{path.relative_to(PKG)} has {n} lines: split it by job"
