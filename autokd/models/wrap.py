"""Foreign models behind the zoo interface.

- ``tv/<name>``: any torchvision classifier, built with ``torchvision.models.get_model(name, weights=None,
  num_classes=...)`` (no pretrained weights); the first conv is rebuilt when ``in_channels != 3``.
- ``package.module:callable``: a user factory, imported with :mod:`importlib` and called with
  ``num_classes=`` (and ``in_channels=`` when its signature names it; otherwise the first conv is rebuilt).
- :class:`FeatureWrapper`: gives any ``nn.Module`` classifier ``forward_outputs`` with stage features found
  by forward hooks (automatic discovery, overridable with ``stages=``). Transformers (``tv/vit_*``): the
  stages are the transformer blocks, their (N, L, D) token outputs are reported as patch grids and each
  block's Q, K, V are captured on its attention's projection (see :mod:`autokd.models.tokens`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from ..errors import ConfigError, UnknownNameError
from ..outputs import Outputs
from .base import _device_dtype
from .connectors import tokens_to_map
from .tokens import QKVCapture, attention_of, is_attention, token_grid, transformer_blocks

__all__ = ["FeatureWrapper", "discover_stages", "set_in_channels", "torchvision_model", "user_model"]

#: module types never taken as a stage: pooling (the global pool would otherwise be the last "stage"),
#: flatten, dropout, identity.
_NOT_STAGES = (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
    nn.Flatten,
    _DropoutNd,
    nn.Identity,
)


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, Tensor):
                return o
    return None


def _as_logits(out: Any) -> Tensor:
    """The logits of a model's raw output (a tensor, an object with ``.logits``, a dict or a tuple)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        for key in ("logits", "out"):
            if isinstance(out.get(key), Tensor):
                return out[key]
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    t = _first_tensor(out)
    if t is None:
        raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")
    return t


class _ModeGuard:
    """Eval mode + no_grad for a probe; restores each submodule's train/eval flag."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        for m, training in self.modes:
            m.training = training


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _res(t: Any) -> tuple[int, int] | None:
    t = _first_tensor(t)
    return (int(t.shape[-2]), int(t.shape[-1])) if t is not None and t.dim() == 4 else None


def discover_stages(model: nn.Module, example: Tensor, classifier: nn.Module | None = None) -> list[str]:
    """Names (as in ``named_modules``) of the stage modules of ``model`` for inputs like ``example``.

    Transformers: the modules that directly contain an attention module (``nn.MultiheadAttention`` or a fused
    ``qkv`` projection), i.e. the transformer blocks (:func:`~autokd.models.tokens.transformer_blocks`), one
    stage each. Other models: runs ``example`` once (eval mode, no grad) with forward hooks on every submodule and records, in
    completion order, each module's 4-D tensor output until ``classifier`` starts. Then:

    1. Candidates are modules that ran exactly once (shared activations are ambiguous), are not
       pooling/flatten/dropout/identity modules (else the global pool would be the last "stage"), and whose
       output resolution is one some ``nn.Conv2d`` produced (drops channels-last tensors, e.g. ConvNeXt's).
    2. Modules inside a *transition block* -- a non-container module whose input and output resolutions differ
       and whose insides span only those two (1×1 squeeze-excitation maps aside), e.g. a stride-2
       inverted-residual block -- count only at the block's output resolution (so MobileNetV2's
       ``features.1`` wins over ``features.2.conv.0``, the expand conv of the next, downsampling block).
    3. For each distinct spatial resolution the candidate that finished LAST is kept; an enclosing block
       (``layer1``) finishes after its children (``layer1.1.conv2``), so top-level blocks win.
    4. Only a shallow→deep chain of non-increasing resolutions ending at the deepest map is kept.
    """
    blocks = transformer_blocks(model)
    if blocks:
        return blocks
    records: list[tuple[str, nn.Module, tuple[int, int] | None, tuple[int, int]]] = []
    calls: dict[str, int] = {}
    state = {"head": False}

    def make_hook(name: str):
        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if not state["head"] and isinstance(out, Tensor) and out.dim() == 4:
                records.append((name, mod, _res(inp), _res(out)))  # type: ignore[arg-type]

        return hook

    def head_hook(_mod: nn.Module, _inp: Any) -> None:
        state["head"] = True

    handles = []
    try:
        for name, mod in model.named_modules():
            if name:
                handles.append(mod.register_forward_hook(make_hook(name)))
        if classifier is not None:
            handles.append(classifier.register_forward_pre_hook(head_hook))
        with _ModeGuard(model):
            model(example)
    finally:
        for h in handles:
            h.remove()

    conv_res = {r for _n, m, _i, r in records if isinstance(m, nn.Conv2d)}
    # transition blocks: name -> output resolution
    transitions: dict[str, tuple[int, int]] = {}
    for name, mod, rin, rout in records:
        if type(mod) in _CONTAINERS or rin is None or rin == rout or calls[name] != 1:
            continue
        inside = {r for n, _m, _i, r in records if n.startswith(name + ".") and r != (1, 1)}
        if len(inside | {rin, rout}) <= 2:
            transitions[name] = rout

    def inside_transition(name: str, res: tuple[int, int]) -> bool:
        parts = name.split(".")
        return any(transitions.get(".".join(parts[:i]), res) != res for i in range(1, len(parts)))

    last: dict[tuple[int, int], tuple[int, str]] = {}
    for idx, (name, mod, _rin, res) in enumerate(records):
        if calls[name] != 1 or isinstance(mod, _NOT_STAGES):
            continue
        if (conv_res and res not in conv_res) or inside_transition(name, res):
            continue
        last[res] = (idx, name)
    chosen = sorted((idx, name, res) for res, (idx, name) in last.items())
    kept: list[tuple[str, tuple[int, int]]] = []
    for _idx, name, res in reversed(chosen):
        if not kept or (res[0] >= kept[-1][1][0] and res[1] >= kept[-1][1][1]):
            kept.append((name, res))
    return [name for name, _res in reversed(kept)]


class FeatureWrapper(nn.Module):
    """Wrap a classifier ``nn.Module`` so it has the zoo interface.

    - ``forward(x)``: the wrapped model's output (its logits; non-tensor outputs such as torchvision's
      ``GoogLeNetOutputs`` are reduced to their logits).
    - ``forward_outputs(x)``: :class:`~autokd.outputs.Outputs` with ``feats`` = outputs of the stage modules
      (captured by forward hooks registered for that call only), ``preacts`` = ``feats`` and ``embedding`` =
      the input of the classifier (captured by a forward pre-hook). A stage output of token sequences
      (N, L, D) is laid out as its (N, D, H', W') patch grid, the leading class-like tokens found by
      :func:`~autokd.models.tokens.token_grid`; ``tokens['cls']`` is then the last stage's first token (before
      any final norm) and ``attention`` the stage blocks' Q, K, V.
    - ``classifier``: the last ``nn.Linear`` in ``named_modules`` order unless given (a name or a module).
    - ``stages``: module names; ``None`` discovers them per input shape with :func:`discover_stages` (one
      extra probe forward the first time a new (C, H, W) is seen). Note that the discovered stages depend on
      the input size (a torchvision ResNet on 8×8 inputs has fewer distinct resolutions than on 32×32).

    When the classifier sits behind a hidden MLP (e.g. torchvision MobileNetV3), the embedding is the MLP's
    output, not the pooled last feature map.
    """

    def __init__(
        self, model: nn.Module, stages: Sequence[str] | None = None, classifier: str | nn.Module | None = None
    ) -> None:
        super().__init__()
        self.model = model
        modules = dict(model.named_modules())
        if classifier is None:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            if not linears:
                raise ConfigError(
                    f"{type(model).__name__} has no nn.Linear classifier; pass classifier=<module name>"
                )
            cls_name = linears[-1]
        elif isinstance(classifier, nn.Module):
            found = [n for n, m in modules.items() if m is classifier]
            if not found:
                raise ConfigError("classifier must be a submodule of the wrapped model")
            cls_name = found[0]
        else:
            cls_name = str(classifier)
            if cls_name not in modules:
                raise UnknownNameError("module", cls_name, [n for n in modules if n], where="classifier")
        if not isinstance(modules[cls_name], nn.Linear):
            raise ConfigError(
                f"classifier {cls_name!r} must be an nn.Linear, got {type(modules[cls_name]).__name__}"
            )
        self.classifier_name = cls_name
        if stages is not None:
            if isinstance(stages, str) or not stages:
                raise ConfigError("stages must be a non-empty list of module names")
            for s in stages:
                if s not in modules or not s:
                    raise UnknownNameError("module", s, [n for n in modules if n], where="stages")
        self.stages: list[str] | None = None if stages is None else list(stages)
        self._discovered: dict[tuple[int, ...], list[str]] = {}
        self.num_classes = int(self.classifier.out_features)
        self.embedding_dim = int(self.classifier.in_features)

    @property
    def classifier(self) -> nn.Linear:
        return self.model.get_submodule(self.classifier_name)  # type: ignore[return-value]

    def stage_names(self, input_shape: Sequence[int]) -> list[str]:
        """The stage module names used for inputs of per-sample shape ``input_shape`` (C, H, W)."""
        if self.stages is not None:
            return list(self.stages)
        key = tuple(int(s) for s in input_shape)
        if key not in self._discovered:
            device, dtype = _device_dtype(self.model)
            example = torch.zeros((2, *key), device=device, dtype=dtype)
            self._discovered[key] = discover_stages(self.model, example, self.classifier)
        return list(self._discovered[key])

    def forward(self, x: Tensor) -> Tensor:
        return _as_logits(self.model(x))

    def forward_outputs(self, x: Tensor) -> Outputs:
        names = self.stage_names(x.shape[1:])
        captured: dict[str, Tensor] = {}

        def make_hook(name: str):
            def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
                t = _first_tensor(out)
                if t is not None:
                    captured[name] = t

            return hook

        def pre_hook(_mod: nn.Module, inp: tuple[Any, ...]) -> None:
            captured[""] = inp[0]

        blocks = [m for m in map(self.model.get_submodule, names) if any(is_attention(c) for c in m.children())]
        handles = []
        try:
            for name in names:
                handles.append(self.model.get_submodule(name).register_forward_hook(make_hook(name)))
            handles.append(self.classifier.register_forward_pre_hook(pre_hook))
            with QKVCapture([attention_of(b) for b in blocks]) as cap:
                logits = _as_logits(self.model(x))
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in names if n not in captured]
        if missing:
            raise ConfigError(
                f"stage module(s) {missing} produced no tensor output for input {tuple(x.shape)}"
            )
        if "" not in captured:
            raise ConfigError(f"classifier {self.classifier_name!r} was not called by the wrapped model")
        emb = captured[""]
        if emb.dim() != 2:
            emb = emb.reshape(emb.shape[0], -1)
        feats, tokens = [], {}
        for n in names:
            t = captured[n]
            if t.dim() == 3:  # transformer tokens -> patch grid
                prefix, h, w = token_grid(t.shape[1], x.shape[-2:])
                tokens = {"cls": t[:, 0]} if prefix else {}
                t = tokens_to_map(t, (h, w), prefix)
            feats.append(t)
        return Outputs(logits=logits, feats=feats, preacts=list(feats), embedding=emb, tokens=tokens,
                       attention=cap.result() if blocks else [])

    def extra_repr(self) -> str:
        return f"classifier={self.classifier_name!r}, stages={self.stages if self.stages is not None else 'auto'}"


def set_in_channels(model: nn.Module, in_channels: int, where: str = "model") -> None:
    """Rebuild the first ``nn.Conv2d`` (same out channels/kernel/stride/padding/dilation/bias) for
    ``in_channels`` inputs, unless it already takes that many (no-op for models without a conv)."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        return  # no conv (e.g. an MLP): nothing to adapt
    name, conv = found
    if conv.in_channels == in_channels:
        return
    if conv.groups != 1:
        raise ConfigError(f"{where}: cannot change in_channels of a grouped first conv {name!r}")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _split_wrapper_kw(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    wkw = {k: kw.pop(k) for k in ("stages", "classifier") if k in kw}
    return wkw, kw


def torchvision_model(name: str, num_classes: int, in_channels: int = 3, **kw: Any) -> FeatureWrapper:
    """``tv/<name>``: a randomly initialised torchvision classifier wrapped in :class:`FeatureWrapper`.

    ``stages=`` / ``classifier=`` go to the wrapper, other keywords to ``torchvision.models.get_model``.
    """
    import torchvision

    wkw, kw = _split_wrapper_kw(dict(kw))
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise UnknownNameError("torchvision model", name, known, where=f"model 'tv/{name}'")
    if kw.get("weights") is not None:
        raise ConfigError(f"model 'tv/{name}': weights must be None (pretrained weights are not downloaded)")
    kw.pop("weights", None)
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except TypeError as e:
        raise ConfigError(f"model 'tv/{name}': invalid parameters {sorted(kw)} ({e})") from e
    if in_channels != 3:
        set_in_channels(model, in_channels, where=f"model 'tv/{name}'")
    return FeatureWrapper(model, **wkw)


def _is_zoo_like(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("forward_outputs", "classifier", "embedding_dim"))


def user_model(spec: str, num_classes: int, in_channels: int = 3, **kw: Any) -> nn.Module:
    """``package.module:callable`` (the callable may be dotted, ``mod:Class.build``).

    Called with ``num_classes=`` and the keywords, plus ``in_channels=`` when its signature names it (else the
    first conv is rebuilt for ``in_channels``). The result is wrapped in :class:`FeatureWrapper` unless it
    already has the zoo interface (``forward_outputs``, ``classifier``, ``embedding_dim``) and no
    ``stages=``/``classifier=`` were given.
    """
    wkw, kw = _split_wrapper_kw(dict(kw))
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"model {spec!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"model {spec!r}: cannot import module {mod_name!r} ({e})") from e
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            known = [n for n in dir(fn) if not n.startswith("_") and callable(getattr(fn, n, None))]
            raise UnknownNameError("callable", attr, known, where=f"model {spec!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"model {spec!r}: {attr!r} is not callable")

    kwargs = dict(kw, num_classes=num_classes)
    accepts_in = False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: call as is
        params = None
    if params is not None:
        accepts_in = (
            "in_channels" in params and params["in_channels"].kind is not inspect.Parameter.POSITIONAL_ONLY
        )
        if accepts_in:
            kwargs["in_channels"] = in_channels
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                allowed = ", ".join(n for n in params if n not in ("num_classes", "in_channels")) or "none"
                raise ConfigError(f"model {spec!r}: unknown parameter(s) {unknown}; allowed: {allowed}")
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec!r}: the factory returned {type(model).__name__}, not an nn.Module")
    if not accepts_in:
        set_in_channels(model, in_channels, where=f"model {spec!r}")
    if not wkw and _is_zoo_like(model):
        return model
    return FeatureWrapper(model, **wkw)
