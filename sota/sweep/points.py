"""Sweep specs (`conf/sweep/*.yaml`) expanded into points: the run.py overrides of each configuration.

A spec holds `name`, `method` (grid | optuna), `base` (overrides every point gets), `params` (the axes) and
`points` (hand-picked extra points). Overrides are written as mappings `{key: value}`; a key may carry Hydra's
`+`, `++` or `~` prefix. Each axis under `params` is one of

    llm: [tiny_s, tiny_m]                  a list: each value becomes `llm=<value>`
    llm: tiny_s,tiny_m                     Hydra's sweep syntax: a,b | choice(a,b) | range(4,17,4) |
    lora.rank: range(4,17,4)                 interval(1e-4,1e-2) | tag(log,interval(...)) (optuna only)
    prune:                                 a list element that is a mapping is a bundle: its overrides
      - none                                 travel together and the axis name is only a label
      - {prune: width, prune.ratio: 0.5}

A grid is the cross product of the axes in the order written, then `points`; identical points are run once.
A point's id is `<index>-<hash of its overrides>`, stable for a given spec, so a resumed sweep finds its points.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep

log = logging.getLogger(__name__)

METHODS = ("grid", "optuna")


class SweepSpecError(ValueError):
    """A sweep spec that cannot be expanded; the message names the key at fault and what is valid."""


@dataclass(frozen=True)
class Choice:
    """One value of an axis: a label (what tables show) and the overrides it stands for."""
    label: str
    overrides: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Axis:
    """A discrete axis (`choices`) or, for Optuna only, a continuous one (`low`..`high`, maybe log-scaled)."""
    name: str
    choices: tuple[Choice, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    step: float | None = None     # a range(...) of numbers keeps its step for Optuna

    @property
    def continuous(self) -> bool:
        return not self.choices

    def describe(self) -> Any:
        if self.continuous:
            return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}
        return [dict(c.overrides) for c in self.choices]


@dataclass(frozen=True)
class Point:
    id: str
    index: int
    overrides: tuple[str, ...]              # base + this point's, run.py syntax, one key each
    params: dict[str, str] = field(default_factory=dict, compare=False)   # axis -> label, for tables

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "overrides": list(self.overrides), "params": self.params}


def describe(params: Mapping[str, str]) -> str:
    """`llm=tiny_m prune=width,prune.ratio=0.5`: a bundle's label already names its keys."""
    return " ".join(v if "=" in v else f"{k}={v}" for k, v in params.items())


# ------------------------------------------------------------------------------------------------ values

def format_value(value: Any) -> str:
    """A Python value as Hydra override text (`[llm,encoder]`, `null`, `1e-05`; special characters escaped)."""
    if isinstance(value, bool):  # Hydra reads true/false; Python's True would also parse, but be canonical
        return "true" if value else "false"
    return Override._get_value_element_as_str(value)


def _key(raw: Any) -> str:
    key = str(raw).strip()
    if not key or key.lstrip("+~") == "":
        raise SweepSpecError(f"override key {raw!r} is empty")
    return key


def _bare(key: str) -> str:
    return key.lstrip("+~")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    # Nested mappings are dotted keys: `+sweep.base.llm.path=X` on the command line arrives as
    # {llm: {path: X}} and means `llm.path=X` (a mapping *value* can still be written as a string).
    for k, v in mapping.items():
        key = f"{prefix}{_key(k)}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def bundle(mapping: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """{key: value} -> ((key, text), ...); `~key: null` deletes the key; {a: {b: v}} is `a.b=v`."""
    if not isinstance(mapping, Mapping):
        raise SweepSpecError(f"{where} must be a mapping of override keys to values, got {mapping!r}")
    return tuple((k, format_value(v)) for k, v in _flatten(mapping))


def override_strings(pairs: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Later pairs win over earlier ones with the same key (a point's axis over the base), in first-seen order."""
    merged: dict[str, tuple[str, str]] = {}
    for key, text in pairs:
        merged.pop(_bare(key), None)
        merged[_bare(key)] = (key, text)
    return tuple(key if key.startswith("~") and text == "null" else f"{key}={text}" for key, text in merged.values())


_PARSER: OverridesParser | None = None


def _parse(name: str, text: str, where: str) -> Override:
    global _PARSER
    _PARSER = _PARSER or OverridesParser.create()
    try:
        return _PARSER.parse_override(f"{name}={text}")
    except Exception as err:
        raise SweepSpecError(f"{where}: cannot parse {text!r} as Hydra sweep syntax ({err})") from None


def parse_axis(name: str, raw: Any, allow_continuous: bool = False) -> Axis:
    where = f"sweep.params.{name}"
    name = _key(name)
    if isinstance(raw, Mapping):
        raise SweepSpecError(f"{where}: an axis is a list of values, a bundle list or a sweep string "
                             f"(a,b | range(..) | choice(..) | interval(..)), got the mapping {dict(raw)!r}")
    if isinstance(raw, (list, tuple)):
        choices = [Choice(_label(bundle(v, f"{where}[{i}]")), bundle(v, f"{where}[{i}]")) if isinstance(v, Mapping)
                   else Choice(format_value(v), ((name, format_value(v)),)) for i, v in enumerate(raw)]
        return _discrete(name, choices, where, raw)
    text = format_value(raw) if not isinstance(raw, str) else raw
    override = _parse(name, text, where)
    if not override.is_sweep_override():
        return Axis(name, (Choice(text, ((name, text),)),))
    value = override.value()
    if isinstance(value, IntervalSweep):
        if not allow_continuous:
            raise SweepSpecError(f"{where}={raw}: an interval is continuous and a grid needs discrete values; "
                                 "use range(start,stop,step) or a list, or method: optuna")
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise SweepSpecError(f"{where}={raw}: an interval needs low < high, got {low}..{high}")
        return Axis(name, low=float(low), high=float(high), log="log" in value.tags,
                    integer=isinstance(low, int) and isinstance(high, int))
    values = list(override.sweep_string_iterator())
    axis = _discrete(name, [Choice(v, ((name, v),)) for v in values], where, raw)
    if isinstance(value, RangeSweep) and value.step:
        return Axis(name, axis.choices, step=float(value.step))
    return axis


def _label(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs) or "(defaults)"


def _discrete(name: str, choices: list[Choice], where: str, raw: Any) -> Axis:
    if not choices:
        raise SweepSpecError(f"{where}={raw!r} yields no values, so the sweep would have zero points "
                             "(e.g. range(16,4) is empty: Hydra's range is range(start, stop, step), stop excluded)")
    labels = [c.label for c in choices]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise SweepSpecError(f"{where}: repeated value(s) {', '.join(dup)}")
    return Axis(name, tuple(choices))


# -------------------------------------------------------------------------------------------------- spec

def check_spec(spec: Mapping[str, Any]) -> None:
    if not spec.get("name"):
        raise SweepSpecError("sweep.name is missing: every sweep names itself (it names the sweep dir and W&B group)")
    method = spec.get("method", "grid")
    if method not in METHODS:
        raise SweepSpecError(f"sweep.method must be one of {', '.join(METHODS)}; got {method!r}")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise SweepSpecError(f"sweep.params must map override keys to values, got {params!r}")
    points = spec.get("points") or []
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, Mapping) for p in points):
        raise SweepSpecError(f"sweep.points must be a list of {{key: value}} mappings, got {points!r}")


def axes(spec: Mapping[str, Any]) -> list[Axis]:
    check_spec(spec)
    continuous = spec.get("method", "grid") == "optuna"
    return [parse_axis(str(k), v, allow_continuous=continuous) for k, v in (spec.get("params") or {}).items()]


def point_id(index: int, overrides: Sequence[str]) -> str:
    digest = hashlib.sha1(json.dumps(list(overrides)).encode()).hexdigest()[:6]
    return f"{index:03d}-{digest}"


def expand(spec: Mapping[str, Any]) -> list[Point]:
    """The grid points of `spec` (cross product of its axes, then its hand-picked points), duplicates dropped."""
    axs = axes(spec)
    base = bundle(spec.get("base") or {}, "sweep.base")
    combos: list[tuple[dict[str, str], tuple[tuple[str, str], ...]]] = []
    if axs:
        for picks in itertools.product(*(a.choices for a in axs)):
            combos.append(({a.name: c.label for a, c in zip(axs, picks)},
                           tuple(pair for c in picks for pair in c.overrides)))
    for i, extra in enumerate(spec.get("points") or []):
        pairs = bundle(extra, f"sweep.points[{i}]")
        combos.append(({"point": _label(pairs)}, pairs))
    if not combos:
        raise SweepSpecError(f"sweep {spec.get('name')!r} has zero points: sweep.params and sweep.points are both "
                             "empty")
    seen: set[tuple[str, ...]] = set()
    points: list[Point] = []
    for params, pairs in combos:
        overrides = override_strings(base + pairs)
        if overrides in seen:
            log.info("sweep: skipping a repeated point %s", " ".join(overrides))
            continue
        seen.add(overrides)
        points.append(Point(point_id(len(points), overrides), len(points), overrides, params))
    return points


def probes(spec: Mapping[str, Any]) -> list[Point]:
    """Few points that together use every value of every axis (each axis' values with the other axes at their
    first value) and every hand-picked point: enough to check each override once against run.py's config
    without composing a whole grid or every Optuna trial. Continuous axes are probed at both ends."""
    axs = axes(spec)
    base = bundle(spec.get("base") or {}, "sweep.base")

    def values(a: Axis) -> list[tuple[tuple[str, str], ...]]:
        if a.continuous:
            ends = (int(a.low), int(a.high)) if a.integer else (a.low, a.high)  # type: ignore[arg-type]
            return [((a.name, format_value(v)),) for v in ends]
        return [c.overrides for c in a.choices]

    firsts = [values(a)[0] for a in axs]
    combos = {override_strings(base + tuple(x for f in firsts for x in f))}
    for i, a in enumerate(axs):
        for v in values(a)[1:]:
            combos.add(override_strings(base + tuple(x for j, f in enumerate(firsts) for x in (v if j == i else f))))
    for k, extra in enumerate(spec.get("points") or []):
        combos.add(override_strings(base + bundle(extra, f"sweep.points[{k}]")))
    return [Point(point_id(i, o), i, o) for i, o in enumerate(sorted(combos))]


def identity(spec: Mapping[str, Any], objectives: Sequence[str] = ()) -> dict[str, Any]:
    """What makes a sweep this sweep: the points it can produce (and, for Optuna, its objectives and sampler).
    Workers, launcher, W&B, report axes and Optuna's trial budget are not part of it, so they can change on
    resume."""
    check_spec(spec)
    ident: dict[str, Any] = {
        "method": spec.get("method", "grid"),
        "base": list(override_strings(bundle(spec.get("base") or {}, "sweep.base"))),
        "params": {a.name: a.describe() for a in axes(spec)},
        "points": [list(override_strings(bundle(p, "sweep.points"))) for p in spec.get("points") or []],
    }
    if ident["method"] == "optuna":
        opt = dict(spec.get("optuna") or {})
        ident["optuna"] = {k: opt.get(k) for k in ("sampler", "seed", "population_size")}
        ident["objectives"] = [str(o) for o in objectives]
    return ident


def spec_hash(ident: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
