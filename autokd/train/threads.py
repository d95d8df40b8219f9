"""How many intra-op threads torch uses for CPU training when the user chose none.

On small inputs intra-op parallelism loses: each op is a few microseconds of work and the threads spend
longer meeting at barriers than computing, far worse on a busy machine. Measured on 2 cores with the
digits study (8×8 inputs, three 3-seed trials): 11–14 s with one thread against 17–52 s with two. From
32×32 inputs on, ops are large enough for the default (all cores) to pay.

The user's choice always wins: ``autokd search --threads T`` or ``OMP_NUM_THREADS`` in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: inputs with fewer pixels per channel than a 32×32 image train on one CPU thread
SMALL_INPUT_PIXELS = 32 * 32


def default_cpu_threads(input_shape: Sequence[int], cores: int | None = None) -> int:
    """1 for inputs under :data:`SMALL_INPUT_PIXELS` pixels per channel (or token sequences, whose shape
    has one dimension), else all ``cores`` (default: the CPUs this process may use)."""
    if cores is None:
        from .precision import available_cores

        cores = available_cores()
    pixels = 1
    for d in tuple(input_shape)[1:]:
        pixels *= int(d)
    return 1 if len(tuple(input_shape)) < 3 or pixels < SMALL_INPUT_PIXELS else max(1, int(cores))


def set_cpu_threads(device, input_shape: Sequence[int]) -> int | None:
    """Apply :func:`default_cpu_threads` on a CPU device unless the user set the threads; returns the
    count set, or None when nothing was changed."""
    if getattr(device, "type", str(device)) != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    import torch

    n = default_cpu_threads(input_shape)
    torch.set_num_threads(n)
    return n
