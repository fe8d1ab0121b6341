"""The cores this process may run on."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The cores this process may run on (a container's or cluster job's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
