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
| peak GPU memory     | torch.cuda.max_memory_allocated(), never reset | counters reset after the warm-up            |
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sota.measure.clips import Clip, clips_from_batches, noise_clip
from sota.measure.memory import CPU_MEMORY_NOTE, nvml_process_memory_mb, peak, reset_peak
from sota.measure.protocol import (BREAKDOWN, KEYS, OFFICIAL_CPU_NOTE, OFFICIAL_NOTE, Protocol, check, for_mode,
                                   resolve_device, setting)
from sota.measure.timer import Timer
from sota.models.decoding import Decoders, fallback_reason
from sota.models.footprint import peak_rss_mb
from sota.models.llm import base_model

if TYPE_CHECKING:
    from sota.models.audio_llm import AudioLLM

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
    return model.encode(inputs)


def _connect(model: AudioLLM, hidden: torch.Tensor, num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model.connect(hidden, num_frames)


def _prefill(model: AudioLLM, embeds: torch.Tensor, mask: torch.Tensor, tasks: list[str],
             decoders: Decoders | None = None) -> dict[str, Any]:
    return model.prefill(embeds, mask, tasks, decoders)


def _decode(model: AudioLLM, state: dict[str, Any]) -> torch.Tensor:
    return model.step(state)


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
        base = base_model(model.llm)
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
    task = setting(cfg_measure, "task")
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


@dataclass(frozen=True)
class _Settings:
    """The `measure` group's counts, with each mode's defaults."""

    warmup: int
    iterations: int
    clip_s: float
    max_new_tokens: int
    repeats: int
    n_real: int
    seed: int
    cpu_threads: int | None

    @classmethod
    def of(cls, cfg: Any, mode: str) -> _Settings:
        official = mode == "official"
        threads = setting(cfg, "cpu_threads")
        return cls(warmup=int(setting(cfg, "warmup", 10 if official else 3)),
                   iterations=int(setting(cfg, "iterations", 100 if official else 20)),
                   clip_s=float(setting(cfg, "clip_s", 10.0)), max_new_tokens=int(setting(cfg, "max_new_tokens", 40)),
                   repeats=int(setting(cfg, "e2e_repeats", 3)), n_real=int(setting(cfg, "real_clips", 0 if official else 8)),
                   seed=int(setting(cfg, "seed", 0)), cpu_threads=int(threads) if threads else None)


def measure(model: AudioLLM, cfg_measure: Any, device: str,
            real_batches: list[dict[str, Any]] | None = None, backend: str = "eager") -> dict[str, Any]:
    """The `efficiency` block of results.json for `model` (already on `device`), per `cfg_measure` (the
    `measure` group: mode, warmup, iterations, clip_s, real_clips, e2e_repeats, max_new_tokens, seed, task,
    device, cpu_threads). `real_batches` are batch-1 clips of the test split for strict mode (see
    `clips_from_batches`; `real_clips(dataset, n)` builds them); ignored in official mode. `backend` is the
    decoding backend (generate.backend) whose prefill, decode step and answers are timed."""
    mode = setting(cfg_measure, "mode", "strict")
    check(cfg_measure, device)
    device = resolve_device(cfg_measure, device)
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    result = _empty(mode, device)
    if mode == "none":
        result["notes"].append("measure=none: efficiency not measured")
        result["peak_rss_mb"] = peak_rss_mb()
        return result
    where = _model_device(model)
    if where is not None and where.type != torch.device(device).type:
        raise ValueError(f"measure on {device}, but the model is on {where}: move it first (model.to(device))")
    proto, conf, task = for_mode(mode), _Settings.of(cfg_measure, mode), _default_task(model, cfg_measure)
    clip = noise_clip(model, conf.clip_s, task, seed=conf.seed)
    chunks = model.encoder.chunks_for(len(clip.wave))
    if chunks > 1:
        result["notes"].append(f"the {conf.clip_s:g} s protocol clip is longer than the encoder's "
                               f"{model.encoder.context_s:g} s context (encoder.context_s): it is encoded in "
                               f"{chunks} chunks")
    real = _real(model, proto, conf, real_batches, result["notes"])
    timer, info, cpu_note = _timed(model, proto, conf, clip, real, device, backend, result)
    ttft, tpot = timer.stats("ttft"), timer.stats("decode")
    result.update(
        timer=timer.kind, task=task, clip_s=conf.clip_s, clip_audio_s=clip.seconds, warmup=conf.warmup,
        iterations=conf.iterations, max_new_tokens=conf.max_new_tokens if proto.e2e else None,
        audio_tokens=info.get("audio_tokens"), prompt_tokens=info.get("prompt_tokens"),
        ttft_ms=ttft.median, ttft_p90_ms=ttft.p90, ttft_mean_ms=ttft.mean,
        tpot_ms=tpot.median, tpot_p90_ms=tpot.p90, tpot_mean_ms=tpot.mean,
        breakdown_ms={k: timer.stats(k).median for k in BREAKDOWN},
        peak_rss_mb=peak_rss_mb(),
    )
    _memory_notes(result, proto, device, cpu_note)
    return result


def _real(model: AudioLLM, proto: Protocol, conf: _Settings, real_batches: list[dict[str, Any]] | None,
          notes: list[str]) -> list[Clip]:
    """The real clips strict mode measures (official mode ignores them, and says so)."""
    if not proto.real_clips:
        if real_batches or (proto.mode == "official" and conf.n_real):
            notes.append("official mode measures only the protocol clip; real clips are ignored")
        return []
    real = clips_from_batches(model, real_batches)[:conf.n_real] if conf.n_real else []
    if conf.n_real and not real:
        notes.append("no real clips given (real_batches): real_* keys are null")
    return real


def _timed(model: AudioLLM, proto: Protocol, conf: _Settings, clip: Clip, real: list[Clip], device: str,
           backend: str, result: dict[str, Any]) -> tuple[Timer, dict[str, Any], str]:
    """The timed phases in eval mode (CPU threads as `measure.cpu_threads` says): the protocol clip's
    iterations, its end-to-end answers, the real clips. Returns the timer, the clip's info, the CPU note."""
    cuda, notes = device.startswith("cuda"), result["notes"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads = torch.get_num_threads()
    if not cuda and conf.cpu_threads:
        torch.set_num_threads(conf.cpu_threads)
    was_training = model.training
    model.eval()
    if proto.reset_peak:
        # Strict mode measures a batch-1 deployment: the static caches and graph pools that evaluation built for
        # its batch sizes are not part of it, and would otherwise sit inside the measured peak (hundreds of MB).
        model.forget_compiled()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    decoders = model.static_decoders(backend, conf.max_new_tokens)
    result["backend"] = backend if decoders is not None or backend == "eager" else "eager"
    if backend != "eager" and decoders is None:
        notes.append(f"generate.backend={backend} fell back to eager: {fallback_reason(model.llm)}")
    counter = _TokenCounter(model) if decoders is None else None
    timer = Timer(device, sync=proto.sync)
    try:
        with torch.no_grad():
            gc.collect()
            if proto.reset_peak:
                reset_peak(device)
            _run(model, clip, device, timer, conf.warmup, 0, decoders)
            if proto.reset_peak and cuda:
                # The peak is what the running model holds. The first calls' one-off costs are reported apart:
                # Triton's autotuning times each candidate over a 256 MB buffer that flushes L2, and compilers
                # allocate while they compile.
                result["warmup_peak_memory_mb"] = peak(device)[0]
                reset_peak(device)
            info = _run(model, clip, device, timer, 0, conf.iterations, decoders)
            if proto.e2e:
                runs = _e2e(model, clip, device, timer, conf.repeats, conf.max_new_tokens, counter, backend, decoders)
                result["e2e_ms"] = _median([ms for ms, _ in runs])
                tokens = [t for _, t in runs if t is not None]
                result["e2e_tokens"] = int(np.median(tokens)) if tokens else None
                result["rtf"] = result["e2e_ms"] / 1000.0 / clip.seconds
            result["peak_memory_mb"], result["peak_reserved_mb"] = peak(device)
            if real:
                _time_real(model, proto, conf, real, device, backend, counter, decoders, result)
    finally:
        if decoders is not None:
            notes.extend(sorted({d.note for d in decoders.all() if d.note}))
            if decoders.fused:
                notes.append(decoders.fused)
        if counter is not None:
            counter.close()
        model.train(was_training)
        cpu_note = _cpu_load_note(load)  # while cpu_threads is still in force
        torch.set_num_threads(threads)
    return timer, info, cpu_note


def _time_real(model: AudioLLM, proto: Protocol, conf: _Settings, real: list[Clip], device: str, backend: str,
               counter: _TokenCounter | None, decoders: Decoders | None, result: dict[str, Any]) -> None:
    """TTFT, TPOT and whole answers over the real clips, each at batch 1 (strict mode)."""
    rt = Timer(device, sync=proto.sync)
    rtfs: list[float] = []
    peaks: list[float] = []
    repeats = max(1, conf.repeats)
    for c in real:
        _run(model, c, device, rt, warmup=1, iterations=0, decoders=decoders)
        if proto.reset_peak:
            reset_peak(device)      # after the clip's warm-up, as for the protocol clip (a new length may autotune)
        _run(model, c, device, rt, warmup=0, iterations=repeats, decoders=decoders)
        for ms, _ in _e2e(model, c, device, rt, repeats, conf.max_new_tokens, counter, backend, decoders):
            rtfs.append(ms / 1000.0 / c.seconds)
        if device.startswith("cuda"):
            peaks.append(peak(device)[0])
    result.update(real_clips=len(real), real_audio_s=float(np.mean([c.seconds for c in real])),
                  real_ttft_ms=rt.stats("ttft").median, real_tpot_ms=rt.stats("decode").median,
                  real_e2e_ms=rt.stats("e2e").median, real_rtf=_median(rtfs))
    if peaks:
        result["real_peak_memory_mb"] = max(peaks)


def _memory_notes(result: dict[str, Any], proto: Protocol, device: str, cpu_note: str) -> None:
    """Where peak memory comes from, NVML's reading, and the protocol's caveats."""
    notes = result["notes"]
    if device.startswith("cuda"):
        result["peak_memory_source"] = ("torch.cuda.max_memory_allocated, reset after the warm-up" if proto.reset_peak
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
    if proto.mode == "official":
        notes.insert(0, OFFICIAL_NOTE if device.startswith("cuda") else OFFICIAL_CPU_NOTE)
        notes.append("e2e_ms, rtf and real_*: not part of the official protocol (null)")
