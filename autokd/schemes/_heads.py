"""Building blocks of the schemes that grow heads on a model's stages: the four-rotation batch and its joint
(class × rotation) labels (SLA, HSAKD), and small branches from a stage's feature map to a classifier (BYOT's
bottleneck, the stage-mimicking branches of MSD / HSAKD / the Rocket booster)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Shapes

__all__ = ["ROTATIONS", "rotate4", "joint_labels", "aggregate_joint", "shallow_stages", "StageBranch",
           "BottleneckBranch", "check_square"]

#: number of input rotations (0°, 90°, 180°, 270°)
ROTATIONS = 4


def check_square(input_shape, scheme: str) -> None:
    """Rotating a batch by 90° keeps its shape only for square inputs."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ConfigError(f"scheme {scheme!r} rotates the inputs by 90° and needs square images; "
                          f"got input shape {tuple(input_shape)}")


def rotate4(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (4N, C, H, W): each sample followed by its rotations by 90°, 180°, 270° (``torch.rot90``
    over (H, W)); rows ``4i + k`` are sample i rotated k times, as in the SLA and HSAKD official code."""
    return torch.stack([torch.rot90(x, k, (2, 3)) for k in range(ROTATIONS)], 1).reshape(-1, *x.shape[1:])


def joint_labels(y: Tensor) -> Tensor:
    """The joint label of row ``4i + k`` of :func:`rotate4`'s batch: ``4·y_i + k`` (class-major, as officially)."""
    return (y.unsqueeze(1) * ROTATIONS + torch.arange(ROTATIONS, device=y.device)).reshape(-1)


def aggregate_joint(joint: Tensor) -> Tensor:
    """SLA's aggregated classifier: for (4N, 4K) joint logits over :func:`rotate4`'s batch, the (N, K) mean over
    the rotations k of the joint logits of (class, k) on the input rotated k times: ``mean_k joint[k::4, k::4]``."""
    return torch.stack([joint[k::ROTATIONS, k::ROTATIONS] for k in range(ROTATIONS)]).mean(0)


def shallow_stages(shapes: Shapes) -> list[int]:
    """The stages that get an auxiliary classifier: every stage but the deepest, the stem (stage 0) left out
    when the model has three stages or more (as BYOT's heads sit on ResNet's stage groups, not on its stem)."""
    n = shapes.num_stages
    if n < 2:
        raise ConfigError("auxiliary classifiers need a model with at least two stages (Outputs.feats)")
    return list(range(1 if n >= 3 else 0, n - 1))


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class StageBranch(nn.Module):
    """From the feature map of stage ``i`` of ``shapes`` to ``out_dim`` logits through conv3×3-BN-ReLU blocks that
    mimic the stages after it: one block per later stage j with its channels ``width · C_j`` and a stride of 2
    where stage j halves the resolution, then (``extra`` blocks) more blocks at the deepest stage's channels, a
    global average pool (the branch's *feature*) and a linear classifier. MSD's "sampling-based branch
    augmentation", HSAKD's auxiliary branches (``extra=1`` for the deepest stage) and the Rocket booster.
    """

    def __init__(self, shapes: Shapes, stage: int, out_dim: int, width: float = 1.0, extra: int = 0) -> None:
        super().__init__()
        feats = shapes.feats
        c, h = feats[stage][0], feats[stage][1]
        blocks = []
        for j in range(stage + 1, len(feats)):
            c_j = max(1, round(width * feats[j][0]))
            stride = 2 if feats[j][1] < h else 1
            blocks.append(_block(c, c_j, stride))
            c, h = c_j, feats[j][1]
        c_last = max(1, round(width * feats[-1][0]))
        for _ in range(extra):
            blocks.append(_block(c, c_last, 1))
            c = c_last
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c
        self.fc = nn.Linear(c, out_dim)

    def features(self, f: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.blocks(f), 1).flatten(1)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(self.features(f))


class BottleneckBranch(nn.Module):
    """BYOT's branch from stage ``i``: conv1×1 to ``C/4`` channels, a k×k conv of stride k (k = the stage's
    resolution over the deepest stage's), conv1×1 to ``C`` channels (each with BN + ReLU; ``C`` = the deepest
    stage's channels), global average pooling (the branch's *feature*, compared with the deepest one) and a
    linear classifier (the layout of the MSD authors' public BYOT implementation)."""

    def __init__(self, shapes: Shapes, stage: int, out_dim: int) -> None:
        super().__init__()
        c_in, h_in = shapes.feats[stage][0], shapes.feats[stage][1]
        c_out, h_out = shapes.feats[-1][0], shapes.feats[-1][1]
        mid, k = max(1, c_out // 4), max(1, h_in // max(1, h_out))
        self.blocks = nn.Sequential(
            nn.Conv2d(c_in, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride=k), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.feature_dim = c_out
        self.fc = nn.Linear(c_out, out_dim)

    def features(self, f: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.blocks(f), 1).flatten(1)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(self.features(f))
