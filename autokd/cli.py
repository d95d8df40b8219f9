"""The ``autokd`` command line: parse -> call the API -> print. User mistakes: one line, exit code 2."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .errors import AutoKDError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="autokd: search the best knowledge-distillation recipe for a teacher and a task.")
space_app = typer.Typer(no_args_is_help=True, help="Inspect search spaces.")
app.add_typer(space_app, name="space")
teacher_app = typer.Typer(no_args_is_help=True, help="Inspect the study's teacher.")
app.add_typer(teacher_app, name="teacher")
console = Console()
err_console = Console(stderr=True)


def _clean(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutoKDError as e:
            code = getattr(e, "exit_code", 2)
            label = "stopped:" if code != 2 else "[bold red]error:[/]"
            err_console.print(f"{label} {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            err_console.print("stopped: interrupted; rerun the same command to resume (completed trials are kept)",
                              soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM ends the running trial like Ctrl-C does (recorded as failed, retried on resume)."""
    import signal

    def on_term(signum, frame):
        from .search.backends.optuna_backend import Interrupted

        raise Interrupted("SIGTERM", 143)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _with_device(cfg, device: str | None):
    if device is None:
        return cfg
    try:
        return cfg.model_copy(update={"device": type(cfg).model_validate({**cfg.model_dump(), "device": device}).device})
    except Exception:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None


class RichProgress:
    """Live progress: trial k/N, epoch e/E, best so far."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.trials = None
        self.epochs = None
        self.best: float | None = None
        self.t0 = time.time()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def search_started(self, study, todo: int, target: int) -> None:
        import optuna

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            self.best = max(t.values[0] for t in done)
        self.trials = self.progress.add_task("trials", total=todo, info=self._best())
        if todo == 0:
            console.print(f"study already has {target} finished trials; nothing to do (raise --trials to add more)")

    def _best(self) -> str:
        return f"best val acc {self.best:.4f}" if self.best is not None else ""

    def trial_started(self, number: int, recipe, epochs: int) -> None:
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        desc = recipe.describe()
        self.epochs = self.progress.add_task(f"  trial {number}", total=epochs, info=escape(desc[:70]))

    def epoch(self, info: dict) -> None:
        if self.epochs is not None:
            self.progress.update(self.epochs, completed=info["epoch"] + 1,
                                 info=f"val acc {info.get('val_acc', float('nan')):.4f}")

    def trial_finished(self, study, trial) -> None:
        v = trial.values[0] if trial.values else None
        if v is not None and (self.best is None or v > self.best):
            self.best = v
        state = trial.state.name.lower()
        from .search import trial_record as tr

        tag = tr.baseline_of(trial)
        label = f"baseline {tag.value}" if tag else (tr.description_of(trial) or "")
        val = tr.metric_of(trial, tr.Key.VAL_ACC)
        val_s = f"{val:.4f}" if val is not None else "-"
        self.progress.console.print(f"trial {trial.number:3d} {state:8s} val {val_s}  {label}", highlight=False,
                                    markup=False)
        if self.trials is not None:
            self.progress.update(self.trials, advance=1, info=self._best())


@app.command()
@_clean
def search(
    study: Path = typer.Argument(..., help="study YAML (e.g. studies/digits.yaml)"),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", min=1, help="searched trials in total"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="stop after this many seconds"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device (auto, cpu, cuda:N); "
                                         "run one worker per GPU on a shared storage to use many GPUs"),
    worker: Optional[str] = typer.Option(None, "--worker", help="this worker's name when several share the "
                                         "study (seeds its sampler; default host:pid)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads of this process "
                                          "(with N workers on one machine: cores / N)"),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="resume although the study's teacher, "
                                       "data or space changed (recorded; the report separates the trials)"),
) -> None:
    """Run (or resume) a study: baselines first, then the search; writes best_recipe.yaml.

    Several workers may run the same command on one study (same machine: SQLite or journal storage; many
    machines: PostgreSQL): the study ends with exactly the requested trials and nothing runs twice."""
    from .api import load_study_config, run_search
    from .search.export import best_trial

    cfg = _with_device(load_study_config(study), device)
    if threads is not None:
        import os

        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    t0 = time.time()
    with _terminate_as_interrupt(), RichProgress() as prog:
        st = run_search(cfg, trials=trials, timeout=timeout, progress=prog, log=console.print, worker=worker,
                        allow_changed=allow_changed)
    best = best_trial(st)
    console.print(f"search done in {time.time() - t0:.0f}s; storage: {cfg.storage_url}")
    if best is not None:
        from .search import trial_record as tr

        console.print(f"best: trial {best.number} val acc {best.values[0]:.4f} — "
                      f"{tr.description_of(best) or ''}", markup=False)
        console.print(f"best recipe: {cfg.study_dir / 'best_recipe.yaml'}")


@app.command()
@_clean
def report(
    study: Path = typer.Argument(..., help="study YAML or its output folder"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML path (default: <study>/report.html)"),
) -> None:
    """Write a self-contained HTML report (opens offline)."""
    from .api import make_report

    path = make_report(study, output)
    console.print(f"report: {path}")


@app.command()
@_clean
def export(
    study: Path = typer.Argument(..., help="study YAML or its output folder"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="recipe path (default: <study>/best_recipe.yaml)"),
) -> None:
    """Export the best recipe (with provenance) as YAML."""
    from .api import export_recipe

    path = export_recipe(study, output)
    console.print(f"recipe: {path}")


@app.command()
@_clean
def train(
    recipe: Path = typer.Argument(..., help="a recipe YAML (e.g. from autokd export)"),
    study: Optional[Path] = typer.Option(None, "--study", help="study YAML for data and teacher"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="number of seeds (default: study's final.seeds)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs (default: the recipe's)"),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the CE-only and KD baselines"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device"),
) -> None:
    """Retrain a recipe with several seeds; print test accuracy beside the KD and CE-only baselines."""
    from rich.table import Table

    from .api import load_study_config, train_recipe
    from .recipe import Recipe

    r = Recipe.load(recipe)
    cfg = None
    if study is not None or device is not None:
        src = study or getattr(r.provenance, "study_file", None)
        if src is None:
            raise ConfigError("train: the recipe records no study; pass --study STUDY.yaml")
        cfg = _with_device(load_study_config(src), device)
    res = train_recipe(r, study=cfg, seeds=seeds, epochs=epochs, baselines=not no_baselines,
                       log=console.print)
    table = Table(title=f"test accuracy over {len(res.seeds)} seed(s)")
    for col in ("run", "test acc (mean ± std)", "val acc (mean)", "vs CE-only", "vs KD"):
        table.add_column(col)
    s = res.summary()
    for label, v in s.items():
        d_ce = v["mean"] - s["ce_only"]["mean"] if "ce_only" in s else None
        d_kd = v["mean"] - s["kd"]["mean"] if "kd" in s else None
        vm = sum(res.val[label]) / len(res.val[label])
        table.add_row(label, f"{v['mean']:.4f} ± {v['std']:.4f}", f"{vm:.4f}",
                      f"{d_ce:+.4f}" if d_ce is not None else "-", f"{d_kd:+.4f}" if d_kd is not None else "-")
    console.print(table)
    if res.path:
        console.print(f"results: {res.path}")


@app.command()
@_clean
def proxies(
    study: Path = typer.Argument(..., help="study YAML (data and teacher)"),
    space: Optional[Path] = typer.Option(None, "--space", help="search space of candidate students "
                                         "(default: the study's)"),
    n: int = typer.Option(64, "--n", min=1, help="number of candidate students"),
    proxy: Optional[list[str]] = typer.Option(None, "--proxy", help="proxy name (repeatable; default: all)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV path (default: <study>/proxies.csv)"),
) -> None:
    """Score candidate students training-free with zero-cost proxies; print a ranked table, write CSV."""
    from rich.table import Table

    from . import proxies as px
    from .api import load_study_config
    from .context import StudyContext
    from .search.space import SearchSpace
    from .search.student_ranking import rank_rows, score_candidates, write_csv

    cfg = load_study_config(study)
    names = list(proxy) if proxy else px.names()
    for name in names:
        px.PROXIES.canonical(name, where="--proxy")
    need_teacher = any(px.needs_teacher(name) for name in names)
    sp = SearchSpace.load(space or cfg.space_path)
    ctx = StudyContext.open(cfg, log=console.print, need_teacher=need_teacher)
    with console.status("scoring candidates") as status:
        rows = score_candidates(ctx, sp, n=n, proxies=names, seed=cfg.seed,
                                progress=lambda i, total, row: status.update(f"scored {i}/{total}: "
                                                                             f"{escape(row['student'])}"))
    ranked = rank_rows(rows, names[0])
    table = Table(title=f"{len(rows)} candidate students ranked by {names[0]} (higher = predicted better)")
    table.add_column("#")
    table.add_column("student")
    table.add_column("params", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for i, r in enumerate(ranked, 1):
        table.add_row(str(i), escape(r["student"]), f"{r['params']:,}",
                      *[f"{r.get(name, float('nan')):.4g}" for name in names])
    console.print(table)
    path = write_csv(ranked, output or cfg.study_dir / "proxies.csv")
    console.print(f"csv: {path}")


class Family(str, Enum):
    losses = "losses"
    models = "models"
    schemes = "schemes"
    samplers = "samplers"
    pruners = "pruners"
    datasets = "datasets"
    proxies = "proxies"


@app.command("list")
@_clean
def list_(family: Family = typer.Argument(..., help="what to list")) -> None:
    """List registered components with their papers / descriptions."""
    from rich.table import Table

    table = Table(title=family.value)
    table.add_column("name")
    if family is Family.losses:
        from . import losses

        table.add_column("level")
        table.add_column("needs")
        table.add_column("hyper-parameters (default)")
        table.add_column("paper")
        for name, cls in losses.LOSSES.items():
            hp = ", ".join(f"{k}={h.default}" for k, h in cls.hparams.items())
            table.add_row(name, cls.level, ",".join(sorted(cls.needs)), hp, cls.paper)
    elif family is Family.schemes:
        from . import schemes

        table.add_column("parameters (default)")
        table.add_column("paper")
        for name, cls in schemes.SCHEMES.items():
            ps = ", ".join(f"{k}={h.default}" for k, h in cls.hparams.items())
            table.add_row(name, ps, cls.paper)
    else:
        if family is Family.models:
            from .models import MODELS as reg
        elif family is Family.samplers:
            from .search.samplers import SAMPLERS as reg
        elif family is Family.pruners:
            from .search.pruners import PRUNERS as reg
        elif family is Family.proxies:
            from .proxies import PROXIES as reg
        else:
            from .data import DATASETS as reg
        table.add_column("description")
        for name, _ in reg.items():
            meta = reg.meta(name)
            desc = meta.get("description") or meta.get("paper") or meta.get("family", "")
            if family is Family.proxies:
                desc = f"{desc} [BN {meta.get('bn_mode', '-')}{', needs teacher' if meta.get('needs_teacher') else ''}]"
            table.add_row(name, escape(str(desc)))
    console.print(table)


@space_app.command("show")
@_clean
def space_show(path: Path = typer.Argument(..., help="search space YAML")) -> None:
    """Print a search space's decisions and parameters."""
    from .search.space import SearchSpace

    sp = SearchSpace.load(path)
    console.print(sp.describe(), highlight=False, soft_wrap=True, markup=False)


@space_app.command("schema")
@_clean
def space_schema() -> None:
    """Print the JSON Schema of search-space files."""
    import json

    from .search.space import SpaceFile

    print(json.dumps(SpaceFile.model_json_schema(by_alias=True), indent=2))


@teacher_app.command("check")
@_clean
def teacher_check(
    study: Path = typer.Argument(..., help="study YAML (data, teacher, and the space's first student)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="paired seeds of each run"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs (default: the search's budget)"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device"),
) -> None:
    """Is the teacher distillable? Train the student baseline CE-only and with plain KD over paired seeds."""
    import json
    import statistics

    from rich.table import Table

    from .api import load_study_config
    from .context import StudyContext
    from .search.space import SearchSpace
    from .teacher_check import check_teacher

    cfg = _with_device(load_study_config(study), device)
    search = cfg.search
    recipe = SearchSpace.load(cfg.space_path).baseline("ce_only")
    ctx = StudyContext.open(cfg, log=console.print)
    res = check_teacher(ctx, recipe, seeds=seeds, epochs=epochs or search.epochs, log=console.print,
                        temperature=search.baseline_temperature, kd_weight=search.baseline_kd_weight,
                        ce_weight=search.baseline_ce_weight)
    table = Table(title=f"{recipe.student.label()} for {res.epochs} epochs: val accuracy over {len(res.seeds)} "
                        f"seed(s)")
    for col in ("run", "val acc (mean ± std)", "per seed"):
        table.add_column(col)
    for label, v in (("CE-only", res.ce_only), (f"KD (T={res.temperature:g})", res.kd)):
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        table.add_row(label, f"{statistics.fmean(v):.4f} ± {std:.4f}", " ".join(f"{a:.4f}" for a in v))
    d = res.difference
    table.add_row("KD − CE-only (paired)", f"{d.mean:+.4f} ± {d.sd:.4f}", f"95% interval [{d.low:+.4f}, {d.high:+.4f}]")
    console.print(table)
    for line in res.explanation():
        console.print(line, markup=False, highlight=False)
    path = cfg.study_dir / "teacher_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res.to_dict(), indent=1))
    console.print(f"results: {path}")


def main() -> None:
    try:
        app()
    except AutoKDError as e:  # pragma: no cover - commands already catch these
        err_console.print(f"error: {e}", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
