"""Optuna's own sampler contract (``optuna.testing.pytest_samplers``) run on both tree samplers.

The test classes expect a ``sampler`` fixture returning a zero-argument factory; Optuna's test-suite wires
its samplers the same way (``@pytest.fixture(params=[...])`` returning ``request.param``). Each sampler
runs with its defaults and with settings that reach its model within the few trials the contract uses
(MCTS: a Parzen leaf after one observation; evolution: offspring after two trials). ``RelativeSamplerTestCase``
and ``MultiObjectiveSamplerTestCase`` do not apply: both samplers sample define-by-run (no relative search
space) and refuse multi-objective studies, which ``SingleOnlySamplerTestCase`` checks.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import BasicSamplerTestCase, SingleOnlySamplerTestCase

from autokd.search.samplers import EvolutionSampler, MCTSSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

FACTORIES = [
    pytest.param(MCTSSampler, id="mcts"),
    pytest.param(lambda: MCTSSampler(n_startup_leaf=1, seed=0), id="mcts-leaf-model-at-once"),
    pytest.param(EvolutionSampler, id="evolution"),
    pytest.param(lambda: EvolutionSampler(population_size=2, seed=0), id="evolution-offspring-at-once"),
]


class TestBasicContract(BasicSamplerTestCase):
    @pytest.fixture(params=FACTORIES)
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        return request.param


class TestSingleObjectiveOnlyContract(SingleOnlySamplerTestCase):
    @pytest.fixture(params=FACTORIES)
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], BaseSampler]:
        return request.param
