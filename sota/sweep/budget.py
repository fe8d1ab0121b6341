"""Sweep budgets (`sweep.budget`): limits on peak memory, weight bytes and time per token. Before a grid
point runs, the memory planner (sota.plan) predicts its peak memory and weight bytes; a point over a limit is
recorded as skipped with the predicted figure, never launched. Time per token cannot be predicted: `tpot_ms`
constrains measured points only (Optuna's constraints_func, after each trial)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sota.sweep.frontier import number
from sota.sweep.points import SweepSpecError

log = logging.getLogger(__name__)

# budget key -> (results.json key it limits, unit shown, predictable by the planner)
KEYS: dict[str, tuple[str, str, bool]] = {
    "peak_memory_mb": ("efficiency.peak_memory_mb", "MB", True),
    "weight_bytes": ("model.weight_bytes", "bytes", True),
    "tpot_ms": ("efficiency.tpot_ms", "ms", False),
}


@dataclass(frozen=True)
class Budget:
    limits: dict[str, float]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Budget | None:
        raw = spec.get("budget")
        if not raw:
            return None
        if not isinstance(raw, Mapping):
            raise SweepSpecError(f"sweep.budget must map {', '.join(KEYS)} to limits, got {raw!r}")
        problems = [f"sweep.budget.{k}: unknown budget; valid: {', '.join(KEYS)}" for k in raw if k not in KEYS]
        problems += [f"sweep.budget.{k} must be a number > 0, got {v!r}" for k, v in raw.items() if k in KEYS
                     and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0)]
        if problems:
            raise SweepSpecError("invalid sweep budget:\n  - " + "\n  - ".join(problems))
        limits = {k: float(v) for k, v in raw.items() if v is not None}
        return cls(limits) if limits else None

    @property
    def predictable(self) -> dict[str, float]:
        return {k: v for k, v in self.limits.items() if KEYS[k][2]}

    def predict(self, overrides: Sequence[str]) -> dict[str, float]:
        """The planner's figures for a point's run.py overrides."""
        from sota.compose import compose
        from sota.plan import plan

        p = plan(compose(list(overrides)))
        return {"peak_memory_mb": p.peak_memory_mb, "weight_bytes": float(p.weight_bytes)}

    def over(self, predicted: Mapping[str, float]) -> str | None:
        """Why a prediction is over budget, or None."""
        for key, limit in self.predictable.items():
            value = predicted.get(key)
            if value is not None and value > limit:
                unit = KEYS[key][1]
                return f"skipped: over budget (predicted {value:.1f} {unit} > budget.{key} {limit:g} {unit})"
        return None

    def constraints(self, results: Mapping[str, Any] | None) -> list[float]:
        """Optuna's constraint values of a measured point: value - limit per budget (<= 0 is feasible); a point
        without the value counts as violating it."""
        out = []
        for key, limit in self.limits.items():
            value = number(dict(results), KEYS[key][0]) if results else None
            out.append(value - limit if value is not None and math.isfinite(value) else math.inf)
        return out


def skipped_results(reason: str, predicted: Mapping[str, float], overrides: Sequence[str]) -> dict[str, Any]:
    """The results.json of a point the planner kept from running."""
    return {"status": "skipped", "error": reason, "overrides": list(overrides), "finished": time.time(),
            "plan": dict(predicted), "model": {"weight_bytes": predicted.get("weight_bytes")},
            "efficiency": {"peak_memory_mb": None}}

