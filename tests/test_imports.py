"""`import autokd` stays light: optional and heavy dependencies are imported only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_autokd_does_not_import_optional_dependencies():
    code = ("import sys, autokd, autokd.search, autokd.losses, autokd.models, autokd.proxies, autokd.cli;"
            "print(sorted(m for m in ('optuna', 'plotly', 'ray', 'psycopg2', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api():
    import autokd

    for name in autokd.__all__:
        assert hasattr(autokd, name), name
    from autokd.search import SearchSpace
    from autokd.search.samplers import EvolutionSampler, MCTSSampler

    assert SearchSpace and MCTSSampler and EvolutionSampler
