"""autokd: AutoML for knowledge distillation.

Public API (kept light: torch, optuna, plotly, pandas and ray are imported only when used)::

    import autokd
    study = autokd.run_search("studies/digits.yaml")
    autokd.make_report("studies/digits.yaml")
    path = autokd.export_recipe("studies/digits.yaml")
    result = autokd.train_recipe(path)

    # in your own loop
    recipe = autokd.Recipe.load(path)
    distiller = autokd.Distiller.from_recipe(recipe, teacher, student, input_shape=(1, 8, 8))
    losses = distiller(x, y); losses["loss"].backward()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .api import export_recipe, load_study_config, make_report, run_search, train_recipe, trials_dataframe
from .config import StudyConfig
from .errors import AutoKDError, ConfigError, UnknownNameError
from .recipe import Recipe

if TYPE_CHECKING:
    from .distiller import Distiller
    from .outputs import Outputs, Shapes

__all__ = [
    "__version__",
    "Outputs",
    "Shapes",
    "Recipe",
    "Distiller",
    "StudyConfig",
    "AutoKDError",
    "ConfigError",
    "UnknownNameError",
    "run_search",
    "make_report",
    "export_recipe",
    "train_recipe",
    "trials_dataframe",
    "load_study_config",
]

_LAZY = {"Distiller": ("distiller", "Distiller"), "Outputs": ("outputs", "Outputs"), "Shapes": ("outputs", "Shapes")}


def __getattr__(name: str) -> Any:
    """Torch-backed names are imported on first use, so ``import autokd`` (and ``autokd --help``) stays fast."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
