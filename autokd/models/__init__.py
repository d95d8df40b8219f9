"""The model zoo: CIFAR-style teachers/students (CRD / RepDistiller conventions) and wrapped foreign models.

>>> from autokd import models
>>> net = models.create("resnet20", num_classes=10, in_channels=1)
>>> out = net.forward_outputs(x)          # Outputs(logits, feats, preacts, embedding)
>>> models.shapes(net, (1, 8, 8)).feats   # per-stage (C, H, W)

Names: everything in :data:`MODELS` (see :func:`names`; transformers in :mod:`autokd.models.vit`), plus
``tv/<torchvision name>`` and ``package.module:callable`` (see :mod:`autokd.models.wrap`). Text models
(``textcnn``, registry metadata ``inputs="tokens"``) take token ids of ``input_shape = (seq_len,)``;
:func:`example_input` builds a probe batch of the right dtype. :func:`prepare_student` applies a recipe's
``student.init`` (Net2Net) and ``student.quantize`` to a built model.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import ConfigError

# importing each family registers its models
from . import (  # noqa: F401
    cnn,
    involution,
    mobilenetv2,
    moonshine,
    resnet,
    shufflenetv2,
    text,
    vgg,
    vit,
    wrn,
)
from .base import MODELS, ZooModel, count_params, example_input, flop_counter, shapes
from .prepare import STUDENT_INITS, check_student_options, needs_calibration, prepare_student
from .wrap import FeatureWrapper, discover_stages, torchvision_model, user_model

__all__ = [
    "MODELS",
    "create",
    "from_spec",
    "names",
    "shapes",
    "example_input",
    "count_params",
    "prepare_student",
    "check_student_options",
    "needs_calibration",
    "STUDENT_INITS",
    "flop_counter",
    "ZooModel",
    "FeatureWrapper",
    "discover_stages",
]

_FIXED = ("num_classes", "in_channels")


def names() -> list[str]:
    """Registered model names (sorted). ``tv/*`` and ``module:callable`` names are accepted by
    :func:`create` but not listed."""
    return MODELS.names()


def _check_int(name: str, what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {name!r}: {what} must be an integer >= 1, got {value!r}")


def create(name: str, num_classes: int, in_channels: int = 3, **kw: Any) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    ``kw`` are the family's parameters (e.g. ``create("resnet", 10, depth=14, width=8)``). Unknown names
    raise :class:`~autokd.errors.UnknownNameError`; parameters a model does not take or values it cannot
    build raise :class:`~autokd.errors.ConfigError`.
    """
    _check_int(name, "num_classes", num_classes)
    _check_int(name, "in_channels", in_channels)
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {name!r}")
    if name.startswith("tv/"):
        return torchvision_model(name[3:], num_classes, in_channels, **kw)
    if ":" in name:
        return user_model(name, num_classes, in_channels, **kw)
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p not in _FIXED]
    unknown = sorted(k for k in kw if k not in allowed)
    if unknown:
        family = MODELS.meta(name).get("family")
        hint = f" (the family builder {family!r} takes parameters)" if family and family != name else ""
        raise ConfigError(
            f"model {name!r}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
            + hint
        )
    return factory(num_classes=num_classes, in_channels=in_channels, **kw)


def from_spec(spec: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the model a recipe's ``student`` (or a study's ``teacher``) names: ``spec.name`` and
    ``spec.kwargs``; the model records its name in ``arch_name``."""
    model = create(spec.name, num_classes, in_channels=in_channels, **dict(spec.kwargs))
    model.arch_name = spec.name
    return model
