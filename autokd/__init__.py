"""autokd: AutoML for knowledge distillation.

Public API (kept light: optuna, plotly and ray are imported only when used)::

    import autokd
    study = autokd.run_search("studies/digits.yaml")
    autokd.make_report("studies/digits.yaml")
    path = autokd.export_recipe("studies/digits.yaml")
    result = autokd.train_recipe(path)

    # in your own loop
    distiller = autokd.Distiller(teacher, student, autokd.Recipe.load(path), input_shape=(1, 8, 8))
    losses = distiller(x, y); losses["loss"].backward()
"""

from __future__ import annotations

from ._version import __version__
from .api import export_recipe, load_study_config, make_report, run_search, train_recipe
from .config import StudyConfig
from .distiller import Distiller
from .errors import AutoKDError, ConfigError, UnknownNameError
from .outputs import Outputs, Shapes
from .recipe import Recipe

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
    "load_study_config",
]
