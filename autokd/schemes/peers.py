"""Online schemes over a group of peer students: ORC's online role change and OKDPH's hybrid-weight model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .. import models
from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from .base import Scheme, register

__all__ = ["ORC", "HWM", "mixture_kl", "hybrid_state", "fuse_into"]


def mixture_kl(target_logits: list[Tensor], logits: Tensor, temperature: float) -> Tensor:
    """KL(P ‖ softmax(logits/T)) × T², batch-mean, ``P`` the mean of ``softmax(t/T)`` over ``target_logits``
    (a group's averaged soft labels)."""
    t = float(temperature)
    logp = torch.stack([F.log_softmax(z.float() / t, 1) for z in target_logits])
    log_mix = torch.logsumexp(logp, 0) - math.log(len(target_logits))
    log_q = F.log_softmax(logits.float() / t, 1)
    return F.kl_div(log_q, log_mix, reduction="batchmean", log_target=True) * (t * t)


def _kd(logits: Tensor, target: Tensor, temperature: float) -> Tensor:
    return mixture_kl([target], logits, temperature)


def _build_peers(recipe, data, device, n: int) -> nn.ModuleList:
    return nn.ModuleList([models.from_spec(recipe.student, data.num_classes, data.input_shape[0])
                          for _ in range(n)]).to(device).train()


@register
class ORC(Scheme):
    """ORC: Network Group-based Knowledge Distillation using Online Role Change (Choi et al., ICCV 2023).

    The student and ``peers`` peer models (the student's architecture, own initialisations, trained by the
    same optimiser as in DML) form a group whose roles change at every iteration: the members are ranked by
    their own cross-entropy on the batch (``rank_by: loss``; ``accuracy`` ranks by batch accuracy, ties by
    loss) and the ``promote`` best become the temporary teacher group, the others the student group.
    Intensive teaching (error correction): each temporary teacher adds ``intensive`` × its cross-entropy on
    the batch's error samples (misclassified by any student-group member). Group teaching: each member of
    the student group adds ``weight`` × T² × KL(P_T ‖ softmax(z/T)), ``P_T`` the mean softened prediction of
    the temporary teachers and, when the recipe has distillation terms, the study's pre-trained teacher
    (detached). Private teaching: a promoted peer distils from the pre-trained teacher with the same weight
    (the student keeps the recipe's terms whatever its role). Peers also train on their own CE. The student
    adds the logged term ``orc``; the peers' losses are ``orc_peers`` (they train only the peers).

    No official code is released; ranking by batch CE, the error set (union over the student group), the
    temperature-softened KL and the weights are our reading of the paper, not its published values. The
    pre-trained teacher stays frozen (autokd's teacher is shared by every trial): only the promoted members
    are refined on the error samples.
    """

    name = "orc"
    paper = "Choi et al., ICCV 2023, ORC: Network Group-based Knowledge Distillation using Online Role Change"
    hparams = {
        "peers": HParam(2, 1, 4, kind="int", doc="peer models trained with the student"),
        "promote": HParam(1, 1, 3, kind="int", doc="members promoted to the teacher group at each iteration"),
        "weight": HParam(1.0, 0.1, 10.0, log=True, doc="weight of the group (and private) teaching KL"),
        "intensive": HParam(1.0, 0.0, 5.0, doc="weight of the temporary teachers' CE on the error samples"),
        "temperature": HParam(4.0, 1.0, 8.0, doc="softmax temperature of the teaching KL"),
        "rank_by": HParam("loss", kind="categorical", choices=("loss", "accuracy"),
                          doc="how members are ranked on the batch"),
    }
    helper_loss_keys = frozenset({"orc_peers"})

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if p["peers"] < 1 or not 1 <= p["promote"] <= p["peers"]:
            raise ConfigError(f"scheme 'orc': needs peers >= 1 and 1 <= promote <= peers; got {p}")
        self.peers = nn.ModuleList()
        self._t_logits: Tensor | None = None
        self.promotions: list[int] = []  # per member (0 = the student): iterations spent in the teacher group
        self.last_roles: list[int] = []  # the members of the teacher group at the last iteration

    def setup(self, *, recipe, data, device, **context) -> None:
        self.peers = _build_peers(recipe, data, device, self.params["peers"])
        self.promotions = [0] * (self.params["peers"] + 1)

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.peers.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.peers.train()

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        out = default()
        self._t_logits = None if out is None else out.logits
        return out

    def roles(self, logits: list[Tensor], y: Tensor) -> list[int]:
        """The members promoted to the teacher group for this batch (indices into ``logits``)."""
        with torch.no_grad():
            ce = [float(F.cross_entropy(z.float(), y)) for z in logits]
            acc = [float((z.argmax(1) == y).float().mean()) for z in logits]
        key = (lambda k: ce[k]) if self.params["rank_by"] == "loss" else (lambda k: (-acc[k], ce[k]))
        return sorted(range(len(logits)), key=key)[: self.params["promote"]]

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        p, t = self.params, self.params["temperature"]
        cohort = [step.student.logits] + [peer(x) for peer in self.peers]
        teachers = self.roles(cohort, y)
        self.last_roles = teachers
        for k in teachers:
            self.promotions[k] += 1
        students = [k for k in range(len(cohort)) if k not in teachers]
        with torch.no_grad():
            errors = torch.zeros_like(y, dtype=torch.bool)
            for k in students:
                errors |= cohort[k].argmax(1) != y
        pretrained = self._t_logits
        self._t_logits = None
        group = [cohort[k].detach() for k in teachers] + ([pretrained] if pretrained is not None else [])
        zero = torch.zeros((), device=y.device)
        extra = []
        for k, z in enumerate(cohort):
            if k in teachers:
                loss = p["intensive"] * F.cross_entropy(z[errors].float(), y[errors]) if errors.any() else zero
                if k > 0 and pretrained is not None:
                    loss = loss + p["weight"] * _kd(z, pretrained, t)
            else:
                loss = p["weight"] * mixture_kl(group, z, t)
            extra.append(loss)
        peers = sum(F.cross_entropy(cohort[k].float(), y) + extra[k] for k in range(1, len(cohort)))
        return {"orc": extra[0], "orc_peers": peers}


def hybrid_state(members: list[nn.Module], coef: list[float], grad: bool) -> dict[str, Tensor]:
    """``Σ_i coef_i θ_i`` over the members' parameters and floating buffers (a hybrid-weight model's state);
    integer buffers (BN's batch counters) are the first member's. ``grad``: keep the graph to the members'
    parameters (the paper's back-propagation through the hybridisation)."""
    states = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in members]
    out = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            out[name] = first.detach().clone()
            continue
        mix = sum(c * s[name] for c, s in zip(coef, states, strict=True))
        out[name] = mix if grad and first.requires_grad else mix.detach()
    return out


@torch.no_grad()
def fuse_into(member: nn.Module, hwm: nn.Module, gamma: float) -> None:
    """``θ ← γ θ_hwm + (1 − γ) θ`` for every parameter and floating buffer (the official ``fusion``)."""
    src = dict(hwm.named_parameters()) | dict(hwm.named_buffers())
    for name, v in list(member.named_parameters()) + list(member.named_buffers()):
        if v.is_floating_point():
            v.mul_(1.0 - gamma).add_(src[name].detach(), alpha=gamma)


@register
class HWM(Scheme):
    """Online KD through a hybrid-weight model (OKDPH: Zhang et al., CVPR 2023, "Generalization Matters:
    Loss Minima Flattening via Parameter Hybridization for Efficient Online Knowledge Distillation").

    The student and ``peers`` peers (the student's architecture, trained by the same optimiser) are the
    students; at every step a hybrid-weight model (HWM) gets ``θ_h = Σ r_i θ_i`` (parameters and BN
    statistics), ``r_i = 1/N`` (``hybrid: mean``) or a Dirichlet(1) draw (``dir``), and is run on the batch
    in train mode. Each student i minimises ``ω CE_i + (1 − ω) CE_h + β T² KL(softmax(z̄/T) ‖ softmax(z_i/T))``,
    ``z̄`` the mean logits of the students and the HWM (detached), T = 4. Every ``interval`` epochs (or
    batches, ``unit: batch``) each student is fused with the HWM: ``θ_i ← γ θ_h + (1 − γ) θ_i``, which pulls
    the students into a flatter common basin. The student adds the logged term ``hwm`` (its CE keeps the
    recipe's ``ce_weight``: set it to ω for the official loss; its recipe terms stay); the peers' losses are
    ``hwm_peers``. Defaults are the official CIFAR-10 resnet32 ones (ω = β = 0.8, γ = 0.5, 1 epoch).

    Official code (``src/OKDPH.py``) conventions, which we follow: the HWM is a separate model loaded with the
    hybrid weights, so ``CE_h`` back-propagates into no student (``backprop_hwm: false``); the paper's equations
    send ``r_i ∂CE_h/∂θ_h`` to student i — ``backprop_hwm: true`` does that (the HWM is evaluated on the
    students' weights with ``torch.func.functional_call``). The epoch fusion happens after epochs 0, k, 2k …
    (``epoch % interval == 0``), the batch fusion at batches 0, k, 2k … of each epoch, both with the HWM of the
    latest step. The official students start from one initialisation and see different augmentations; here
    every member sees the same batch, so each starts from its own initialisation (the official ``--diff_init``).
    The HWM is built after the student's forward on the batch, so its BN running statistics mix the student's
    updated ones (the official code hybridises before any forward; batch statistics, hence outputs, agree).
    """

    name = "hwm"
    paper = ("Zhang et al., CVPR 2023, Generalization Matters: Loss Minima Flattening via Parameter "
             "Hybridization for Efficient Online Knowledge Distillation")
    hparams = {
        "peers": HParam(1, 1, 3, kind="int", doc="peer students besides the student (official: 2 students)"),
        "omega": HParam(0.8, 0.3, 1.0, doc="weight of the student's CE (the HWM's CE has 1 − ω)", valid="[0, 1]"),
        "beta": HParam(0.8, 0.1, 2.0, log=True, doc="weight of the KL to the students' and HWM's mean"),
        "gamma": HParam(0.5, 0.0, 1.0, doc="fusion ratio: θ ← γ θ_hwm + (1 − γ) θ", valid="[0, 1]"),
        "interval": HParam(1, 1, 5, kind="int", doc="fuse every this many epochs (or batches)"),
        "unit": HParam("epoch", kind="categorical", choices=("epoch", "batch"), doc="unit of the interval"),
        "hybrid": HParam("mean", kind="categorical", choices=("mean", "dir"), doc="hybridisation coefficients"),
        "temperature": HParam(4.0, 1.0, 8.0),
        "backprop_hwm": HParam(False, kind="bool", doc="back-propagate the HWM's CE into the students (paper)"),
    }
    helper_loss_keys = frozenset({"hwm_peers"})

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        if p["peers"] < 1 or p["interval"] < 1:
            raise ConfigError(f"scheme 'hwm': needs peers >= 1 and interval >= 1; got {p}")
        self.peers = nn.ModuleList()
        self.hwm: nn.Module | None = None
        self.coef: list[float] = []
        self.fusions = 0
        self._batch = 0

    def setup(self, *, distiller, recipe, data, device, **context) -> None:
        self.student = distiller.student
        self.peers = _build_peers(recipe, data, device, self.params["peers"])
        self.hwm = copy.deepcopy(distiller.student).requires_grad_(False).train()

    def members(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def extra_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.peers.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.peers.train()
        self._batch = 0

    def coefficients(self) -> list[float]:
        n = len(self.members())
        if self.params["hybrid"] == "mean":
            return [1.0 / n] * n
        return torch.distributions.Dirichlet(torch.ones(n)).sample().tolist()

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        p = self.params
        self.coef = self.coefficients()
        state = hybrid_state(self.members(), self.coef, grad=p["backprop_hwm"])
        h_logits = functional_call(self.hwm, state, (x,))
        with torch.no_grad():  # the official HWM: a model holding the hybrid weights (and its BN statistics)
            for name, v in list(self.hwm.named_parameters()) + list(self.hwm.named_buffers()):
                v.copy_(state[name].detach())
        cohort = [step.student.logits] + [peer(x) for peer in self.peers]
        stable = torch.stack([z.float() for z in cohort] + [h_logits.float()]).mean(0).detach()
        ce_h = F.cross_entropy(h_logits.float(), y)
        self.hwm_ce = float(ce_h.detach())
        hwm_term = (1.0 - p["omega"]) * ce_h if p["backprop_hwm"] else torch.zeros((), device=y.device)
        kd = [p["beta"] * _kd(z, stable, p["temperature"]) for z in cohort]
        peers = sum(p["omega"] * F.cross_entropy(z.float(), y) + k for z, k in zip(cohort[1:], kd[1:], strict=True))
        # (1 − ω) CE_h is added once: through θ_h = Σ r_i θ_i its gradient reaches each student i as
        # (1 − ω) r_i ∂CE_h/∂θ_h, what each student's own loss contributes in the paper
        return {"hwm": kd[0] + hwm_term, "hwm_peers": peers}

    def after_step(self) -> None:
        if self.params["unit"] == "batch" and self._batch % self.params["interval"] == 0:
            self._fuse()
        self._batch += 1

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        if self.params["unit"] == "epoch" and epoch % self.params["interval"] == 0:
            self._fuse()

    def _fuse(self) -> None:
        for m in self.members():
            fuse_into(m, self.hwm, self.params["gamma"])
        self.fusions += 1
