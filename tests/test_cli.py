from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autokd.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _study(tmp_path, **over):
    text = {
        "name": "s",
        "data": "{name: digits, train_fraction: 0.2}",
        "teacher": "{name: cnn, kwargs: {width: 4}, epochs: 1}",
        "space": str(ROOT / "search_spaces" / "digits.yaml"),
        "search": "{trials: 1, epochs: 1}",
    }
    text.update(over)
    p = tmp_path / "study.yaml"
    p.write_text("\n".join(f"{k}: {v}" for k, v in text.items() if v is not None))
    return p


@pytest.mark.parametrize(
    "over, match",
    [
        ({"search": "{sampler: tpee}"}, "unknown sampler 'tpee'; did you mean 'tpe'"),
        ({"search": "{pruner: medain}"}, "unknown pruner 'medain'"),
        ({"data": "{name: digitz}"}, "unknown dataset 'digitz'"),
        ({"teacher": "{name: resnet9}"}, "unknown model 'resnet9'"),
        ({"teacher": None}, "teacher: Field required"),
        ({"data": "{name: digits, val_fraction: 1.5}"}, "data.val_fraction"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda"),
        ({"space": "nowhere.yaml"}, "search space not found"),
        ({"name": "'a b'"}, "name must be letters"),
        ({"extra_field": "1"}, "extra_field: unknown field"),
        ({"search": "{backend: ray, ray: {address: somewhere}}"}, "search.ray.address: address must be auto"),
        ({"search": "{backend: ray, ray: {cpus_per_trial: 0}}"}, "search.ray.cpus_per_trial"),
        ({"search": "{backend: ray, ray: {gpus_per_trial: 1.5}}"}, "must be a whole number of GPUs"),
        ({"search": "{backend: ray, ray: {gpus_per_trial: 0.5}}", "device": "cpu"},
         "search.ray.gpus_per_trial: 0.5 GPUs per trial with device: cpu"),
        ({"search": "{backend: ray, mode: diswot}"}, "search.backend: ray runs search.mode: search"),
        ({"search": "{backend: ray, ray: {address: auto, num_cpus: 2}}"}, "search.ray.num_cpus"),
        ({"search": "{backend: ray, ray: {max_concurrent: 0}}"}, "search.ray.max_concurrent"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, over, match):
    p = _study(tmp_path, **over)
    res = runner.invoke(app, ["search", str(p)])
    assert res.exit_code == 2, res.output
    assert match in res.output.replace("\n", " ") or match in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_missing_and_malformed_files(tmp_path):
    res = runner.invoke(app, ["search", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "study file not found" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    res = runner.invoke(app, ["search", str(bad)])
    assert res.exit_code == 2 and "malformed YAML" in res.output and "line" in res.output
    res = runner.invoke(app, ["train", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "recipe file not found" in res.output


def test_report_before_search_is_a_clear_error(tmp_path):
    p = _study(tmp_path)
    res = runner.invoke(app, ["report", str(p)])
    assert res.exit_code == 2 and "has not been run yet" in " ".join(res.output.split())


@pytest.mark.parametrize("family, expect", [("losses", "logit"), ("models", "resnet32x4"), ("samplers", "tpe"),
                                            ("pruners", "hyperband"), ("schemes", "standard"),
                                            ("datasets", "digits")])
def test_list(family, expect):
    res = runner.invoke(app, ["list", family], terminal_width=200)
    assert res.exit_code == 0 and expect in res.output


def test_list_unknown_family_exits_2():
    res = runner.invoke(app, ["list", "lossez"])
    assert res.exit_code == 2


def test_space_show():
    res = runner.invoke(app, ["space", "show", str(ROOT / "search_spaces" / "digits.yaml")], terminal_width=200)
    assert res.exit_code == 0 and "terms.0.kd.temperature" in res.output


def test_space_show_with_a_study_gives_the_weight_ranges_of_its_models(tmp_path):
    moonshine = str(ROOT / "search_spaces" / "moonshine.yaml")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: m\ndata: {{name: digits}}\nteacher: {{name: wrn, kwargs: {{depth: 16, widen: 2}}}}\n"
                     f"space: {moonshine}\n")
    res = runner.invoke(app, ["space", "show", moonshine], terminal_width=200)
    assert res.exit_code == 0 and "terms.0.at.weight: float[10, 10000, log]" in res.output
    res = runner.invoke(app, ["space", "show", moonshine, "--study", str(study)], terminal_width=200)
    # WRN-16-2 teacher and students on 8×8 digits: stages 8², 8², 4², 2²; auto pairs compare 64, 16 and 4
    # positions where AT's reference compares 1024, 256 and 64: its range (10, 10^4) / 16
    assert res.exit_code == 0 and "terms.0.at.weight: float[0.625, 625, log]" in res.output


def test_list_losses_compact_with_level_and_verbose_citations():
    res = runner.invoke(app, ["list", "losses", "--level", "feature"], terminal_width=200)
    assert res.exit_code == 0 and "fitnet" in res.output and "Hinton" not in res.output
    assert " dkd " not in res.output  # a logit loss is filtered out
    res = runner.invoke(app, ["list", "losses", "--verbose"], terminal_width=400)
    assert res.exit_code == 0 and "Hinton" in res.output
    res = runner.invoke(app, ["list", "losses", "--json", "--level", "relation"])
    import json

    rows = json.loads(res.output)
    assert rows and {r["level"] for r in rows} == {"relation"} and all("paper" in r for r in rows)


def test_version():
    from autokd import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"autokd {__version__}"


def test_committed_catalog_index_is_current():
    """``autokd list`` reads autokd/cli/catalog.json: it must equal what the registries give now
    (rewrite it with ``python -m autokd.cli.catalog_index``)."""
    import json

    from autokd.cli import catalog_index

    committed = json.loads(catalog_index.INDEX.read_text())
    assert committed == catalog_index.build_index(), "stale: python -m autokd.cli.catalog_index"


def test_a_stale_catalog_index_is_not_used(tmp_path):
    import json

    from autokd.cli import catalog_index

    live = catalog_index.live_rows("schemes")
    stale = tmp_path / "catalog.json"
    stale.write_text(json.dumps({"source_key": "0" * 64, "families": {"schemes": [{"name": "gone"}]}}))
    assert catalog_index.rows("schemes", stale) == live
    current = tmp_path / "current.json"
    current.write_text(json.dumps({"source_key": catalog_index.source_key(),
                                   "families": {"schemes": [{"name": "from-index"}]}}))
    assert catalog_index.rows("schemes", current) == [{"name": "from-index"}]
    assert len(live) == len(__import__("autokd.schemes", fromlist=["SCHEMES"]).SCHEMES.names())


def test_ray_backend_without_ray_installed_exits_2_before_training(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name, *a))
    p = _study(tmp_path, search="{backend: ray}")
    res = runner.invoke(app, ["search", str(p)])
    assert res.exit_code == 2 and "pip install 'autokd[ray]'" in res.output, res.output
    assert not (tmp_path / "s" / "teacher.pt").exists()
