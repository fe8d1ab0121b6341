"""Whether Triton kernels can run here: on CUDA where Triton imports, or on a CPU under Triton's interpreter."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@functools.cache
def available() -> bool:
    """Triton imports (CUDA builds of torch ship it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    """Triton's CPU interpreter is on (TRITON_INTERPRET=1, read when Triton is first imported): kernels then run on
    CPU tensors, which is how the tests check them without a GPU."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def autotuned() -> bool:
    """Whether a kernel tries each candidate configuration on its first use of a shape (a few seconds each). Not
    under the interpreter, and not with SOTA_TRITON_AUTOTUNE=0: one small configuration then, which checks values,
    not speed (the GPU test tier runs so)."""
    return not interpreted() and os.environ.get("SOTA_TRITON_AUTOTUNE", "1") != "0"


def tuning_options() -> dict[str, bool]:
    """`triton.autotune`'s keyword arguments: autotuning results kept on disk where this Triton can (3.4 on,
    `cache_results`), in Triton's cache (TRITON_CACHE_DIR, else ~/.triton/cache). A later process then takes the
    configuration an earlier one timed fastest for the same kernel source, shape, candidates and GPU architecture,
    instead of compiling and timing every candidate again, which takes minutes at the 3B shape; each sweep point and
    each measurement from export is a fresh process. GPUs of one architecture (an H100 and an H200) share entries:
    on a cluster whose nodes differ in GPU but share a home directory, point TRITON_CACHE_DIR at node-local disk."""
    import inspect

    import triton

    return {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


def dependent_launch(device: torch.device) -> bool:
    """Whether Triton kernels on `device` launch as programmatic dependents (CUDA compute capability 9.0 on:
    Hopper): a kernel's programs may start while the kernel before it in the stream finishes, and issue their
    loads of what no earlier kernel writes (weights) before they wait on it. Not under the interpreter, and not
    with SOTA_TRITON_PDL=0 (each kernel then starts once the one before has finished)."""
    if interpreted() or device.type != "cuda" or os.environ.get("SOTA_TRITON_PDL", "1") == "0":
        return False
    return _hopper_on(device.index)


@functools.cache
def _hopper_on(index: int | None) -> bool:
    import torch

    # ROCm builds name their devices "cuda" too, with capabilities of their own numbering
    return torch.version.hip is None and torch.cuda.get_device_capability(index)[0] >= 9
