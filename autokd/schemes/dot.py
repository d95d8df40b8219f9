"""DOT: separate momentum buffers for the task-loss and the distillation-loss gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..hparams import HParam
from .base import Scheme, register

__all__ = ["DOT", "DOTOptimizer"]


class DOTOptimizer(torch.optim.Optimizer):
    """SGD with two momentum buffers per parameter (Zhao et al., ICCV 2023, DOT).

    For a parameter ``p`` with task gradient ``g_t`` and distillation gradient ``g_d`` (either may be absent):

    - shared parameters (both gradients): ``b_t ← μ_t·b_t + (g_t + λ·p)``, ``b_d ← μ_d·b_d + g_d``;
    - task-only / distillation-only parameters (e.g. a connector): their one buffer uses the mean momentum
      ``(μ_t + μ_d) / 2`` and its gradient carries the weight decay ``λ·p``;
    - ``p ← p − lr·(b_t + b_d)`` (over the buffers updated this step). A buffer starts as its first gradient.

    Weight decay rides with the task gradient, as in the official code (mdistiller ``engine/dot.py``), where
    ``μ_t = m − δ`` and ``μ_d = m + δ``. One deviation: the official code skips the weight decay on the very
    first step of a distillation-only parameter; here it is applied on every step. No dampening, no Nesterov.

    Use it as the official code does — ``loss_kd.backward(retain_graph=True); opt.step_kd(); opt.zero_grad();
    loss_task.backward(); opt.step()`` — or hand both gradient lists to :meth:`step_grads`.
    """

    def __init__(self, params, lr: float, momentum_task: float, momentum_kd: float, weight_decay: float = 0.0):
        for name, v in (("momentum_task", momentum_task), ("momentum_kd", momentum_kd)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"DOT: {name} must be in [0, 1), got {v}")
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"DOT: needs lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
        defaults = dict(lr=lr, momentum_task=momentum_task, momentum_kd=momentum_kd, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step_kd(self) -> None:
        """Store the current ``.grad`` of every parameter as its distillation gradient for the next step."""
        for p in self._params():
            self.state[p]["kd_grad"] = None if p.grad is None else p.grad.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        """Update with ``.grad`` as the task gradient and the gradients stored by :meth:`step_kd`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        kd = [self.state[p].pop("kd_grad", None) if p in self.state else None for p in params]
        self.step_grads([p.grad for p in params], kd)
        return loss

    @torch.no_grad()
    def step_grads(self, task_grads: list[Tensor | None], kd_grads: list[Tensor | None]) -> None:
        """One DOT update from explicit gradients, aligned with the parameters of all groups in order."""
        i = 0
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            m_t, m_d = group["momentum_task"], group["momentum_kd"]
            m_avg = 0.5 * (m_t + m_d)
            for p in group["params"]:
                g_t, g_d = task_grads[i], kd_grads[i]
                i += 1
                state = self.state[p]
                update = None
                if g_t is not None:
                    d = g_t.add(p, alpha=wd) if wd else g_t
                    update = self._momentum(state, "momentum_task", d, m_t if g_d is not None else m_avg)
                if g_d is not None:
                    d = g_d.add(p, alpha=wd) if (wd and g_t is None) else g_d
                    buf = self._momentum(state, "momentum_kd", d, m_d if g_t is not None else m_avg)
                    update = buf if update is None else update + buf
                if update is not None:
                    p.add_(update, alpha=-lr)
        if i != len(task_grads) or i != len(kd_grads):
            raise ValueError(f"DOT.step_grads: expected {i} gradients, got {len(task_grads)} and {len(kd_grads)}")

    @staticmethod
    def _momentum(state: dict, key: str, d: Tensor, momentum: float) -> Tensor:
        buf = state.get(key)
        if buf is None:
            buf = torch.clone(d).detach()
            state[key] = buf
        else:
            buf.mul_(momentum).add_(d)
        return buf


@register
class DOT(Scheme):
    """DOT: A Distillation-Oriented Trainer (Zhao et al., ICCV 2023).

    The task loss (``losses["task"]`` = CE weight × CE) and the distillation loss (``losses["distill"]``)
    are back-propagated separately; :class:`DOTOptimizer` keeps one momentum buffer per loss, with the larger
    momentum on the distillation gradient: ``μ_task = m − delta``, ``μ_kd = m + delta`` (m = ``optim.momentum``,
    official default delta = 0.075 with m = 0.9: 0.825 / 0.975, as in the paper and the official code).
    Needs ``optim.name: sgd``; Nesterov is not used.
    """

    name = "dot"
    paper = "Zhao et al., ICCV 2023, DOT: A Distillation-Oriented Trainer"
    hparams = {"delta": HParam(0.075, 0.0, 0.09, doc="momentum gap: task m - delta, distillation m + delta")}

    def build_optimizer(self, distiller, optim) -> torch.optim.Optimizer:
        if optim.name != "sgd":
            raise ConfigError(f"scheme 'dot' needs optim.name: sgd (it replaces SGD's momentum), got {optim.name!r}")
        delta = self.params["delta"]
        m_t, m_d = optim.momentum - delta, optim.momentum + delta
        if not (0.0 <= m_t < 1.0 and 0.0 <= m_d < 1.0):
            raise ConfigError(f"scheme 'dot': optim.momentum ± delta must lie in [0, 1); got momentum "
                              f"{optim.momentum}, delta {delta}")
        params = list(distiller.trainable_parameters()) + list(self.extra_parameters())
        self.optimizer = DOTOptimizer(params, lr=optim.lr, momentum_task=m_t, momentum_kd=m_d,
                                      weight_decay=optim.weight_decay)
        return self.optimizer

    def backward_step(self, losses: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
        # the official order: distillation gradient first (kept by step_kd), then the task gradient and step()
        task, distill = losses["task"], losses["distill"]
        optimizer.zero_grad(set_to_none=True)
        if distill.requires_grad:
            distill.backward(retain_graph=task.requires_grad)
        optimizer.step_kd()
        optimizer.zero_grad(set_to_none=True)
        if task.requires_grad:
            task.backward()
        optimizer.step()
