"""`python sweep.py plan [key=value ...]` (one configuration, run.py's overrides) or `python sweep.py plan
sweep=<name> [key=value ...]` (every point of a grid sweep): predicted peak memory with its breakdown by part
and storage, or `--json`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sota.plan.estimate import MB, Plan, plan


def table(p: Plan) -> str:
    lines = [f"{'part':<12}{'storage':<28}{'params':>14}{'MiB':>12}"]
    for r in sorted(p.weights, key=lambda r: (r.part, -r.bytes)):
        lines.append(f"{r.part:<12}{r.kind:<28}{r.params:>14,}{r.bytes / MB:>12.1f}")
    lines.append(f"{'weights':<54}{p.weight_bytes / MB:>12.1f}")
    for s in p.stages:
        lines.append(f"{'stage':<12}{s.name:<28}{'':>14}{s.bytes / MB:>12.1f}   {s.detail}")
    lines.append(f"{'activations (widest stage)':<54}{p.activation_bytes / MB:>12.1f}")
    lines.append(f"{'kv cache':<54}{p.cache_bytes / MB:>12.1f}")
    if p.workspace:
        lines.append(f"{'cuBLAS workspace':<54}{p.workspace / MB:>12.1f}")
    if p.transient:
        lines.append(f"{'official: float model before quantization':<54}{p.transient / MB:>12.1f}")
    lines.append(f"{'predicted peak (' + p.mode + ', ' + p.device + ')':<54}{p.peak_memory_mb:>12.1f}")
    return "\n".join(lines + [f"note: {n}" for n in p.notes])


def _points(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """(label, run.py overrides) of every point of the sweep named by `sweep=...` in `overrides`."""
    from omegaconf import OmegaConf

    from sota.compose import compose
    from sota.sweep import points

    cfg = compose(overrides, config_name="sweep_config")
    spec = OmegaConf.to_container(cfg.sweep, resolve=True)
    if spec.get("method", "grid") != "grid":
        return [(p.id, list(p.overrides)) for p in points.probes(spec)]
    return [(p.id, list(p.overrides)) for p in points.expand(spec)]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sweep.py plan", description=__doc__)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--device", default=None, help="cpu | cuda: where measurement runs (default: as the "
                                                       "config's trainer and measure groups say)")
    args = parser.parse_args(list(argv))
    from sota.compose import compose

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"expected key=value overrides, got {bad}")
    sweep = [o for o in args.overrides if _key(o) == "sweep"]
    try:
        if sweep:
            # `sweep.*` keys, added (+) or removed (~) ones too, shape the sweep; the rest go to every point
            spec = [o for o in args.overrides if _key(o).startswith("sweep.")]
            rest = [o for o in args.overrides if o not in spec and o not in sweep]
            targets = [(pid, [*ov, *rest]) for pid, ov in _points([*sweep, *spec])]
        else:
            targets = [("config", list(args.overrides))]
        plans = [(pid, ov, plan(compose(ov), args.device)) for pid, ov in targets]
    except Exception as err:  # a bad key or value: Hydra's message names it
        print(f"sweep.py plan: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = [{"id": pid, "overrides": ov, **p.to_dict()} for pid, ov, p in plans]
        print(json.dumps(out[0] if not sweep else out, indent=2))
        return 0
    for pid, ov, p in plans:
        if sweep:
            print(f"== {pid}: {' '.join(ov) or '(defaults)'}")
        print(table(p))
    if sweep:
        print("\n".join(f"{pid}  {p.peak_memory_mb:10.1f} MiB peak, weights {p.weight_bytes / MB:8.1f} MiB"
                        for pid, _, p in plans))
    return 0
