"""What makes up a CUDA peak: the blocks allocated at the moment the allocator held the most, each with the
Python code that allocated it (`python -m sota.tools.bench --memory-trace FILE`).

torch's allocator records every allocation and free with its Python stack while history is on
(`torch.cuda.memory._record_memory_history`); replaying those events finds the peak of allocated bytes and the
blocks alive there. Blocks allocated by the same code are summed, so a model's weights show as a few lines and
a one-off allocation (a library's workspace, a cache) stands out by its stack.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from sota.utils.io import atomic_write_json

MIB = 2 ** 20
MAX_EVENTS = 2_000_000   # the history's ring buffer; a replay of a truncated history would miss frees
OWN = ("sota/", "transformers/", "torch/nn/", "peft/", "torchao/")   # frames worth naming a block by


def start() -> None:
    """Record allocations and frees on CUDA from now on, with their Python stacks."""
    import torch

    torch.cuda.memory._record_memory_history(max_entries=MAX_EVENTS, stacks="python")


def _where(frames: list[dict[str, Any]], depth: int) -> list[str]:
    """The innermost `depth` frames of a stack in the packages that say what a block is for."""
    out = []
    for f in frames:
        name = f.get("filename", "")
        cut = next((name[name.index(k):] for k in OWN if k in name), None)
        if cut is not None and name.endswith(".py"):
            out.append(f"{cut}:{f.get('line')} {f.get('name')}")
        if len(out) == depth:
            break
    return out


def live_at_peak(events: Iterable[dict[str, Any]], depth: int = 4) -> dict[str, Any]:
    """Replay allocator events (`alloc` / `free_completed`, with `addr`, `size`, `frames`): the peak of allocated
    bytes, and the blocks alive at it grouped by where they were allocated, largest first."""
    live: dict[int, tuple[int, tuple[str, ...]]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, tuple[str, ...]]] = {}
    count = 0
    for e in events:
        count += 1
        action = e.get("action")
        if action == "alloc":
            live[e["addr"]] = (int(e["size"]), tuple(_where(e.get("frames") or [], depth)))
            total += int(e["size"])
            if total > peak:
                peak, at_peak = total, dict(live)
        elif action == "free_completed" and e["addr"] in live:
            total -= live.pop(e["addr"])[0]
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for size, where in at_peak.values():
        groups[where].append(size)
    rows = sorted(({"mib": round(sum(s) / MIB, 3), "blocks": len(s), "largest_mib": round(max(s) / MIB, 3),
                    "where": list(where) or ["(no Python frame in sota, transformers, torch.nn, peft or torchao)"]}
                   for where, s in groups.items()), key=lambda r: -r["mib"])
    return {"peak_allocated_mib": round(peak / MIB, 3), "events": count, "live_at_peak": rows}


def finish(path: Path, device: str) -> dict[str, Any]:
    """Stop recording; write what was alive at the peak to `path` (JSON, atomically) and return it."""
    import torch

    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    index = torch.device(device).index or 0
    events = snapshot["device_traces"][index] if len(snapshot["device_traces"]) > index else []
    report = live_at_peak(events)
    report["device"] = device
    if report["events"] >= MAX_EVENTS:
        report["note"] = (f"the history kept its last {MAX_EVENTS} events only: blocks allocated before them are "
                          "missing and the peak may be understated")
    atomic_write_json(path, report)
    return report


def table(report: dict[str, Any], rows: int = 12) -> str:
    """The largest groups of blocks alive at the peak, as markdown."""
    lines = [f"peak allocated {report['peak_allocated_mib']:.1f} MiB; alive there, by where allocated:", "",
             "| MiB | blocks | largest MiB | allocated at (innermost first) |", "|---|---|---|---|"]
    for r in report["live_at_peak"][:rows]:
        lines.append(f"| {r['mib']:.1f} | {r['blocks']} | {r['largest_mib']:.1f} | {' <- '.join(r['where'])} |")
    return "\n".join(lines)
