"""Hypervolume of a sweep's frontier: the volume of objective space its points dominate, up to a reference
point. One number for "is this sweep better than that one" (larger is better); it grows as points that push
the frontier out finish, and never shrinks.

The reference point is set per objective in the sweep config (`report.hypervolume_reference`, KEY: value,
keys as in `objectives`). An objective left out takes the worst value any finished point reached: the number
is then comparable within that sweep only (or, in `compare`, between the sweeps compared together), and the
record names every objective whose reference came from the data. Points no better than the reference on some
objective add nothing. The volume is in the objectives' own units multiplied (e.g. WER x MB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sota.sweep.frontier import Objective, Row, canonical_key, is_ok, number


def _losses(rows: Sequence[Row], objectives: Sequence[Objective]) -> np.ndarray:
    """Each ok row's objective values as losses (maximised objectives negated); rows missing one are left out."""
    out = []
    for r in filter(is_ok, rows):
        values = [number(r, o.key) for o in objectives]
        if all(v is not None for v in values):
            out.append([v if o.direction == "min" else -v for o, v in zip(objectives, values)])
    return np.array(out, dtype=float).reshape(-1, len(objectives))


def reference_point(rows: Sequence[Row], objectives: Sequence[Objective],
                    given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"values": [per objective, in its own direction], "from_data": [objective keys set from the rows]}."""
    given = {canonical_key(str(k)): v for k, v in (given or {}).items()}
    unknown = sorted(set(given) - {o.key for o in objectives})
    if unknown:
        raise ValueError(f"report.hypervolume_reference names {unknown}, which are not objectives "
                         f"({', '.join(o.key for o in objectives)})")
    losses = _losses(rows, objectives)
    values, from_data = [], []
    for i, o in enumerate(objectives):
        if given.get(o.key) is not None:
            values.append(float(given[o.key]))
        elif len(losses):
            worst = float(losses[:, i].max())
            values.append(worst if o.direction == "min" else -worst)
            from_data.append(o.key)
        else:
            values.append(None)
            from_data.append(o.key)
    return {"values": values, "from_data": from_data}


def hypervolume(rows: Sequence[Row], objectives: Sequence[Objective], reference: Sequence[float | None]) -> float:
    """The volume the ok rows dominate up to `reference` (0 when none is better than it on every objective)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's exact WFG, what its own MOO reports use

    if any(v is None for v in reference):
        return 0.0
    ref = np.array([v if o.direction == "min" else -v for o, v in zip(objectives, reference)], dtype=float)
    losses = _losses(rows, objectives)
    inside = losses[(losses < ref).all(axis=1)] if len(losses) else losses
    return float(compute_hypervolume(inside, ref)) if len(inside) else 0.0


def summary(rows: Sequence[Row], objectives: Sequence[Objective], given: Mapping[str, Any] | None = None,
            groups: Mapping[str, Sequence[Row]] | None = None) -> dict[str, Any]:
    """The record written beside a report: the reference point, the hypervolume, and its history as the
    points finished (in the sweep's point order); with `groups`, one value and history per group under one
    reference point."""
    ref = reference_point(rows, objectives, given)

    def one(part: Sequence[Row]) -> dict[str, Any]:
        history = [{"points": n, "hypervolume": hypervolume(part[:n], objectives, ref["values"])}
                   for n in range(1, len(part) + 1)]
        return {"hypervolume": history[-1]["hypervolume"] if history else 0.0, "history": history}

    out: dict[str, Any] = {"objectives": [str(o) for o in objectives], "reference": ref["values"],
                           "reference_from_data": ref["from_data"]}
    if groups is None:
        out.update(one(rows))
    else:
        out["groups"] = {name: one(part) for name, part in groups.items()}
    return out
