"""One GPU shared by several processes (a local sweep's workers): each caps its caching allocator at a fraction
of the device, so the blocks one point keeps cached cannot starve the others. Under the cap, PyTorch's
allocator frees its cached blocks and retries before it raises OutOfMemoryError. The sweep sets the fraction
(sweep_config.yaml, gpu_memory_per_point); run.py applies it."""

from __future__ import annotations

import logging
import math
import os

ENV = "SOTA_CUDA_MEMORY_FRACTION"
# CUDA contexts (about 0.5 GiB each) live outside the allocator's cap: the shares leave room for them.
SHARED = 0.95

log = logging.getLogger(__name__)


def parse(value: object, key: str) -> float | None:
    """A fraction in (0, 1], or None for no cap; `key` names the setting in the error."""
    if value in (None, "", "none", "null"):
        return None
    try:
        fraction = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        fraction = -1.0
    if isinstance(value, bool) or not 0 < fraction <= 1:
        raise ValueError(f"{key} must be a fraction of the GPU in (0, 1], or null for no cap; got {value!r}")
    return fraction


def share(setting: object, workers: int, gpus: int | None) -> float | None:
    """`gpu_memory_per_point`: auto gives each of the points that run at once on one GPU an equal share (none
    when a point has its GPU alone); a number is the fraction itself; null sets no cap. `gpus`: how many
    GPUs the points are spread over (None: they all see the same ones)."""
    if setting == "auto":
        per_gpu = -(-workers // gpus) if gpus else workers
        return math.floor(SHARED / per_gpu * 1e4) / 1e4 if per_gpu > 1 else None  # down: shares never sum past SHARED
    return parse(setting, "gpu_memory_per_point")


def apply(*devices: str) -> float | None:
    """Cap this process's allocator on each CUDA device of `devices` (where it trains, where it measures) at the
    fraction the sweep set (ENV); returns it, or None where nothing was capped."""
    fraction = parse(os.environ.get(ENV), ENV)
    cuda = sorted({d for d in devices if d.startswith("cuda")})
    if fraction is None or not cuda:
        return None
    import torch

    for device in cuda:
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))
        log.info("CUDA memory of this process capped at %.4g of %s (%s, set by the sweep's gpu_memory_per_point)",
                 fraction, device, ENV)
    return fraction
