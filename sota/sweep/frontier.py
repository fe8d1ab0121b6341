"""Pareto frontiers over result rows: pure functions, rows in, rows out.

A row is a `results.json` dict (see README) with a few sweep fields added (`id`, `status`, `overrides`, ...).
Values are addressed by **keys** that walk the row with dots, while metric names keep their slashes:

    metrics.asr/wer              row["metrics"]["asr/wer"]
    efficiency.peak_memory_mb    row["efficiency"]["peak_memory_mb"]
    model.weight_bytes           row["model"]["weight_bytes"]
    config.lora.rank             row["config"]["lora"]["rank"]
    asr/wer                      shorthand: a key with a slash before any dot is a metric (metrics.asr/wer)

At each level the longest literal key wins, so a name that itself contains a dot is still reachable.
An **objective** is a key with a direction, written `KEY:min` or `KEY:max` (`metrics.aac/cider_d:max`).

Only rows with status "ok" and finite numbers for every objective compete; the others are `excluded`.
Row a dominates row b when a is no worse on every objective and strictly better on at least one, so rows that
tie on every objective never dominate each other: all of them are on the frontier.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Row = dict[str, Any]
Direction = Literal["min", "max"]
DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Objective:
    key: str
    direction: Direction = "min"

    def __str__(self) -> str:
        return f"{self.key}:{self.direction}"

    @property
    def label(self) -> str:
        """The key without its section, for axis labels (`asr/wer`, `peak_memory_mb`)."""
        return self.key.split(".", 1)[1] if "." in self.key else self.key


def canonical_key(key: str) -> str:
    """`asr/wer` -> `metrics.asr/wer`; keys that name their section are returned as they are."""
    key = key.strip()
    if not key:
        raise ValueError("an empty key addresses nothing; write e.g. metrics.asr/wer")
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return f"metrics.{key}"
    return key


def parse_objective(spec: str | Objective | dict[str, Any]) -> Objective:
    """`metrics.asr/wer:min`, `{key: ..., direction: max}` or an Objective -> Objective (direction defaults to min)."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, dict):
        key, direction = str(spec.get("key", "")), str(spec.get("direction", "min"))
    else:
        key, sep, direction = str(spec).rpartition(":")
        if not sep:
            key, direction = direction, "min"
    direction = direction.strip().lower()
    if direction not in DIRECTIONS:
        raise ValueError(f"objective {spec!r}: direction must be min or max, got {direction!r} "
                         "(write KEY:min or KEY:max, e.g. metrics.aac/cider_d:max)")
    return Objective(canonical_key(key), direction)  # type: ignore[arg-type]


def lookup(row: Row, key: str) -> Any:
    """The value `key` addresses in `row` (see the module docstring), or None where the path is missing."""
    if key in row:  # flat rows (e.g. read back from frontier.csv) hold the whole key as one name
        return row[key]
    return _walk(row, canonical_key(key).split("."))


def _walk(node: Any, parts: list[str]) -> Any:
    # The longest literal name wins (a name may contain dots); shorter prefixes are tried if it leads nowhere.
    if not isinstance(node, dict):
        return None
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        if name in node:
            if cut == len(parts):
                return node[name]
            found = _walk(node[name], parts[cut:])
            if found is not None:
                return found
    return None


def number(row: Row, key: str) -> float | None:
    """`lookup` as a finite float, or None (missing, null, NaN, infinite, bool or not a number)."""
    value = lookup(row, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def is_ok(row: Row) -> bool:
    return row.get("status") == "ok"


def _vector(row: Row, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    """Objective values oriented so that smaller is better everywhere, or None if any is missing."""
    out = []
    for o in objectives:
        v = number(row, o.key)
        if v is None:
            return None
        out.append(v if o.direction == "min" else -v)
    return tuple(out)


def split_eligible(rows: Iterable[Row], objectives: Sequence[Objective]) -> tuple[list[Row], list[Row]]:
    """(rows that compete, rows excluded: failed, or missing / non-finite values for an objective)."""
    ok, excluded = [], []
    for row in rows:
        (ok if is_ok(row) and _vector(row, objectives) is not None else excluded).append(row)
    return ok, excluded


def dominates(a: Row, b: Row, objectives: Sequence[Objective]) -> bool:
    va, vb = _vector(a, objectives), _vector(b, objectives)
    if va is None or vb is None:
        return False
    return all(x <= y for x, y in zip(va, vb)) and any(x < y for x, y in zip(va, vb))


def pareto_front(rows: Iterable[Row], objectives: Sequence[Objective | str]) -> list[Row]:
    """The non-dominated eligible rows, sorted by the objectives in order (best first on the first one)."""
    objs = [parse_objective(o) for o in objectives]
    if not objs:
        raise ValueError("a frontier needs at least one objective")
    eligible, _ = split_eligible(rows, objs)
    vectors = [_vector(r, objs) for r in eligible]
    front = [r for r, v in zip(eligible, vectors)
             if not any(all(x <= y for x, y in zip(w, v)) and any(x < y for x, y in zip(w, v)) for w in vectors)]
    return sorted(front, key=lambda r: _vector(r, objs))  # type: ignore[arg-type,return-value]


def mark_frontier(rows: Iterable[Row], objectives: Sequence[Objective | str],
                  field: str = "on_frontier") -> list[Row]:
    """Copies of `rows` with `field` set: True on the frontier, False if dominated, None if excluded."""
    rows = list(rows)
    objs = [parse_objective(o) for o in objectives]
    front = {id(r) for r in pareto_front(rows, objs)}
    eligible = {id(r) for r in split_eligible(rows, objs)[0]}
    return [{**r, field: (id(r) in front) if id(r) in eligible else None} for r in rows]


def has_values(rows: Iterable[Row], key: str) -> bool:
    """Whether any ok row holds a finite number at `key`."""
    return any(is_ok(r) and number(r, key) is not None for r in rows)


def frontier_pairs(rows: Sequence[Row], primary: Sequence[Objective | str], accuracy: Sequence[Objective | str],
                   cost: Sequence[Objective | str]) -> list[tuple[Objective, Objective]]:
    """(accuracy, cost) pairs worth a frontier: the primary pair first (always, so a missing key is reported by
    the caller), then every other accuracy x cost combination whose keys both hold values in some ok row."""
    prim = [parse_objective(o) for o in primary]
    pairs: list[tuple[Objective, Objective]] = []
    if len(prim) >= 2:
        pairs.append((prim[0], prim[1]))
    for a in (parse_objective(o) for o in accuracy):
        for c in (parse_objective(o) for o in cost):
            if (a, c) not in pairs and has_values(rows, a.key) and has_values(rows, c.key):
                pairs.append((a, c))
    return pairs


def best_within_budgets(rows: Iterable[Row], accuracy: Objective | str, cost: Objective | str,
                        budgets: Iterable[float]) -> list[tuple[float, Row | None]]:
    """For each budget, the eligible row with the best accuracy whose cost is within it (None if none fits).
    Ties on accuracy go to the cheaper row, so the answer is always a frontier point."""
    acc, cst = parse_objective(accuracy), parse_objective(cost)
    front = pareto_front(rows, [acc, cst])
    out: list[tuple[float, Row | None]] = []
    for budget in budgets:
        fits = [r for r in front if (number(r, cst.key) <= budget if cst.direction == "min"
                                     else number(r, cst.key) >= budget)]  # type: ignore[operator]
        sign = 1.0 if acc.direction == "min" else -1.0
        cs = 1.0 if cst.direction == "min" else -1.0
        best = min(fits, key=lambda r: (sign * number(r, acc.key), cs * number(r, cst.key)), default=None)  # type: ignore[operator]
        out.append((float(budget), best))
    return out
