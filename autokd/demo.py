"""``make demo``: the embedded-default study end to end — search, report, export, 3-seed retrain."""

from __future__ import annotations

import sys
import time

from .cli import RichProgress, _clean, console


@_clean
def run(study_path: str) -> None:
    from rich.table import Table

    from .api import export_recipe, load_study_config, make_report, run_search, train_recipe

    t0 = time.time()
    cfg = load_study_config(study_path)
    console.rule(f"autokd demo: {cfg.name}")
    console.print(cfg.description or "", highlight=False)
    with RichProgress() as prog:
        run_search(cfg, progress=prog, log=console.print)
    t_search = time.time() - t0
    report = make_report(cfg)
    recipe = export_recipe(cfg)
    console.rule("retraining the best recipe beside its baselines")
    res = train_recipe(recipe, study=cfg, log=console.print)
    s = res.summary()
    table = Table(title=f"test accuracy, {len(res.seeds)} seeds (mean ± std)")
    table.add_column("run")
    table.add_column("test acc")
    for label, name in (("recipe", "best recipe"), ("kd", "plain KD (T=4)"), ("ce_only", "CE-only student")):
        table.add_row(name, f"{s[label]['mean']:.4f} ± {s[label]['std']:.4f}")
    console.print(table)
    console.print(f"study storage : {cfg.storage_url}")
    console.print(f"teacher       : {cfg.study_dir / 'teacher.pt'}")
    console.print(f"report        : {report}")
    console.print(f"best recipe   : {recipe}")
    console.print(f"final results : {res.path}")
    console.print(f"dashboard     : optuna-dashboard {cfg.storage_url}")
    console.print(f"wall time     : {time.time() - t0:.0f}s (search {t_search:.0f}s)")


def main() -> None:
    run(sys.argv[1] if len(sys.argv) > 1 else "studies/digits.yaml")


if __name__ == "__main__":
    main()
