"""Search spaces: ``search_spaces/*.yaml`` -> a decision tree -> Optuna define-by-run ``suggest(trial) -> Recipe``.

One job per module: :mod:`.schema` (with :mod:`.values`) is the pydantic schema of a space file and the
only place it is checked; :mod:`.compile` turns a validated file into the decision tree, once;
:mod:`.suggest` derives ``suggest(trial)`` and ``recipe_from_params`` from that tree; :mod:`.space` holds
:class:`SearchSpace`, the public face.

Every value below may be a fixed value, a list of choices (``[a, b]`` or ``{choices: [...]}``) or a range
``{low, high, log?, int?, step?}``; numbers are finite::

    version: 1
    student:                          # choose one; each family's kwargs may be searched
      - {name: cnn, kwargs: {width: [2, 3, 4]}}
      - {name: resnet, kwargs: {depth: [8, 14], width: {low: 4, high: 16, int: true}}}
    ce_weight: {low: 0.05, high: 1.0, log: true}
    temperature: {low: 1, high: 16, log: true}   # optional: ONE temperature shared by every term
    terms:                            # either a pick ...
      pick: {min: 1, max: 2}          # how many terms (1..k), each chosen among the candidates
      from:
        kd: {}                        # hyper-parameters not given: the loss's default search ranges
        dkd: {params: {beta: {low: 1, high: 8}}, weight: {low: 0.1, high: 2, log: true}}
        at: {pairs: {search: {depths: [0.5, 1.0], max: 2}}}
    # ... or a list of explicit term slots:
    # terms:
    #   - {loss: kd, weight: ..., params: {...}, optional: true}
    #   - {loss: [at, sp], pairs: auto}          # a choice of losses in one slot
    scheme: {choices: {standard: {}, eskd: {stop_fraction: {low: 0.3, high: 0.9}}, dot: default}}
                                      # or a name / a list; `default`: search the scheme's default ranges
    optim: {lr: {low: 0.01, high: 0.3, log: true}, batch_size: [32, 64]}
    budget: {epochs: 15}

Per-term options: ``params`` (ranges overriding the loss's defaults), ``fixed_params: true`` (unmentioned
hyper-parameters stay at their defaults instead of being searched), ``weight`` (default: the loss's
``weight_range``, log scale; a study rescales it for its models where the loss's magnitude depends on their
shapes, see :mod:`autokd.search.weight_ranges`), ``pairs`` (feature losses: ``auto``, ``[[t, s], ...]`` or
``{search: {depths: [...], max: k}}`` — relative depths in (0, 1], mapped onto any teacher/student pair).
Parameter names and their order are listed in :mod:`.compile`.
"""

from __future__ import annotations

from .schema import SpaceFile
from .space import SearchSpace

__all__ = ["SearchSpace", "SpaceFile"]
