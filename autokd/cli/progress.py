"""Live progress of a search: trial k/N (baselines extra), the running trial's recipe, seed k/S and epoch e/E,
best so far; one line per finished trial with its gain over the in-study KD baseline and its duration."""

from __future__ import annotations

import time

from rich.markup import escape

from ._common import console

__all__ = ["RichProgress"]


class RichProgress:
    """Receives ``search_started``, ``trial_started``, ``epoch`` and ``trial_finished`` from the search."""

    #: seconds between two reads of the study for a KD baseline not found yet
    recheck_s = 5.0

    def __init__(self, seeds: int = 1) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=False)
        self.seeds = max(1, seeds)
        self.trials = None
        self.epochs = None
        self.best: float | None = None
        self.seed = 1
        self.last_epoch = -1
        self.recipe_text = ""
        self.t0 = time.time()
        self.kd_values: dict[str | None, float] = {}  # completed KD baselines' values, by student label
        self.kd_read_at: dict[str | None, float] = {}  # when the study was last read for one not found

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def search_started(self, study, todo: int, target: int) -> None:
        import optuna

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        if done:
            self.best = max(t.values[0] for t in done)
        self.trials = self.progress.add_task("trials", total=todo, info=self._best())
        if todo == 0:
            console.print(f"study already has {target} finished trials; nothing to do (raise --trials to add more)")

    def _kd_value(self, study, student: str | None) -> float | None:
        """The value of the study's completed KD baseline for ``student``. A completed trial never changes,
        so the study is read only until it is found (another worker may run it), and while it is not, at most
        every :attr:`recheck_s` seconds (a study without baselines would be read after every trial)."""
        from ..search import trial_record as tr

        if student not in self.kd_values:
            if time.monotonic() - self.kd_read_at.get(student, -float("inf")) < self.recheck_s:
                return None
            self.kd_read_at[student] = time.monotonic()
            kd = next((t for t in study.get_trials(deepcopy=False) if tr.baseline_of(t) == tr.Baseline.KD
                       and tr.student_of(t) == student and t.values), None)
            if kd is None:
                return None
            self.kd_values[student] = kd.values[0]
        return self.kd_values[student]

    def _best(self) -> str:
        return f"best val acc {self.best:.4f}" if self.best is not None else ""

    def trial_started(self, number: int, recipe, epochs: int) -> None:
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.seed, self.last_epoch = 1, -1
        self.recipe_text = recipe.describe()
        self.number = number
        self.epochs = self.progress.add_task(self._desc(number), total=epochs, info=escape(self.recipe_text))

    def _desc(self, number: int) -> str:
        seed = f" seed {self.seed}/{self.seeds}" if self.seeds > 1 else ""
        return f"  trial {number}{seed}"

    def epoch(self, info: dict) -> None:
        if self.epochs is None:
            return
        e = int(info.get("epoch", 0))
        if e <= self.last_epoch:  # the epoch count restarted: the trial moved on to its next seed
            self.seed += 1
        self.last_epoch = e
        self.progress.update(self.epochs, completed=e + 1, description=self._desc(self.number),
                             info=f"val acc {info.get('val_acc', float('nan')):.4f} · {escape(self.recipe_text)}")

    def trial_finished(self, study, trial) -> None:
        from ..search import trial_record as tr

        v = trial.values[0] if trial.values else None
        if v is not None and (self.best is None or v > self.best):
            self.best = v
        state = trial.state.name.lower()
        tag = tr.baseline_of(trial)
        label = f"baseline {tag.value}" if tag else (tr.description_of(trial) or "")
        val = tr.metric_of(trial, tr.Key.VAL_ACC)
        val_s = f"{val:.4f}" if val is not None else "-"
        gain = ""
        if tag == tr.Baseline.KD and trial.values:
            self.kd_values.setdefault(tr.student_of(trial), trial.values[0])
        if tag is None and v is not None:
            kd = self._kd_value(study, tr.student_of(trial))
            if kd is not None:
                gain = f" ({100 * (v - kd):+.2f} pts vs KD)"
        dur = trial.duration.total_seconds() if trial.duration is not None else None
        dur_s = f" {dur:.0f}s" if dur is not None else ""
        self.progress.console.print(f"trial {trial.number:3d} {state:8s} val {val_s}{gain}{dur_s}  {label}",
                                    highlight=False, markup=False, soft_wrap=True)
        if self.trials is not None:
            self.progress.update(self.trials, advance=1, info=self._best())
