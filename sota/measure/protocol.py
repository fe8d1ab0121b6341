"""The measurement protocols (`measure.mode`): what `official` and `strict` do differently, every key they
report, and the validation of the `measure` group (run before any model is built)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sota.errors import ConfigError

MODES = ("strict", "official", "none")

# Every key of the returned block, documented (tests check that `measure` returns exactly these).
KEYS: dict[str, str] = {
    "mode": "strict | official | none",
    "device": "device name (GPU model, or 'cpu: <cpu model>')",
    "backend": "decoding backend measured (generate.backend): eager | static | compiled (sota/models/decoding.py)",
    "timer": "clock used: cuda_events | time.time (no sync) | perf_counter",
    "task": "prompt used for the protocol clip",
    "clip_s": "length of the protocol noise clip, seconds",
    "clip_audio_s": "seconds of that clip the encoder hears (in chunks of encoder.context_s when longer)",
    "audio_tokens": "audio tokens the connector sends to the LLM for the protocol clip",
    "prompt_tokens": "length of the prefilled sequence (prompt + audio tokens)",
    "warmup": "untimed warm-up iterations",
    "iterations": "timed iterations on the protocol clip",
    "ttft_ms": "median time to first token: encoder + connector + LLM prefill (protocol clip)",
    "ttft_p90_ms": "90th percentile of the same",
    "ttft_mean_ms": "mean of the same",
    "tpot_ms": "median time per output token: one greedy decode step with the KV cache",
    "tpot_p90_ms": "90th percentile of the same",
    "tpot_mean_ms": "mean of the same",
    "breakdown_ms": "median per region: features (CPU log-mel + copy, outside TTFT), encoder, connector, "
                    "prefill, decode",
    "max_new_tokens": "cap of the end-to-end greedy answers",
    "e2e_ms": "strict: median latency of a full greedy answer to the protocol clip, waveform to text "
              "(features included); null in official mode",
    "e2e_tokens": "tokens generated in that answer (stops at end of turn or max_new_tokens)",
    "rtf": "real-time factor of that answer: e2e seconds / clip_audio_s",
    "real_clips": "real test clips measured at batch 1 (strict; 0 in official mode)",
    "real_audio_s": "mean seconds the encoder hears per real clip",
    "real_ttft_ms": "median TTFT over real clips (all repeats)",
    "real_tpot_ms": "median TPOT over real clips",
    "real_e2e_ms": "median end-to-end latency of a full greedy answer over real clips",
    "real_rtf": "median real-time factor over real clips (each answer's e2e / its clip's seconds)",
    "peak_memory_mb": "GPU: torch.cuda.max_memory_allocated (strict: reset after the warm-up; official: never "
                      "reset); CPU: peak RSS of the process",
    "warmup_peak_memory_mb": "strict GPU: max_memory_allocated over the warm-up iterations, whose first calls "
                             "compile and autotune (one-off costs the peak above leaves out)",
    "peak_memory_source": "what peak_memory_mb is",
    "peak_reserved_mb": "GPU: torch.cuda.max_memory_reserved (allocator cache included); null on CPU",
    "real_peak_memory_mb": "strict GPU: max_memory_allocated over the real clips alone (reset after each one's "
                           "warm-up; the largest of the clips)",
    "nvml_memory_mb": "strict GPU: the process's GPU memory as NVML sees it after measuring (CUDA context, "
                      "allocator cache, libraries); null with a note when unavailable",
    "peak_rss_mb": "peak resident memory of the process (lifetime, cannot be reset)",
    "notes": "caveats of these numbers",
}
BREAKDOWN = ("features", "encoder", "connector", "prefill", "decode")

OFFICIAL_NOTE = ("official protocol: time.time() around asynchronous CUDA work with no torch.cuda.synchronize(): "
                 "a region's clock stops when its kernels are queued, not when they finish, so GPU work still "
                 "queued is missed or billed to whichever later region happens to synchronize (TTFT/TPOT can be "
                 "under-reported; launch-bound eager models that synchronize internally come out close to strict); "
                 "torch.cuda.max_memory_allocated() is never reset, so the peak includes whatever this process "
                 "allocated before (loading, training, evaluation). Use measure=strict for numbers to trust.")
OFFICIAL_CPU_NOTE = ("official protocol on CPU: its CUDA timing flaw does not apply (CPU work is synchronous; "
                     "time.perf_counter is used); memory is the process's peak RSS")


@dataclass(frozen=True)
class Protocol:
    """The documented points where `official` and `strict` differ; everything else is shared code."""

    mode: str
    sync: bool          # CUDA events + synchronize (strict) | time.time() without synchronize (official)
    reset_peak: bool    # reset the allocator's peak counters before measuring
    real_clips: bool    # also measure real test clips
    e2e: bool           # end-to-end greedy answers and real-time factor
    nvml: bool          # read the process's GPU memory from NVML


def for_mode(mode: str) -> Protocol:
    if mode == "official":
        return Protocol("official", sync=False, reset_peak=False, real_clips=False, e2e=False, nvml=False)
    if mode == "strict":
        return Protocol("strict", sync=True, reset_peak=True, real_clips=True, e2e=True, nvml=True)
    raise ValueError(f"measure.mode must be one of {', '.join(MODES)}; got {mode!r}")


def setting(cfg: Any, key: str, default: Any = None) -> Any:
    """A `measure` key from a DictConfig, a mapping or an object; `default` when absent or null."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def resolve_device(cfg_measure: Any, device: str) -> str:
    """`measure.device` when set, else the device the run executes on."""
    return str(setting(cfg_measure, "device", device) or device)



def validate(cfg_measure: Any, device: str, out: list[str]) -> None:
    """Append every problem of the `measure` group to `out`; `device` is where the run executes. Cheap: no
    model, no CUDA initialisation beyond asking whether CUDA exists."""
    if cfg_measure is None:
        return
    mode = setting(cfg_measure, "mode", "strict")
    if mode not in MODES:
        out.append(f"measure.mode must be one of {', '.join(MODES)}; got {mode!r}")
        return
    if mode == "none":
        return
    where = resolve_device(cfg_measure, device)
    key = "measure.device" if setting(cfg_measure, "device") else "the run's device"
    try:
        dev = torch.device(where)
    except (RuntimeError, TypeError):
        out.append(f"measure.device must be cpu, cuda or cuda:N; got {where!r}")
        dev = None
    if dev is not None and dev.type not in ("cpu", "cuda"):
        out.append(f"measure.device must be cpu, cuda or cuda:N; got {where!r}")
    elif dev is not None and dev.type == "cuda":
        if not torch.cuda.is_available():
            out.append(f"measure: {key} is {where!r} but this machine has no usable CUDA device "
                       f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                       "measure on this machine with measure.device=cpu, or skip measurement with measure=none")
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            out.append(f"measure: {key} is {where!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    checks = (("warmup", 0, int), ("iterations", 1, int), ("real_clips", 0, int), ("e2e_repeats", 0, int),
              ("max_new_tokens", 1, int), ("cpu_threads", 1, int), ("clip_s", 1e-9, float))
    for name, low, kind in checks:
        value = setting(cfg_measure, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            out.append(f"measure.{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        elif value < low:
            out.append(f"measure.{name} must be {'> 0' if kind is float else f'>= {low}'}, got {value!r}")
    if not isinstance(setting(cfg_measure, "from_export", False), bool):
        out.append(f"measure.from_export must be true or false, got {setting(cfg_measure, 'from_export')!r}")
    if mode == "strict" and setting(cfg_measure, "e2e_repeats", 1) == 0:
        out.append("measure.e2e_repeats must be >= 1 in strict mode (it measures end-to-end answers)")


def check(cfg_measure: Any, device: str) -> None:
    out: list[str] = []
    validate(cfg_measure, device, out)
    if out:
        raise ConfigError(out)
