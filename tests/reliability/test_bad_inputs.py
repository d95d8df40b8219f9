"""A catalogue of bad inputs: each is refused with exit code 2 and ONE line naming the file and the field,
never a traceback, before anything trains, and without writing any file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autokd.cli import app

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "search_spaces" / "digits.yaml"
runner = CliRunner()

GOOD = {
    "name": "s",
    "device": "cpu",
    "data": "{name: digits, train_fraction: 0.2}",
    "teacher": "{name: cnn, kwargs: {width: 4}, epochs: 1}",
    "space": "space.yaml",
    "search": "{trials: 1, epochs: 1}",
}
GOOD_SPACE = SPACE.read_text()


def _study_text(**over) -> str:
    d = {**GOOD, **over}
    return "\n".join(f"{k}: {v}" for k, v in d.items() if v is not None) + "\n"


def _space_text(old: str, new: str) -> str:
    assert old in GOOD_SPACE, old
    return GOOD_SPACE.replace(old, new, 1)


# (id, study file text or bytes, space file text or bytes or None (= the shipped one), expected substring)
STUDY_CASES = [
    ("malformed yaml", "name: s\nteacher: {name: cnn\n", None, "malformed YAML"),
    ("duplicate key", _study_text() + "name: t\n", None, "duplicate key 'name'"),
    ("binary file", b"\x00\x01\x02\xff\xfe", None, "not a text"),
    ("top-level list", "- a\n- b\n", None, "expected a mapping"),
    ("unknown field", _study_text(colour="red"), None, "colour: unknown field"),
    ("name with slash", _study_text(name="a/b"), None, "name"),
    ("name too long", _study_text(name="x" * 300), None, "at most 100"),
    ("output_dir escapes", _study_text(output_dir="../../x"), None, "output_dir"),
    ("device", _study_text(device="gpu"), None, "device"),
    ("unknown dataset", _study_text(data="{name: digitz}"), None, "unknown dataset 'digitz'"),
    ("val_fraction", _study_text(data="{name: digits, val_fraction: 1.5}"), None, "data.val_fraction"),
    ("train_fraction 0", _study_text(data="{name: digits, train_fraction: 0}"), None, "data.train_fraction"),
    ("data seed type", _study_text(data="{name: digits, seed: a}"), None, "data.seed"),
    ("data nan fraction", _study_text(data="{name: digits, train_fraction: .nan}"), None, "data.train_fraction"),
    ("no teacher", _study_text(teacher=None), None, "teacher"),
    ("unknown teacher", _study_text(teacher="{name: resnet1000}"), None, "unknown model 'resnet1000'"),
    ("teacher epochs 0", _study_text(teacher="{name: cnn, epochs: 0}"), None, "teacher.epochs"),
    ("teacher lr nan", _study_text(teacher="{name: cnn, lr: .nan}"), None, "teacher.lr"),
    ("teacher lr inf", _study_text(teacher="{name: cnn, lr: .inf}"), None, "teacher.lr"),
    ("teacher checkpoint missing", _study_text(teacher="{name: cnn, checkpoint: /nonexistent/t.pt}"), None,
     "teacher.checkpoint"),
    ("teacher_cache", _study_text(teacher_cache="sometimes"), None, "teacher_cache"),
    ("space missing", _study_text(space="nope.yaml"), None, "search space not found"),
    ("sampler", _study_text(search="{sampler: grid}"), None, "unknown sampler 'grid'"),
    ("pruner", _study_text(search="{pruner: mediann}"), None, "did you mean 'median'"),
    ("sampler kwargs", _study_text(search="{sampler: tpe, sampler_kwargs: {n_startup: 3}}"), None,
     "search.sampler_kwargs"),
    ("pruner kwargs", _study_text(search="{pruner: median, pruner_kwargs: {warmup: 3}}"), None,
     "search.pruner_kwargs"),
    ("trials 0", _study_text(search="{trials: 0}"), None, "search.trials"),
    ("storage scheme", _study_text(search="{storage: 'foo://bar'}"), None, "search.storage"),
    ("journal relative", _study_text(search="{storage: 'journal://rel/x.log'}"), None, "absolute path"),
    ("prescreen proxy", _study_text(search="{prescreen: {proxy: magic}}"), None, "unknown proxy 'magic'"),
    ("prescreen keep", _study_text(search="{prescreen: {keep: 2}}"), None, "search.prescreen.keep"),
    ("diswot proxy", _study_text(search="{mode: diswot, diswot: {proxy: magic}}"), None, "unknown proxy 'magic'"),
    ("mode", _study_text(search="{mode: grid}"), None, "search.mode"),
    ("backend", _study_text(search="{backend: spark}"), None, "search.backend"),
    ("seeds_per_trial", _study_text(search="{seeds_per_trial: 0}"), None, "search.seeds_per_trial"),
    ("final seeds", _study_text(final="{seeds: 0}"), None, "final.seeds"),
    ("epochs negative", _study_text(search="{epochs: -1}"), None, "search.epochs"),
    ("baseline temperature", _study_text(search="{baseline_temperature: -4}"), None, "baseline_temperature"),
    ("heartbeat", _study_text(search="{heartbeat_grace: 1}"), None, "heartbeat_grace"),
    # the search space
    ("space malformed", _study_text(), "student: [cnn\n", "malformed YAML"),
    ("space duplicate key", _study_text(), "student: [cnn_w2]\nstudent: [cnn_w3]\n", "duplicate key 'student'"),
    ("space binary", _study_text(), b"\x00\xff\x00", "not a text"),
    ("space negative temperature", _study_text(), GOOD_SPACE + "\ntemperature: {low: -5, high: -1}\n",
     "temperature"),
    ("space nan ce_weight", _study_text(), GOOD_SPACE + "\nce_weight: .nan\n", "ce_weight"),
    ("space unknown loss", _study_text(), "student: [cnn_w2]\nterms: [{loss: kdd}]\n", "did you mean 'kd'"),
    ("space hparam typo", _study_text(), "student: [cnn_w2]\nterms: [{loss: kd, params: {temp: 2}}]\n",
     "no hyper-parameter 'temp'"),
    ("space inf weight", _study_text(), "student: [cnn_w2]\nterms: [{loss: kd, weight: .inf}]\n", "weight"),
    ("space unknown scheme", _study_text(), "student: [cnn_w2]\nscheme: eskdd\n", "unknown scheme"),
    ("space negative lr", _study_text(), "student: [cnn_w2]\noptim: {lr: -1.0}\n", "optim.lr"),
    ("space pairs on logits", _study_text(), "student: [cnn_w2]\nterms: [{loss: kd, pairs: auto}]\n",
     "takes no layer pairs"),
    ("space unknown model", _study_text(), "student: [cnn_w44]\n", "unknown model 'cnn_w44'"),
    ("space empty students", _study_text(), "student: []\n", "student"),
]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_one_clean_line(result, expect: str) -> None:
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert expect in out, out


@pytest.mark.parametrize("case", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_bad_study_inputs_are_refused_before_training(case, tmp_path):
    _, study, space, expect = case
    p = tmp_path / "study.yaml"
    (p.write_bytes if isinstance(study, bytes) else p.write_text)(study)
    sp = tmp_path / "space.yaml"
    if space is None:
        sp.write_text(GOOD_SPACE)
    else:
        (sp.write_bytes if isinstance(space, bytes) else sp.write_text)(space)
    before = _listing(tmp_path)
    result = runner.invoke(app, ["search", str(p)], env={"COLUMNS": "400"})
    _assert_one_clean_line(result, expect)
    assert _listing(tmp_path) == before  # nothing written


RECIPE = """student: {name: cnn, kwargs: {width: 2}}
ce_weight: 0.1
terms: [{loss: kd, weight: 0.9, params: {temperature: 4.0}}]
"""
RECIPE_CASES = [
    ("negative temperature", RECIPE.replace("temperature: 4.0", "temperature: -3"), "temperature must be > 0"),
    ("infinite weight", RECIPE.replace("weight: 0.9", "weight: .inf"), "weight"),
    ("unknown loss", RECIPE.replace("loss: kd", "loss: kdd"), "did you mean 'kd'"),
    ("unknown model", RECIPE.replace("name: cnn", "name: cnnn"), "unknown model"),
    ("malformed", "student: {name: cnn\n", "malformed YAML"),
    ("schema version", RECIPE + "schema_version: 99\n", "schema_version"),
    ("duplicate key", RECIPE + "ce_weight: 0.2\n", "duplicate key"),
    ("unknown scheme param", RECIPE + "scheme: {name: dlb, params: {alpah: 1}}\n", "did you mean 'alpha'"),
]


@pytest.mark.parametrize("case", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_bad_recipes_are_refused_before_training(case, tmp_path):
    _, text, expect = case
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    (tmp_path / "study.yaml").write_text(_study_text())
    r = tmp_path / "r.yaml"
    r.write_text(text)
    before = _listing(tmp_path)
    result = runner.invoke(app, ["train", str(r), "--study", str(tmp_path / "study.yaml")], env={"COLUMNS": "400"})
    _assert_one_clean_line(result, expect)
    assert _listing(tmp_path) == before


def test_missing_files_and_unrun_studies(tmp_path):
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    (tmp_path / "study.yaml").write_text(_study_text())
    before = _listing(tmp_path)
    for args, expect in (
        (["train", str(tmp_path / "missing.yaml")], "recipe file not found"),
        (["report", str(tmp_path / "study.yaml")], "has not been run yet"),
        (["export", str(tmp_path / "study.yaml")], "has not been run yet"),
        (["search", str(tmp_path / "nothing.yaml")], "study file not found"),
    ):
        _assert_one_clean_line(runner.invoke(app, args, env={"COLUMNS": "400"}), expect)
    assert _listing(tmp_path) == before


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    p = tmp_path / "study.yaml"
    p.write_text(_study_text(output_dir=str(tmp_path / "blocker" / "out")))
    _assert_one_clean_line(runner.invoke(app, ["search", str(p)], env={"COLUMNS": "400"}), "not writable")


def test_truncated_study_database(tmp_path):
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    p = tmp_path / "study.yaml"
    p.write_text(_study_text())
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.db").write_bytes(b"SQLite format 3\x00" + os.urandom(50))
    for cmd in ("search", "report", "export"):
        _assert_one_clean_line(runner.invoke(app, [cmd, str(p)], env={"COLUMNS": "400"}), "study.db")


def test_catalogue_is_large_enough():
    assert len(STUDY_CASES) + len(RECIPE_CASES) + 6 >= 50
