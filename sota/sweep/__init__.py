"""Sweeps: expand a spec into points (`points`), run each point in its own process (`launch`, or Optuna's
ask/tell in `optuna_search`), keep the sweep dir (`sweepdir`), and report the accuracy-versus-cost Pareto
frontier (`frontier` is pure, `report` writes CSV/PNG/HTML, `wandb_log` mirrors it to W&B). `driver` ties
them together for `sweep.py`."""

from sota.sweep.frontier import Objective, best_within_budgets, lookup, mark_frontier, pareto_front, parse_objective
from sota.sweep.report import ReportSettings, table
from sota.sweep.sweepdir import load_rows

__all__ = [
           "Objective",
           "ReportSettings",
           "best_within_budgets",
           "load_rows",
           "lookup",
           "mark_frontier",
           "pareto_front",
           "parse_objective",
           "table",
]
