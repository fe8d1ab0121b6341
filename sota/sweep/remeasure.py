"""Chosen points of a finished sweep evaluated and measured again, one at a time, in another measurement mode:

    python sweep.py remeasure DIR [--points reference,best] [--measure official] [--tolerance 1.10] [key=value ...]

A sweep measures every point in strict mode while other points share the machine. The points a study
reports are measured again here, each alone, e.g. in the seed's official protocol for comparison with its
numbers. Points are chosen by id (or id prefix), or as:
- `reference`: the sweep's first point;
- `best`: the cheapest point (primary cost) whose primary accuracy is within `tolerance` x the reference's;
- `frontier`: every point on the primary frontier.

A point that trained (task=train) is evaluated from its checkpoint (`task=eval ckpt_path=...`, which rebuilds
the model it started from); an evaluation point runs its own overrides again. The sweep's `measure.*` settings
are dropped so the chosen mode's preset applies; `key=value` arguments are added to every run. Runs go to
DIR/remeasure/<mode>/<id>/: a finished one is kept and never run again, a failed one is moved to
DIR/remeasure/<mode>/attempts/ before the next try. DIR/remeasure/<mode>/remeasure.csv puts each point's
sweep figures beside the new ones.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sota.sweep import launch
from sota.sweep.frontier import Objective, Row, is_ok, number, pareto_front
from sota.sweep.points import describe
from sota.sweep.report import write_csv
from sota.sweep.sweepdir import ATTEMPTS, RESULTS, SweepDirError, load_rows, move_to_attempts, point_dir, read_results

log = logging.getLogger(__name__)

SELECTORS = ("reference", "best", "frontier")
COMPARED = ("efficiency.ttft_ms", "efficiency.tpot_ms", "efficiency.peak_memory_mb", "efficiency.e2e_ms")
DROPPED = ("hydra.", "measure")  # the sweep's measurement settings: the chosen mode's preset applies instead


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def reference_row(rows: Sequence[Row]) -> Row:
    """The sweep's first point, which every other is compared with; it must have finished."""
    first = min(rows, key=lambda r: (r.get("index", 10 ** 9), r["id"]))
    if not is_ok(first):
        done = [r["id"] for r in rows if is_ok(r)][:6]
        raise SweepDirError(f"the reference point {first['id']} (the sweep's first) did not finish: "
                            f"{first.get('error')}; name a finished one with --reference ID"
                            + (f" (finished: {', '.join(done)})" if done else ""))
    return first


def select(rows: Sequence[Row], spec: str, objectives: Sequence[Objective], tolerance: float) -> list[Row]:
    """The rows `spec` names (comma-separated ids, id prefixes or selectors), in sweep order, each once."""
    accuracy, cost = objectives[0], objectives[1]
    chosen: dict[str, Row] = {}
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        if item == "reference":
            picked = [reference_row(rows)]
        elif item == "best":
            ref = number(reference_row(rows), accuracy.key)
            if ref is None:
                raise SweepDirError(f"the reference point has no {accuracy.key}: 'best' needs it")
            within = (lambda v: v <= ref * tolerance) if accuracy.direction == "min" else (lambda v: v >= ref / tolerance)
            fits = [r for r in rows if is_ok(r) and number(r, accuracy.key) is not None
                    and number(r, cost.key) is not None and within(number(r, accuracy.key))]
            sign = 1.0 if cost.direction == "min" else -1.0
            picked = [min(fits, key=lambda r: sign * number(r, cost.key))] if fits else []  # type: ignore[operator]
            if not picked:
                raise SweepDirError(f"no finished point has {accuracy.key} within {tolerance}x the reference's")
        elif item == "frontier":
            picked = pareto_front(rows, [accuracy, cost])
        else:
            picked = [r for r in rows if r["id"] == item or r["id"].startswith(item)]
            if len(picked) != 1:
                known = ", ".join(r["id"] for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
                raise SweepDirError(f"--points {item!r} matches {len(picked)} points (ids: {known}); "
                                    f"give an id, a unique id prefix or one of {', '.join(SELECTORS)}")
        for r in picked:
            chosen.setdefault(r["id"], r)
    return sorted(chosen.values(), key=lambda r: (r.get("index", 10 ** 9), r["id"]))


def overrides_for(row: Row, sweep_dir: Path, mode: str, extra: Sequence[str]) -> list[str]:
    """run.py overrides that evaluate and measure `row`'s model again in `mode`."""
    base = [o for o in row.get("overrides") or [] if not _key(o).startswith(DROPPED)]
    if (row.get("config") or {}).get("task") == "train":
        ckpt = point_dir(sweep_dir, row["id"]) / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise SweepDirError(f"point {row['id']} trained but left no checkpoint at {ckpt}")
        base = [o for o in base if _key(o) not in ("task", "init_from", "ckpt_path")]
        base += ["task=eval", f"ckpt_path={ckpt}"]
    return [*base, f"measure={mode}", *extra]


def remeasure(sweep_dir: Path, points: str, mode: str, objectives: Sequence[Objective], tolerance: float = 1.10,
              extra: Sequence[str] = (), run_py: Path = launch.RUN_PY,
              timeout_s: float | None = None) -> dict[str, Any]:
    rows = load_rows(sweep_dir)
    chosen = select(rows, points, objectives, tolerance)
    out_root = sweep_dir / "remeasure" / mode
    table = []
    for row in chosen:
        run_dir = out_root / row["id"]
        done = read_results(run_dir / RESULTS)
        if done is None or done.get("status") != "ok":
            move_to_attempts(run_dir, out_root / ATTEMPTS, row["id"])  # a failed or interrupted attempt: kept
            cmd = [sys.executable, str(run_py), *overrides_for(row, sweep_dir, mode, extra), f"hydra.run.dir={run_dir}"]
            log.info("remeasure %s (%s): %s", row["id"], mode, " ".join(cmd[2:]))
            end = launch.run_command(cmd, str(launch.ROOT), launch.child_env(None), str(run_dir), timeout_s)
            done = read_results(run_dir / RESULTS)
            if done is None:
                done = {"status": "failed", "error": end.describe()}
        table.append(_line(row, done, mode, objectives))
    csv_path = out_root / "remeasure.csv"
    write_csv(csv_path, table)
    return {"rows": table, "csv": csv_path}


def _line(row: Row, new: dict[str, Any], mode: str, objectives: Sequence[Objective]) -> dict[str, Any]:
    new_row = {**new, "id": row["id"]}
    line: dict[str, Any] = {"id": row["id"], "point": describe(row.get("params") or {}),
                            "status": new.get("status"), "error": (new.get("error") or "")[:200]}
    for key in dict.fromkeys([objectives[0].key, *COMPARED]):
        line[f"sweep {key}"] = number(row, key)
        line[f"{mode} {key}"] = number(new_row, key)
    return line

