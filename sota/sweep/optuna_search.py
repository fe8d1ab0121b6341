"""Multi-objective search with Optuna's NSGA-II, driven by ask/tell: each asked trial becomes a sweep point run
by the launcher like a grid point, and its results.json values are told back. The study lives in
`<sweep_dir>/optuna.db` (SQLite), so re-running the same command resumes it: finished trials stay, trials
that were running when the sweep stopped are settled from their results.json or asked again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sota.sweep.frontier import Objective, number
from sota.sweep.points import Axis, Point, SweepSpecError, axes, bundle, override_strings
from sota.sweep.sweepdir import RESULTS, point_dir, read_results, set_aside_unreadable

log = logging.getLogger(__name__)

STORAGE = "optuna.db"
SUPERSEDED = "superseded"   # study attr: failed trials asked again, which no longer count towards n_trials


def distribution(axis: Axis) -> Any:
    """Optuna distribution of an axis: numeric ranges and intervals stay numeric (NSGA-II can cross them over),
    anything else is categorical over the choice labels."""
    import optuna.distributions as d

    if axis.continuous:
        if axis.integer:
            return d.IntDistribution(int(axis.low), int(axis.high), log=axis.log)  # type: ignore[arg-type]
        return d.FloatDistribution(axis.low, axis.high, log=axis.log)  # type: ignore[arg-type]
    if axis.step is not None and len(axis.choices) > 1:
        values = [_num(c.label) for c in axis.choices]
        if all(v is not None for v in values):
            lo, hi, step = min(values), max(values), abs(axis.step)  # type: ignore[type-var]
            if all(float(v).is_integer() for v in values) and float(step).is_integer():  # type: ignore[arg-type]
                return d.IntDistribution(int(lo), int(hi), step=int(step))
            return d.FloatDistribution(float(lo), float(hi), step=float(step))
    return d.CategoricalDistribution([c.label for c in axis.choices])


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _constraints(trial: Any) -> list[float]:
    return list(trial.user_attrs["constraints"])


class Search:
    """The ask side (`next_point`) and the tell side (`tell`) of one sweep's study."""

    def __init__(self, spec: Mapping[str, Any], objectives: Sequence[Objective], sweep_dir: Path,
                 rerun_failed: bool = False, budget: Any = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        opts = dict(spec.get("optuna") or {})
        self.n_trials = int(opts.get("n_trials", 0))
        if self.n_trials < 1:
            raise SweepSpecError(f"sweep.optuna.n_trials must be >= 1, got {opts.get('n_trials')!r}")
        if len(objectives) < 1:
            raise SweepSpecError("an Optuna sweep needs at least one objective")
        self.objectives = list(objectives)
        self.sweep_dir = sweep_dir
        self.axes = axes(spec)
        if not self.axes:
            raise SweepSpecError("an Optuna sweep needs a search space: sweep.params is empty")
        self.base = bundle(spec.get("base") or {}, "sweep.base")
        self.distributions = {a.name: distribution(a) for a in self.axes}
        storage = f"sqlite:///{(sweep_dir / STORAGE).resolve()}"
        self.study = optuna.create_study(study_name=str(spec["name"]), storage=storage, load_if_exists=True,
                                         directions=["minimize" if o.direction == "min" else "maximize"
                                                     for o in self.objectives])
        seed = opts.get("seed")
        # A resumed study must not replay the sampler's first draws: offset the seed by the trials it has.
        offset = len(self.study.get_trials(deepcopy=False))
        # sweep.budget reaches the sampler as constraints of measured points: each trial's user attr
        # "constraints" (value - limit per budget, <= 0 feasible) is set before it is told.
        self.budget = budget
        self.study.sampler = optuna.samplers.NSGAIISampler(
            population_size=int(opts.get("population_size", 8)),
            seed=None if seed is None else int(seed) + offset,
            constraints_func=_constraints if budget is not None else None)
        self.active: dict[str, Any] = {}
        self._settle_stale(rerun_failed)

    # ---------------------------------------------------------------------------------------------- state
    def _superseded(self) -> set[int]:
        return set(self.study.user_attrs.get(SUPERSEDED, []))

    def _supersede(self, trial: Any) -> None:
        self.study.set_user_attr(SUPERSEDED, sorted(self._superseded() | {trial.number}))
        self.study.enqueue_trial(dict(trial.params), skip_if_exists=False)

    def _settle_stale(self, rerun_failed: bool) -> None:
        """Trials left RUNNING by a stopped sweep are told from their results.json, or failed and asked again;
        with rerun_failed, failed trials are asked again too."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get("point_id") or self.point_id(t.number)
            set_aside_unreadable(point_dir(self.sweep_dir, pid) / RESULTS)  # then asked again, as interrupted
            results = read_results(point_dir(self.sweep_dir, pid) / RESULTS)
            values = self._values(results)
            if values is not None:
                self.study.tell(t.number, values)
            else:
                self.study.tell(t.number, state=TrialState.FAIL)
                if results is None:
                    log.info("optuna: trial %d was interrupted; asking its parameters again", t.number)
                    self._supersede(t)
        if rerun_failed:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if t.number not in self._superseded():
                    log.info("optuna: rerun_failed: asking failed trial %d's parameters again", t.number)
                    self._supersede(t)

    def finished(self) -> int:
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        skip = self._superseded()
        return sum(t.number not in skip for t in done)

    def point_id(self, number: int) -> str:
        return f"t{number:04d}"

    # ------------------------------------------------------------------------------------------ ask/tell
    def next_point(self) -> Point | None:
        if self.finished() + len(self.active) >= self.n_trials:
            return None
        trial = self.study.ask(self.distributions)
        pairs: list[tuple[str, str]] = list(self.base)
        labels: dict[str, str] = {}
        for axis in self.axes:
            value = trial.params[axis.name]
            choice = next((c for c in axis.choices if c.label == value), None) if axis.choices else None
            if choice is None:  # numeric: Optuna's value, written as Hydra reads it
                text = str(value) if isinstance(value, int) else repr(float(value))
                choice_pairs: tuple[tuple[str, str], ...] = ((axis.name, text),)
                labels[axis.name] = text
            else:
                choice_pairs = choice.overrides
                labels[axis.name] = choice.label
            pairs += choice_pairs
        overrides = override_strings(pairs)
        pid = self.point_id(trial.number)
        trial.set_user_attr("point_id", pid)
        trial.set_user_attr("overrides", list(overrides))
        self.active[pid] = trial
        log.info("optuna: trial %d asked: %s", trial.number, " ".join(f"{k}={v}" for k, v in labels.items()))
        return Point(pid, trial.number, overrides, labels)

    def _values(self, results: Mapping[str, Any] | None) -> list[float] | None:
        if not results or results.get("status") != "ok":
            return None
        values = [number(dict(results), o.key) for o in self.objectives]
        return None if any(v is None or not math.isfinite(v) for v in values) else values  # type: ignore[misc]

    def tell(self, point: Point, results: Mapping[str, Any] | None) -> None:
        from optuna.trial import TrialState

        trial = self.active.pop(point.id)
        if self.budget is not None:  # a failed trial violates every limit: it has no measured value
            trial.set_user_attr("constraints", self.budget.constraints(results))
        values = self._values(results)
        if values is None:
            if results is not None and results.get("status") == "ok":
                missing = [str(o) for o in self.objectives if number(dict(results), o.key) is None]
                log.warning("optuna: trial %d ran but has no finite value for %s; told as failed", trial.number,
                            ", ".join(missing))
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, values)

