"""Latency and memory of an AudioLLM, measured two ways by one code path: `official` (the hackathon's
evaluation protocol, flaws included, to reproduce its numbers) and `strict` (the default: numbers to trust).

Both modes run the same iteration on a batch-1 clip, region by region:

    features   waveform -> encoder inputs (log-mel on the CPU) -> device        (not part of TTFT)
    encoder    model.encoder(**encoder_inputs)  -- always run, even when training used cached features
    connector  window Q-Former -> audio tokens
    prefill    prompt assembly + one LLM forward over the whole prompt (use_cache=True), greedy first token
    decode     one greedy decode step: a 1-token forward with the cache, greedy next token

TTFT = encoder + connector + prefill (one region around all three); TPOT = decode. The modes differ only in
these protocol points (`Protocol`):

| point               | official                                       | strict                                      |
|---------------------|------------------------------------------------|---------------------------------------------|
| CUDA clock          | time.time(), no synchronize                    | CUDA event pairs, synchronize per iteration |
| peak GPU memory     | torch.cuda.max_memory_allocated(), never reset | counters reset before measuring             |
| clips               | one seeded 10 s noise clip                     | the same clip + real test clips (batch 1)   |
| end-to-end, RTF     | not measured                                   | full greedy answer (features included)      |
| NVML process memory | not read                                       | read (nvidia-ml-py), null with a note       |
| default counts      | 10 warm-up + 100 timed iterations              | 3 warm-up + 20 timed iterations             |

On CPU both modes use time.perf_counter (CPU work is synchronous) and report peak RSS, which is process-wide
and cannot be reset. Results (`measure`'s return value) are the `efficiency` block of results.json; `KEYS`
documents every key.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sota.errors import ConfigError
from sota.measure.timer import Timer
from sota.models.decoding import Decoders, fallback_reason, llm_call_keywords
from sota.models.footprint import peak_rss_mb

if TYPE_CHECKING:
    from sota.models.audio_llm import AudioLLM

MODES = ("strict", "official", "none")
SAMPLE_RATE = 16_000
MB = 2 ** 20

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
    "peak_memory_mb": "GPU: torch.cuda.max_memory_allocated (strict: reset before measuring; official: never "
                      "reset); CPU: peak RSS of the process",
    "peak_memory_source": "what peak_memory_mb is",
    "peak_reserved_mb": "GPU: torch.cuda.max_memory_reserved (allocator cache included); null on CPU",
    "real_peak_memory_mb": "strict GPU: max_memory_allocated over the real clips alone (reset before them)",
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
CPU_MEMORY_NOTE = ("peak_memory_mb is the process's peak RSS since it started (it cannot be reset): it includes "
                   "everything the process loaded before measuring")


# ---------------------------------------------------------------------------------------------- protocol

@dataclass(frozen=True)
class Protocol:
    """The documented points where `official` and `strict` differ; everything else is shared code."""

    mode: str
    sync: bool          # CUDA events + synchronize (strict) | time.time() without synchronize (official)
    reset_peak: bool    # reset the allocator's peak counters before measuring
    real_clips: bool    # also measure real test clips
    e2e: bool           # end-to-end greedy answers and real-time factor
    nvml: bool          # read the process's GPU memory from NVML


def protocol(mode: str) -> Protocol:
    if mode == "official":
        return Protocol("official", sync=False, reset_peak=False, real_clips=False, e2e=False, nvml=False)
    if mode == "strict":
        return Protocol("strict", sync=True, reset_peak=True, real_clips=True, e2e=True, nvml=True)
    raise ValueError(f"measure.mode must be one of {', '.join(MODES)}; got {mode!r}")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def resolve_device(cfg_measure: Any, device: str) -> str:
    """`measure.device` when set, else the device the run executes on."""
    return str(_get(cfg_measure, "device", device) or device)


# ---------------------------------------------------------------------------------------------- validation

def validate(cfg_measure: Any, device: str, out: list[str]) -> None:
    """Append every problem of the `measure` group to `out`; `device` is where the run executes. Cheap: no
    model, no CUDA initialisation beyond asking whether CUDA exists."""
    if cfg_measure is None:
        return
    mode = _get(cfg_measure, "mode", "strict")
    if mode not in MODES:
        out.append(f"measure.mode must be one of {', '.join(MODES)}; got {mode!r}")
        return
    if mode == "none":
        return
    where = resolve_device(cfg_measure, device)
    key = "measure.device" if _get(cfg_measure, "device") else "the run's device"
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
        value = _get(cfg_measure, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            out.append(f"measure.{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        elif value < low:
            out.append(f"measure.{name} must be {'> 0' if kind is float else f'>= {low}'}, got {value!r}")
    if mode == "strict" and _get(cfg_measure, "e2e_repeats", 1) == 0:
        out.append("measure.e2e_repeats must be >= 1 in strict mode (it measures end-to-end answers)")


def _check(cfg_measure: Any, device: str) -> None:
    out: list[str] = []
    validate(cfg_measure, device, out)
    if out:
        raise ConfigError(out)


# ---------------------------------------------------------------------------------------------- clips

@dataclass
class Clip:
    """A batch-1 input: a waveform (featurized inside the timed loop) or ready encoder inputs."""

    task: str
    seconds: float                              # audio the encoder hears
    wave: np.ndarray | None = None
    encoder_inputs: dict[str, torch.Tensor] | None = None
    num_frames: torch.Tensor | None = None


def noise_clip(model: AudioLLM, seconds: float, task: str, seed: int = 0) -> Clip:
    """The protocol's clip: `seconds` of seeded Gaussian noise (std 0.1)."""
    n = int(round(seconds * SAMPLE_RATE))
    wave = (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)
    return _wave_clip(model, wave, task)


def _wave_clip(model: AudioLLM, wave: np.ndarray, task: str) -> Clip:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return Clip(task=task, seconds=len(wave) / SAMPLE_RATE, wave=wave)


def real_clips(dataset: Any, n: int) -> list[dict[str, Any]]:
    """`n` clips spread evenly over a dataset with `samples` and `waves` (e.g. the datamodule's test split),
    as `measure`'s `real_batches`: ``[{"wave": ..., "task": ..., "id": ...}]``."""
    total = len(dataset.samples)
    if n <= 0 or total == 0:
        return []
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total)).round()})
    return [{"wave": dataset.waves[i], "task": dataset.samples[i].task, "id": dataset.samples[i].id} for i in picks]


def clips_from_batches(model: AudioLLM, batches: Iterable[Mapping[str, Any]] | None) -> list[Clip]:
    """Batch-1 clips from `real_batches`: dicts with `wave`/`waves` (preferred) or `encoder_inputs` and
    `num_frames` (collate's output for an uncached encoder); rows of larger batches become separate clips.
    Batches holding only cached `features` are refused: the encoder must run in the timed region."""
    clips: list[Clip] = []
    for b in batches or []:
        tasks = list(b.get("tasks") or ([b["task"]] if "task" in b else []))
        if "wave" in b or "waves" in b:
            waves = [b["wave"]] if "wave" in b else list(b["waves"])
            tasks = tasks or [model.tasks[0]] * len(waves)
            clips += [_wave_clip(model, w, t) for w, t in zip(waves, tasks)]
        elif "encoder_inputs" in b:
            frames = torch.as_tensor(b["num_frames"])
            tasks = tasks or [model.tasks[0]] * len(frames)
            for i in range(len(frames)):
                inputs = {k: v[i:i + 1] for k, v in b["encoder_inputs"].items()}
                seconds = float(frames[i]) / model.encoder.frames_per_second
                clips.append(Clip(task=tasks[i], seconds=seconds, encoder_inputs=inputs,
                                  num_frames=frames[i:i + 1]))
        elif "features" in b:
            raise ValueError("real_batches hold cached encoder `features`, but the encoder must run in the timed "
                             "region: pass waveforms instead, e.g. sota.measure.latency.real_clips(test_dataset, n) "
                             "-> [{'wave': ..., 'task': ...}]")
        else:
            raise ValueError(f"a real batch needs `wave`/`waves` or `encoder_inputs`; got keys {sorted(b)}")
    return clips


# ---------------------------------------------------------------------------------------------- regions
# The region functions both modes share (tests patch them to check that both modes use them).

def _features(model: AudioLLM, clip: Clip, device: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if clip.wave is not None:
        inputs = model.encoder.featurize([clip.wave])
        frames = model.encoder.frames_for([len(clip.wave)])
    else:
        inputs, frames = clip.encoder_inputs, clip.num_frames
    return {k: v.to(device, non_blocking=False) for k, v in inputs.items()}, frames.to(device)


def _encode(model: AudioLLM, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.encoder(**inputs)


def _connect(model: AudioLLM, hidden: torch.Tensor, num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # As AudioLLM.audio_embeds does after the encoder.
    hidden = hidden.to(next(model.connector.parameters()).dtype)
    return model.connector(hidden, num_frames)


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _prefill(model: AudioLLM, embeds: torch.Tensor, mask: torch.Tensor, tasks: list[str],
             decoders: Decoders | None = None) -> dict[str, Any]:
    inputs = model.assemble(embeds, mask, tasks)
    if decoders is not None:  # static backends: the graphed prefill of the prompt's length bucket
        attn = inputs["attention_mask"]
        decoder = decoders.get(attn.shape[0], attn.shape[1])
        return {"token": decoder.prefill(inputs["inputs_embeds"], attn), "decoder": decoder,
                "length": int(attn.shape[1])}
    _, extra = llm_call_keywords(model.llm)
    out = model.llm(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                    position_ids=inputs["position_ids"], use_cache=True, **extra)
    return {"token": out.logits[:, -1].argmax(-1), "cache": _cache_of(out),
            "attention_mask": inputs["attention_mask"], "position": inputs["position_ids"][:, -1:],
            "length": int(inputs["attention_mask"].shape[1])}


def _decode(model: AudioLLM, state: dict[str, Any]) -> torch.Tensor:
    if "decoder" in state:
        return state["decoder"].step()
    mask = torch.cat([state["attention_mask"], state["attention_mask"].new_ones(len(state["token"]), 1)], dim=1)
    cache_key, extra = llm_call_keywords(model.llm)
    out = model.llm(input_ids=state["token"][:, None], attention_mask=mask, position_ids=state["position"] + 1,
                    use_cache=True, **{cache_key: state["cache"]}, **extra)
    return out.logits[:, -1].argmax(-1)


def _answer(model: AudioLLM, inputs: dict[str, torch.Tensor], frames: torch.Tensor, task: str,
            max_new_tokens: int, backend: str) -> Any:
    """A full greedy answer through the model's own generate (the evaluation's code path)."""
    return model.generate({"encoder_inputs": inputs, "num_frames": frames, "tasks": [task]},
                          max_new_tokens=max_new_tokens, num_beams=1, backend=backend)


# ---------------------------------------------------------------------------------------------- loops

def _iteration(model: AudioLLM, clip: Clip, device: str, timer: Timer,
               decoders: Decoders | None = None) -> dict[str, Any]:
    """One timed pass: features, then TTFT (encoder, connector, prefill), then one decode step."""
    with timer.iteration():
        with timer.region("features"):
            inputs, frames = _features(model, clip, device)
        with timer.region("ttft"):
            with timer.region("encoder"):
                hidden = _encode(model, inputs)
            with timer.region("connector"):
                embeds, mask = _connect(model, hidden, frames)
            with timer.region("prefill"):
                state = _prefill(model, embeds, mask, [clip.task], decoders)
        with timer.region("decode"):
            _decode(model, state)
    return {"audio_tokens": mask, "prompt_tokens": state["length"]}


def _run(model: AudioLLM, clip: Clip, device: str, timer: Timer, warmup: int, iterations: int,
         decoders: Decoders | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for _ in range(warmup):
        _iteration(model, clip, device, Timer(device, sync=timer.sync), decoders)  # samples discarded
    for _ in range(iterations):
        info = _iteration(model, clip, device, timer, decoders)
    _settle(device)
    if info:
        info["audio_tokens"] = int(info["audio_tokens"].sum())
    return info


class _TokenCounter:
    """Counts LLM forwards (one per generated token) through a hook on the output head: eager decoding only.
    Static decoders count their own steps (graph replays run no hooks), and a hook inside a compiled step
    would make Dynamo guard on the count and recompile at every call, also while a CUDA graph is captured."""

    def __init__(self, model: AudioLLM) -> None:
        base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        self.count = 0
        self._handle = head.register_forward_hook(self._hook) if head is not None else None

    def _hook(self, *_: Any) -> None:
        self.count += 1

    def take(self) -> int | None:
        n, self.count = self.count, 0
        return n if self._handle is not None else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()


def _e2e(model: AudioLLM, clip: Clip, device: str, timer: Timer, repeats: int, max_new_tokens: int,
         counter: _TokenCounter | None, backend: str = "eager",
         decoders: Decoders | None = None) -> list[tuple[float, int | None]]:
    """Full greedy answers, waveform to text: [(ms, tokens)] for `repeats` timed runs after one warm-up."""
    runs = []
    for i in range(repeats + 1):
        probe = Timer(device, sync=timer.sync)
        with probe.iteration():
            with probe.region("e2e"):
                inputs, frames = _features(model, clip, device)
                _answer(model, inputs, frames, clip.task, max_new_tokens, backend)
        if decoders is not None:
            tokens = decoders.last.steps_run if decoders.last is not None else None
        else:
            tokens = counter.take() if counter is not None else None
        if i:  # the first run warms up this clip's shapes
            runs.append((probe.samples["e2e"][0], tokens))
            timer.samples["e2e"].append(probe.samples["e2e"][0])
    _settle(device)
    return runs


def _settle(device: str) -> None:
    """Between phases (outside every timed window): let queued GPU work finish."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


# ---------------------------------------------------------------------------------------------- memory

def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def _peak(device: str) -> tuple[float | None, float | None]:
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


# ---------------------------------------------------------------------------------------------- measure

def _cpu_load_note(load: float | None) -> str:
    text = f"CPU timing with {torch.get_num_threads()} torch thread(s) on {os.cpu_count()} logical CPU(s)"
    if load is not None:
        text += f"; 1-minute load average {load:.1f} when measuring started"
        if load > (os.cpu_count() or 1):
            text += " (more runnable processes than CPUs: these numbers are inflated and scattered"
            text += "; measure.cpu_threads=1 avoids the worst of it)" if torch.get_num_threads() > 1 else ")"
    return text


def _empty(mode: str, device: str) -> dict[str, Any]:
    from sota.utils.provenance import device_name

    out: dict[str, Any] = {k: None for k in KEYS}
    out.update(mode=mode, device=device_name(device), backend="eager", breakdown_ms={k: None for k in BREAKDOWN},
               notes=[], real_clips=0)
    return out


def _default_task(model: AudioLLM, cfg_measure: Any) -> str:
    task = _get(cfg_measure, "task")
    if task is not None:
        if task not in model.tasks:
            raise ValueError(f"measure.task={task!r} has no prompt; prompts exist for {sorted(model.tasks)}")
        return str(task)
    return "asr" if "asr" in model.tasks else model.tasks[0]


def _model_device(model: AudioLLM) -> torch.device | None:
    for module in (model.connector, model.llm):
        for p in module.parameters():
            return p.device
    return None


def measure(model: AudioLLM, cfg_measure: Any, device: str,
            real_batches: list[dict[str, Any]] | None = None, backend: str = "eager") -> dict[str, Any]:
    """The `efficiency` block of results.json for `model` (already on `device`), per `cfg_measure` (the
    `measure` group: mode, warmup, iterations, clip_s, real_clips, e2e_repeats, max_new_tokens, seed, task,
    device, cpu_threads). `real_batches` are batch-1 clips of the test split for strict mode (see
    `clips_from_batches`; `real_clips(dataset, n)` builds them); ignored in official mode. `backend` is the
    decoding backend (generate.backend) whose prefill, decode step and answers are timed."""
    mode = _get(cfg_measure, "mode", "strict")
    _check(cfg_measure, device)
    device = resolve_device(cfg_measure, device)
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    result = _empty(mode, device)
    if mode == "none":
        result["notes"].append("measure=none: efficiency not measured")
        result["peak_rss_mb"] = peak_rss_mb()
        return result
    proto = protocol(mode)
    where = _model_device(model)
    if where is not None and where.type != torch.device(device).type:
        raise ValueError(f"measure on {device}, but the model is on {where}: move it first (model.to(device))")

    warmup = int(_get(cfg_measure, "warmup", 10 if mode == "official" else 3))
    iterations = int(_get(cfg_measure, "iterations", 100 if mode == "official" else 20))
    clip_s = float(_get(cfg_measure, "clip_s", 10.0))
    max_new_tokens = int(_get(cfg_measure, "max_new_tokens", 40))
    repeats = int(_get(cfg_measure, "e2e_repeats", 3))
    n_real = int(_get(cfg_measure, "real_clips", 0 if mode == "official" else 8))
    task = _default_task(model, cfg_measure)
    cuda = device.startswith("cuda")
    notes: list[str] = result["notes"]

    clip = noise_clip(model, clip_s, task, seed=int(_get(cfg_measure, "seed", 0)))
    chunks = model.encoder.chunks_for(len(clip.wave))
    if chunks > 1:
        notes.append(f"the {clip_s:g} s protocol clip is longer than the encoder's {model.encoder.context_s:g} s "
                     f"context (encoder.context_s): it is encoded in {chunks} chunks")
    real: list[Clip] = []
    if proto.real_clips:
        real = clips_from_batches(model, real_batches)[:n_real] if n_real else []
        if n_real and not real:
            notes.append("no real clips given (real_batches): real_* keys are null")
    elif real_batches or (mode == "official" and n_real):
        notes.append("official mode measures only the protocol clip; real clips are ignored")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads = torch.get_num_threads()
    if not cuda and _get(cfg_measure, "cpu_threads"):
        torch.set_num_threads(int(_get(cfg_measure, "cpu_threads")))
    was_training = model.training
    model.eval()
    if proto.reset_peak:
        # Strict mode measures a batch-1 deployment: the static caches and graph pools that evaluation built for
        # its batch sizes are not part of it, and would otherwise sit inside the measured peak (hundreds of MB).
        model.forget_compiled()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    decoders = model.static_decoders(backend, max_new_tokens)
    result["backend"] = backend if decoders is not None or backend == "eager" else "eager"
    if backend != "eager" and decoders is None:
        notes.append(f"generate.backend={backend} fell back to eager: {fallback_reason(model.llm)}")
    counter = _TokenCounter(model) if decoders is None else None
    timer = Timer(device, sync=proto.sync)
    try:
        with torch.no_grad():
            gc.collect()
            if proto.reset_peak:
                _reset_peak(device)
            info = _run(model, clip, device, timer, warmup, iterations, decoders)
            if proto.e2e:
                runs = _e2e(model, clip, device, timer, repeats, max_new_tokens, counter, backend, decoders)
                result["e2e_ms"] = _median([ms for ms, _ in runs])
                tokens = [t for _, t in runs if t is not None]
                result["e2e_tokens"] = int(np.median(tokens)) if tokens else None
                result["rtf"] = result["e2e_ms"] / 1000.0 / clip.seconds
            result["peak_memory_mb"], result["peak_reserved_mb"] = _peak(device)
            if real:
                if proto.reset_peak:
                    _reset_peak(device)
                rt = Timer(device, sync=proto.sync)
                rtfs: list[float] = []
                for c in real:
                    _run(model, c, device, rt, warmup=1, iterations=max(1, repeats), decoders=decoders)
                    for ms, _ in _e2e(model, c, device, rt, max(1, repeats), max_new_tokens, counter, backend,
                                      decoders):
                        rtfs.append(ms / 1000.0 / c.seconds)
                result.update(real_clips=len(real), real_audio_s=float(np.mean([c.seconds for c in real])),
                              real_ttft_ms=rt.stats("ttft").median, real_tpot_ms=rt.stats("decode").median,
                              real_e2e_ms=rt.stats("e2e").median, real_rtf=_median(rtfs))
                if cuda:
                    result["real_peak_memory_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / MB
    finally:
        if decoders is not None:
            notes.extend(sorted({d.note for d in decoders.all() if d.note}))
        if counter is not None:
            counter.close()
        model.train(was_training)
        cpu_note = _cpu_load_note(load)  # while cpu_threads is still in force
        torch.set_num_threads(threads)

    ttft, tpot = timer.stats("ttft"), timer.stats("decode")
    result.update(
        timer=timer.kind, task=task, clip_s=clip_s, clip_audio_s=clip.seconds, warmup=warmup,
        iterations=iterations, max_new_tokens=max_new_tokens if proto.e2e else None,
        audio_tokens=info.get("audio_tokens"), prompt_tokens=info.get("prompt_tokens"),
        ttft_ms=ttft.median, ttft_p90_ms=ttft.p90, ttft_mean_ms=ttft.mean,
        tpot_ms=tpot.median, tpot_p90_ms=tpot.p90, tpot_mean_ms=tpot.mean,
        breakdown_ms={k: timer.stats(k).median for k in BREAKDOWN},
        peak_rss_mb=peak_rss_mb(),
    )
    if cuda:
        result["peak_memory_source"] = ("torch.cuda.max_memory_allocated, reset before measuring" if proto.reset_peak
                                        else "torch.cuda.max_memory_allocated, never reset (process lifetime)")
        if proto.nvml:
            result["nvml_memory_mb"], why = nvml_process_memory_mb(device)
            if why:
                notes.append(why)
        else:
            notes.append("nvml_memory_mb: not read in official mode")
    else:
        result["peak_memory_source"] = "peak RSS of the process (lifetime)"
        notes.append(CPU_MEMORY_NOTE)
        notes.append(cpu_note)
        if proto.nvml:
            notes.append("nvml_memory_mb: null on CPU")
    if mode == "official":
        notes.insert(0, OFFICIAL_NOTE if cuda else OFFICIAL_CPU_NOTE)
        notes.append("e2e_ms, rtf and real_*: not part of the official protocol (null)")
    return result
