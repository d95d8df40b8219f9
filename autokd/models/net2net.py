"""Net2Net: start a wider and/or deeper student computing exactly its (smaller) teacher's function.

Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR 2016
(arXiv:1511.05641). There is no official code release; the conventions follow the paper:

- **Net2WiderNet**: a layer with ``n`` units becomes one with ``m >= n`` units through a mapping ``g``: unit
  ``j < n`` is unit ``j``, every further unit a copy of a uniformly drawn teacher unit. A copy takes the
  incoming weights, bias and BatchNorm parameters/statistics of its original; the *consumer* of the layer (the
  next conv, or the classifier) divides the weights it applies to unit ``u`` by ``u``'s number of copies.
  Copies of one unit then carry identical activations (in train mode too: equal batch statistics), so the sum
  the consumer computes is unchanged.
- **Net2DeeperNet**: inserted layers are initialised to the identity: a 3×3 conv whose centre tap is the
  identity matrix, then a BatchNorm that undoes its own normalisation. As in the paper (§2.4) its statistics
  are estimated on training data (``calib``, batch statistics in train mode): ``running_mean = μ``,
  ``running_var = σ²``, ``γ = sqrt(σ² + ε)``, ``β = μ``, so the layer is the identity in eval mode, exactly so
  in train mode on the calibration batch and nearly so on batches like it. Without ``calib`` it is ``γ = 1, β = 0, μ = 0, σ² = 1 − ε`` (the identity in eval mode only).
  The following ReLU is idempotent on the non-negative input, so the function is preserved.
- **Residual families** (``resnet``): an inserted BasicBlock gets its last BN's scale and shift set to zero,
  so its branch outputs 0 and ``relu(x + 0) = x`` for the non-negative stream — the residual form of an
  identity layer (the paper's networks are plain; this is our adaptation, exact in train and eval mode).
- **Symmetry breaking**: the paper adds a little noise so copies can diverge. Here ``noise`` adds Gaussian
  noise (std = ``noise`` × the std of the consumer's weights) to the consumer's weights on the copies of each
  unit, projected to sum to zero over the copies: the function is still preserved exactly, and the copies'
  incoming weights receive different gradients from the first step on (with equal outgoing weights they would
  stay identical forever). Our convention; ``noise: 0`` gives the plain division.

Where the families allow it:

- ``cnn``: wider (``width``) and deeper within blocks (``convs``); ``depth`` must match the teacher's (a new
  block adds a max-pool and doubles the channels, which no identity initialisation can undo);
- ``vgg``: wider (``width``) and deeper (``depth`` 8 → 11 → 13 → 16 → 19 only ever adds same-width convs to
  blocks); identity layers go at the end of their block;
- ``resnet``: wider (``width``, ``stem_width``) and deeper (more blocks per stage, ``depth`` 6n+2); each block's
  shortcut must have the teacher's kind (projection or identity).

Any other family, or a teacher of another family, is refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..hparams import HParam
from .cnn import SmallCNN
from .resnet import CifarResNet
from .vgg import VGG

__all__ = ["net2net", "NET2NET_HPARAMS", "NET2NET_FAMILIES", "wide_map"]

NET2NET_HPARAMS = {
    "noise": HParam(0.01, 0.0, 0.2, doc="symmetry-breaking noise on the copies' outgoing weights (zero-sum over "
                    "the copies of a unit, so the function is kept); std relative to the weights' std"),
}
#: the families :func:`net2net` can grow (model registry ``family`` metadata)
NET2NET_FAMILIES = ("cnn", "vgg", "resnet")

_WHERE = "student.init: net2net"


def wide_map(n_old: int, n_new: int, generator: torch.Generator | None = None) -> Tensor:
    """Net2WiderNet's mapping ``g`` (int64, length ``n_new``): ``g[j] = j`` for ``j < n_old``, then uniform draws
    from ``0..n_old-1``."""
    if n_new < n_old:
        raise ConfigError(f"{_WHERE}: a layer of the student has {n_new} units, fewer than the teacher's {n_old}")
    extra = torch.randint(0, n_old, (n_new - n_old,), generator=generator)
    return torch.cat([torch.arange(n_old), extra])


class _Grower:
    """Copies teacher layers into a student under channel mappings (one per activation) with the noise rule."""

    def __init__(self, noise: float, generator: torch.Generator | None) -> None:
        self.noise, self.gen = float(noise), generator

    def map(self, n_old: int, n_new: int) -> Tensor:
        return wide_map(n_old, n_new, self.gen)

    def _consume(self, w: Tensor, g_in: Tensor) -> Tensor:
        """Columns (dim 1) of ``w`` taken through ``g_in``, divided by the copy counts, plus zero-sum noise."""
        counts = torch.bincount(g_in, minlength=int(g_in.max()) + 1).to(w.dtype)
        shape = [1, -1] + [1] * (w.dim() - 2)
        out = w[:, g_in] / counts[g_in].view(shape)
        if self.noise > 0 and len(g_in) > len(counts):
            eps = torch.randn(out.shape, generator=self.gen, dtype=w.dtype) * (self.noise * float(w.std()))
            group_mean = torch.zeros((w.shape[0], len(counts), *w.shape[2:]), dtype=w.dtype)
            group_mean.index_add_(1, g_in, eps)
            eps = eps - (group_mean / counts.view(shape))[:, g_in]  # zero sum over each unit's copies
            out = out + eps
        return out

    @torch.no_grad()
    def conv(self, s: nn.Conv2d, t: nn.Conv2d, g_out: Tensor, g_in: Tensor) -> None:
        if s.groups != 1 or t.groups != 1 or s.kernel_size != t.kernel_size or s.stride != t.stride:
            raise ConfigError(f"{_WHERE}: the student's and teacher's convolutions differ beyond their widths")
        w = t.weight.detach().to("cpu", torch.float32)[g_out]
        s.weight.copy_(self._consume(w, g_in))
        if (s.bias is None) != (t.bias is None):
            raise ConfigError(f"{_WHERE}: the student's and teacher's convolutions differ in their biases")
        if s.bias is not None:
            s.bias.copy_(t.bias.detach().to("cpu", torch.float32)[g_out])

    @torch.no_grad()
    def linear(self, s: nn.Linear, t: nn.Linear, g_in: Tensor) -> None:
        s.weight.copy_(self._consume(t.weight.detach().to("cpu", torch.float32), g_in))
        s.bias.copy_(t.bias.detach().to("cpu", torch.float32))

    @staticmethod
    @torch.no_grad()
    def bn(s: nn.BatchNorm2d, t: nn.BatchNorm2d, g: Tensor) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(s, name).copy_(getattr(t, name).detach().to("cpu", torch.float32)[g])
        s.num_batches_tracked.copy_(t.num_batches_tracked)


@torch.no_grad()
def _identity_layer(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    if conv.in_channels != conv.out_channels or conv.groups != 1:
        raise ConfigError(f"{_WHERE}: an inserted layer must keep its width to start as the identity")
    conv.weight.zero_()
    kh, kw = conv.kernel_size
    conv.weight[:, :, kh // 2, kw // 2] = torch.eye(conv.out_channels)
    if conv.bias is not None:
        conv.bias.zero_()
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


# --------------------------------------------------------------------------------------------- plain stacks
def _plain_blocks(model: nn.Module) -> list[list[tuple[nn.Conv2d, nn.BatchNorm2d]]]:
    """(conv, bn) layers block by block of a SmallCNN / VGG (their blocks are [conv, bn, ReLU]* minus the last
    ReLU)."""
    blocks = list(model.blocks) if isinstance(model, SmallCNN) else [
        model.block0, model.block1, model.block2, model.block3, model.block4]
    return [[(b[i], b[i + 1]) for i in range(0, len(b), 3)] for b in blocks]


def _grow_plain(student: nn.Module, teacher: nn.Module, grow: _Grower) -> list[nn.BatchNorm2d]:
    s_blocks, t_blocks = _plain_blocks(student), _plain_blocks(teacher)
    if len(s_blocks) != len(t_blocks):
        raise ConfigError(f"{_WHERE}: cnn students must keep the teacher's depth ({len(t_blocks)} blocks, the "
                          f"student has {len(s_blocks)}): a new block pools and doubles the channels; grow "
                          "depth with convs instead")
    inserted = []
    g_prev = torch.arange(t_blocks[0][0][0].in_channels)
    for b, (s_layers, t_layers) in enumerate(zip(s_blocks, t_blocks, strict=True)):
        if len(s_layers) < len(t_layers):
            raise ConfigError(f"{_WHERE}: block {b} of the student has {len(s_layers)} conv layers, fewer than "
                              f"the teacher's {len(t_layers)}")
        for j, (conv, bn) in enumerate(s_layers):
            if j < len(t_layers):
                t_conv, t_bn = t_layers[j]
                g_out = grow.map(t_conv.out_channels, conv.out_channels)
                grow.conv(conv, t_conv, g_out, g_prev)
                grow.bn(bn, t_bn, g_out)
                g_prev = g_out
            else:
                _identity_layer(conv, bn)
                inserted.append(bn)
    grow.linear(student.classifier, teacher.classifier, g_prev)
    return inserted


# --------------------------------------------------------------------------------------------- resnet
def _grow_resnet(student: CifarResNet, teacher: CifarResNet, grow: _Grower) -> list[nn.BatchNorm2d]:
    g = grow.map(teacher.conv1.out_channels, student.conv1.out_channels)
    grow.conv(student.conv1, teacher.conv1, g, torch.arange(teacher.conv1.in_channels))
    grow.bn(student.bn1, teacher.bn1, g)
    for stage in ("layer1", "layer2", "layer3"):
        s_blocks, t_blocks = list(getattr(student, stage)), list(getattr(teacher, stage))
        if len(s_blocks) < len(t_blocks):
            raise ConfigError(f"{_WHERE}: the student's {stage} has {len(s_blocks)} blocks, fewer than the "
                              f"teacher's {len(t_blocks)} (student depth must be >= teacher depth)")
        for i, s in enumerate(s_blocks):
            if i >= len(t_blocks):  # inserted block: its branch outputs 0, the block is the identity
                with torch.no_grad():
                    s.bn2.weight.zero_()
                    s.bn2.bias.zero_()
                continue
            t = t_blocks[i]
            if (s.downsample is None) != (t.downsample is None):
                raise ConfigError(f"{_WHERE}: {stage} block {i} has a projection shortcut in only one of student "
                                  "and teacher (keep stem_width == width in both, or different in both)")
            g_out = g if s.downsample is None else grow.map(t.bn2.num_features, s.bn2.num_features)
            g_mid = grow.map(t.conv1.out_channels, s.conv1.out_channels)
            grow.conv(s.conv1, t.conv1, g_mid, g)
            grow.bn(s.bn1, t.bn1, g_mid)
            grow.conv(s.conv2, t.conv2, g_out, g_mid)
            grow.bn(s.bn2, t.bn2, g_out)
            if s.downsample is not None:
                grow.conv(s.downsample[0], t.downsample[0], g_out, g)
                grow.bn(s.downsample[1], t.downsample[1], g_out)
            g = g_out
    grow.linear(student.classifier, teacher.classifier, g)
    return []


# --------------------------------------------------------------------------------------------- entry point
_GROWERS: list[tuple[type, Callable]] = [(SmallCNN, _grow_plain), (VGG, _grow_plain), (CifarResNet, _grow_resnet)]


@torch.no_grad()
def _calibrate(student: nn.Module, bns: list[nn.BatchNorm2d], calib: Tensor) -> None:
    """The paper's BN rule for inserted layers: the statistics of their (identity) input on training data,
    taken in train mode (batch statistics everywhere, as in training) in one pass, each layer set before it runs
    so that the next ones see the teacher's activations; every other running statistic is left as it was."""
    todo = {id(bn) for bn in bns}

    def hook(bn, args):
        if id(bn) in todo:
            x = args[0].detach().float()
            mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), correction=0)
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.copy_(mean)
            todo.discard(id(bn))
            bn.stats = (mean, var)

    norms = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers()} for m in norms]
    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    modes = [(m, m.training) for m in student.modules()]
    try:
        student.train()
        student(calib)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
        for m, state in zip(norms, saved, strict=True):
            for k, v in state.items():
                getattr(m, k).copy_(v)
    for bn in bns:
        mean, var = bn.__dict__.pop("stats")
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)


def net2net(student: nn.Module, teacher: nn.Module, *, noise: float = 0.01, calib: Tensor | None = None,
            generator: torch.Generator | None = None) -> nn.Module:
    """Initialise ``student`` (in place; returned) so that it computes ``teacher``'s function: Net2WiderNet on
    every layer, Net2DeeperNet for the layers/blocks the student has in excess (see the module docstring).

    ``calib`` is a batch of training inputs for the inserted layers' BatchNorm statistics; ``generator`` draws
    the replicated units and the noise (default: the global RNG). Raises a one-line :class:`ConfigError` when the
    families or the sizes do not allow it.
    """
    grower = next((fn for cls, fn in _GROWERS if isinstance(student, cls)), None)
    s_name = getattr(student, "arch_name", type(student).__name__)
    t_name = getattr(teacher, "arch_name", type(teacher).__name__)
    if grower is None:
        raise ConfigError(f"{_WHERE} works for the families {', '.join(NET2NET_FAMILIES)}; the student "
                          f"{s_name!r} is not one of them")
    if type(teacher) is not type(student):
        raise ConfigError(f"{_WHERE} needs a teacher of the student's family: student {s_name!r}, teacher "
                          f"{t_name!r}")
    if student.classifier.out_features != teacher.classifier.out_features:
        raise ConfigError(f"{_WHERE}: student and teacher have different numbers of classes")
    device = next(student.parameters()).device
    student.cpu()
    inserted = grower(student, teacher, _Grower(noise, generator))
    if calib is not None and inserted:
        _calibrate(student, inserted, calib.cpu())
    return student.to(device)
