"""Peak memory as the protocols read it: the allocator's counters on a GPU, NVML's view of the process, peak
RSS on a CPU."""

from __future__ import annotations

import os

import torch

from sota.models.footprint import peak_rss_mb

MB = 2 ** 20
CPU_MEMORY_NOTE = ("peak_memory_mb is the process's peak RSS since it started (it cannot be reset): it includes "
                   "everything the process loaded before measuring")


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak(device: str) -> tuple[float | None, float | None]:
    if device.startswith("cuda"):
        dev = torch.device(device)
        return torch.cuda.max_memory_allocated(dev) / MB, torch.cuda.max_memory_reserved(dev) / MB
    return peak_rss_mb(), None


def nvml_process_memory_mb(device: str) -> tuple[float | None, str | None]:
    """This process's memory on `device` from NVML, or (None, why not). Falls back to the whole device's used
    memory (said in the note) when NVML cannot see this process (e.g. a container's PID namespace)."""
    if not device.startswith("cuda"):
        return None, None
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, "nvml_memory_mb: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as err:  # no driver library, no permission
        return None, f"nvml_memory_mb: NVML unavailable ({err})"
    try:
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        handle = None
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
            except Exception:
                handle = None
        if handle is None:  # CUDA_VISIBLE_DEVICES may renumber; the UUID above avoids that when available
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pid = os.getpid()
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs = getattr(pynvml, getter)(handle)
            except Exception:
                continue
            for p in procs:
                used = getattr(p, "usedGpuMemory", None)
                if p.pid == pid and used is not None:
                    return used / MB, None
        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / MB
        return used, ("nvml_memory_mb: NVML does not list this process (PID namespace or driver limits): it is the "
                      "whole device's used memory, other processes included")
    except Exception as err:
        return None, f"nvml_memory_mb: NVML query failed ({err})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
