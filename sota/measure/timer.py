"""Timing of code regions, the right way and (on purpose, for the official protocol) the usual wrong way.

Three clocks, one interface:

- ``cuda_events`` (CUDA, ``sync=True``, strict mode): every iteration starts after ``torch.cuda.synchronize``,
  each region is bracketed by a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the device's
  current stream, and the iteration ends with a synchronize before the event pairs are read. A region's time
  is then the GPU timeline between its two events: the kernels it queued, plus any time the GPU sat idle
  waiting for the CPU to launch them. Events are recorded back to back, without a synchronize between
  regions, so CPU/GPU overlap is kept and nested or adjacent regions partition the iteration.
- ``time.time (no sync)`` (CUDA, ``sync=False``, official mode): ``time.time()`` before and after the region
  and no synchronize anywhere. CUDA kernels are asynchronous, so this measures how long the CPU took to
  *queue* the work, not how long the GPU took to do it (unless something in the region happens to block,
  e.g. a device-to-host copy). This reproduces the flaw of the hackathon's evaluation protocol; use it only
  to reproduce that protocol's numbers.
- ``perf_counter`` (CPU): ``time.perf_counter()``; CPU work is synchronous, so the sync flag changes nothing.

Usage::

    timer = Timer("cuda", sync=True)
    for _ in range(n):
        with timer.iteration():
            with timer.region("encoder"):
                ...
    timer.stats("encoder").median    # milliseconds
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

CUDA_EVENTS = "cuda_events"
WALL_NO_SYNC = "time.time (no sync)"
PERF_COUNTER = "perf_counter"


@dataclass(frozen=True)
class Stats:
    """Summary of a region's samples, in milliseconds (None when there are no samples)."""

    median: float | None
    p90: float | None
    mean: float | None
    min: float | None
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> Stats:
    if not samples:
        return Stats(None, None, None, None, 0)
    return Stats(median=percentile(samples, 50), p90=percentile(samples, 90), mean=sum(samples) / len(samples),
                 min=min(samples), n=len(samples))


class Timer:
    """Times named regions on `device`; see the module docstring for what each clock measures."""

    def __init__(self, device: str | torch.device = "cpu", sync: bool = True) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise RuntimeError(f"Timer on {self.device}: CUDA is not available on this machine")
        self.sync = sync
        self.kind = (CUDA_EVENTS if sync else WALL_NO_SYNC) if self.cuda else PERF_COUNTER
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._open: dict[str, Any] = {}
        self._pending: list[tuple[str, Any, Any]] = []

    # -- clocks -----------------------------------------------------------------------------------------
    def _stream(self) -> Any:
        return torch.cuda.current_stream(self.device)

    def _now(self) -> Any:
        if self.kind == CUDA_EVENTS:
            event = torch.cuda.Event(enable_timing=True)
            event.record(self._stream())
            return event
        if self.kind == WALL_NO_SYNC:
            return time.time()
        return time.perf_counter()

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on CPU and in no-sync mode)."""
        if self.kind == CUDA_EVENTS:
            torch.cuda.synchronize(self.device)

    # -- regions ----------------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        if name in self._open:
            raise RuntimeError(f"region {name!r} is already open")
        self._open[name] = self._now()

    def stop(self, name: str) -> None:
        if name not in self._open:
            raise RuntimeError(f"region {name!r} was not started")
        begin, end = self._open.pop(name), self._now()
        if self.kind == CUDA_EVENTS:
            self._pending.append((name, begin, end))  # read after the iteration's synchronize
        else:
            self.samples[name].append((end - begin) * 1000.0)

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def begin(self) -> None:
        """Start of an iteration: with CUDA events, nothing queued earlier may leak into its regions."""
        self.synchronize()

    def end(self) -> None:
        """End of an iteration: with CUDA events, wait for the GPU and read every event pair."""
        if self._open:
            raise RuntimeError(f"regions still open at the end of an iteration: {sorted(self._open)}")
        if self.kind == CUDA_EVENTS:
            self.synchronize()
            for name, begin, end in self._pending:
                self.samples[name].append(float(begin.elapsed_time(end)))
        self._pending.clear()

    @contextmanager
    def iteration(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self._open.clear()
            self.end()

    # -- results ----------------------------------------------------------------------------------------
    def stats(self, name: str) -> Stats:
        return summarize(self.samples.get(name, []))

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: summarize(values).as_dict() for name, values in self.samples.items()}

    def reset(self) -> None:
        self.samples.clear()
        self._open.clear()
        self._pending.clear()
