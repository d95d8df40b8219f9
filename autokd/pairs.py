"""Teacher-to-student stage pairing: stage-aligned pairs, pairs at relative depths, and the one range check.

A pair is ``(teacher stage, student stage)``, indices into ``Outputs.feats`` (shallow to deep). A recipe
term's ``pairs`` is ``None`` (the loss's default), ``"auto"``, ``{"depths": [...]}`` or an explicit list;
:func:`resolve_pairs` turns any of them into a checked list for a given teacher/student pair of shapes.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError
from .outputs import Shapes

__all__ = ["Pairs", "auto_pairs", "depth_pairs", "check_pairs", "resolve_pairs"]

Pairs = list[tuple[int, int]]


def auto_pairs(teacher: Shapes, student: Shapes) -> Pairs:
    """Stage-aligned (teacher stage, student stage) pairs: one-to-one, in depth order, deepest stages paired.

    The stems (stage 0) are left out unless a model has a single stage. With ``k`` = the smaller number of
    remaining stages, each of the ``k`` stages of the shorter list is paired with a distinct stage of the
    longer one, keeping the order and always pairing the two deepest stages; the alignment chosen (dynamic
    programming) minimises Σ |relative-depth gap| + 0.1·(octaves of spatial mismatch), so relative depth
    decides and equal resolution breaks near-ties. Same-family pairs come out as (1, 1), (2, 2), ...;
    resnet32x4 (4 stages) with mobilenetv2 (5 stages) gives 3 pairs, at 8×8 and 32×32 inputs alike.
    """
    nt, ns = teacher.num_stages, student.num_stages
    if nt == 0 or ns == 0:
        raise ConfigError("pairs: auto needs models that expose stage features (Outputs.feats is empty)")
    t_idx = list(range(1, nt)) if nt > 1 else [0]
    s_idx = list(range(1, ns)) if ns > 1 else [0]

    def rel(i: int, n: int) -> float:
        return i / (n - 1) if n > 1 else 1.0

    def cost(ti: int, si: int) -> float:
        t_hw, s_hw = teacher.feats[ti][1:], student.feats[si][1:]
        octaves = sum(abs(math.log2(max(1, a) / max(1, b))) for a, b in zip(t_hw, s_hw, strict=False)) / 2
        return abs(rel(ti, nt) - rel(si, ns)) + 0.1 * octaves

    short_is_t = len(t_idx) <= len(s_idx)
    short, long_ = (t_idx, s_idx) if short_is_t else (s_idx, t_idx)
    k, m = len(short), len(long_)

    def c(i: int, j: int) -> float:
        return cost(short[i], long_[j]) if short_is_t else cost(long_[j], short[i])

    # best[i][j]: least cost of aligning short[:i+1] with short[i] -> long_[j]; j ranges so that the rest fit
    inf = float("inf")
    best = [[inf] * m for _ in range(k)]
    back = [[-1] * m for _ in range(k)]
    for j in range(m - k + 1):
        best[0][j] = c(0, j)
    for i in range(1, k):
        for j in range(i, m - k + i + 1):
            prev = min(range(i - 1, j), key=lambda jj: best[i - 1][jj])
            best[i][j] = best[i - 1][prev] + c(i, j)
            back[i][j] = prev
    js = [m - 1]
    for i in range(k - 1, 0, -1):
        js.append(back[i][js[-1]])
    js.reverse()
    return [(short[i], long_[j]) if short_is_t else (long_[j], short[i]) for i, j in enumerate(js)]


def depth_pairs(teacher: Shapes, student: Shapes, depths) -> Pairs:
    """Pairs at relative depths in (0, 1]: depth d pairs teacher stage round(d·(T−1)) with student stage
    round(d·(S−1)) (1.0 = the deepest stages). Duplicates collapse."""
    nt, ns = teacher.num_stages, student.num_stages
    if nt == 0 or ns == 0:
        raise ConfigError("pairs: searched pairs need models that expose stage features")
    out = {(round(d * (nt - 1)), round(d * (ns - 1))) for d in depths}
    return sorted(out, key=lambda p: p[1])


def check_pairs(pairs: Pairs, teacher: Shapes, student: Shapes, where: str = "pairs") -> Pairs:
    """``pairs`` as a list of int tuples, or a one-line ConfigError when one is out of range."""
    out = []
    for ti, si in pairs:
        if not (0 <= ti < teacher.num_stages and 0 <= si < student.num_stages):
            raise ConfigError(
                f"{where}: ({ti}, {si}) out of range; the teacher has stages 0..{teacher.num_stages - 1}, "
                f"the student 0..{student.num_stages - 1}"
            )
        out.append((int(ti), int(si)))
    return out


def resolve_pairs(spec: Any, teacher: Shapes | None, student: Shapes | None, where: str = "pairs") -> Pairs | None:
    """A term's ``pairs`` spec (None, ``"auto"``, ``{"depths": [...]}`` or a list) as checked pairs;
    ``None`` stays ``None`` (the loss picks its default)."""
    if spec is None:
        return None
    if teacher is None or student is None:
        raise ConfigError(f"{where}: layer pairs need the models' stage shapes (pass input_shape)")
    if spec == "auto":
        pairs = auto_pairs(teacher, student)
    elif isinstance(spec, dict):
        pairs = depth_pairs(teacher, student, spec["depths"])
    else:
        pairs = [tuple(p) for p in spec]
    return check_pairs(pairs, teacher, student, where)
