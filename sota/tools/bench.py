"""Benchmark one configuration's speed and memory, in the official protocol and in strict mode.

    python -m sota.tools.bench [hydra overrides ...] [--modes official,strict] [--backends eager,compiled] [--out FILE]
    python -m sota.tools.bench --from EXPORT_DIR [--modes ...] [--out FILE]
    python -m sota.tools.bench --summarize FILE.json [FILE.json ...]
    python -m sota.tools.bench --from EXPORT_DIR --memory-trace peak.json   # what the CUDA peak is made of

Composes the config from the repo's conf/ (the same groups as run.py), builds the model with random or
pretrained weights (speed does not depend on weight values, so no corpus and no training are needed),
applies the compression groups (prune / lora / quant; pruning scores structure on noise batches, which gives
the same shapes), moves it to the device and measures it in each mode. Each mode uses its own preset
(conf/measure/<mode>.yaml) with your `measure.*` overrides on top; `measure.device` picks the device
(default: cuda when available, else cpu). Each decoding backend (generate.backend: eager, static, compiled, fused)
is measured on the same model. Beside them: transformers' plain `generate` per token on the same model (the
number users get without sota), and on CUDA the memory-bandwidth floor of a decode step (the LLM's weight bytes
over a measured device-to-device copy bandwidth). Prints a markdown table and, with --out, writes JSON.

With --from, the model is an export directory (python -m sota.export) loaded in this fresh process, nothing
built in float first: official mode's never-reset peak is what a user who loads the artifact sees.

Example (CPU, well under a minute): python -m sota.tools.bench model=tiny measure.iterations=5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sota.compose import compose as compose_config
from sota.compress import int4
from sota.compress.plan import CompressionPlan
from sota.models.llm import base_model
DEFAULT_MODES = ("official", "strict")
SAMPLE_S = 3.0                   # seconds of the noise clips that calibrate pruning


# ---------------------------------------------------------------------------------------------- config

def _key_value(override: str) -> tuple[str, str]:
    """`key=value` (also `+key=value`, `++key=value`) as its key and value; no `=`: the override and ""."""
    key, _, value = override.lstrip("+").partition("=")
    return key, value


def _selects_measure(override: str) -> str | None:
    """The option of a `measure=X` group override, else None."""
    key, value = _key_value(override)
    return value if key == "measure" and value else None


def compose(overrides: list[str], mode: str | None = None) -> DictConfig:
    """The main config with `overrides`, its `measure` group set to `mode` (added when the defaults list has
    no `measure` group yet)."""
    from hydra.errors import ConfigCompositionException

    rest = [o for o in overrides if _selects_measure(o) is None]
    chosen = mode or next((_selects_measure(o) for o in overrides if _selects_measure(o)), "strict")
    try:
        return compose_config(rest + [f"measure={chosen}"])
    except ConfigCompositionException as err:
        if "measure" not in str(err):
            raise
        # The defaults list has no `measure` group (yet): append it.
        return compose_config(rest + [f"+measure={chosen}"])


def pick_device(cfg: DictConfig) -> str:
    chosen = cfg.measure.get("device")
    if chosen:
        return str(chosen)
    return "cuda" if torch.cuda.is_available() else "cpu"


def check(cfg: DictConfig, device: str) -> None:
    """Every problem of the measure and compression groups at once, before building anything."""
    from sota.compress import pipeline
    from sota.errors import ConfigError
    from sota.measure import protocol

    out: list[str] = []
    protocol.validate(cfg.measure, device, out)
    pipeline.validate(cfg, "cuda" if device.startswith("cuda") else "cpu", out)
    if out:
        raise ConfigError(out)


# ---------------------------------------------------------------------------------------------- model

def bench_words(cfg: DictConfig | None = None, scenes: int = 60) -> list[str]:
    """A fixed vocabulary the size of the synthetic corpus': the grammar's words, words of seeded scene
    captions and the prompts' words (the tiny LLMs build their tokenizer and output layer from it)."""
    from sota.data.grammar import VOCABULARY
    from sota.data.scenes import caption_scene, plan_scene

    words = set(VOCABULARY)
    rng = np.random.default_rng(0)
    for _ in range(scenes):
        for caption in caption_scene(plan_scene(rng, 5.0), rng):
            words.update(caption.split())
    if cfg is not None:
        for text in OmegaConf.to_container(cfg.prompts, resolve=True).values():
            words.update(w for w in str(text).split() if not w.startswith("<"))
    return sorted(words)


def _noise_batches(model: Any, n: int, words: list[str], device: str) -> list[dict[str, Any]]:
    """Calibration batches for pruning (shapes only matter here): noise clips with random word answers."""
    rng = np.random.default_rng(0)
    tasks = model.tasks
    out = []
    for i in range(n):
        waves = [(rng.standard_normal(int(SAMPLE_S * 16000)) * 0.1).astype(np.float32) for _ in range(2)]
        enc = model.encoder.featurize(waves)
        out.append({"encoder_inputs": {k: v.to(device) for k, v in enc.items()},
                    "num_frames": model.encoder.frames_for([len(w) for w in waves]).to(device),
                    "tasks": [tasks[(i + j) % len(tasks)] for j in range(2)],
                    "answers": [" ".join(rng.choice(words, size=6)) for _ in range(2)]})
    return out



def build(cfg: DictConfig, device: str) -> tuple[Any, dict[str, Any]]:
    """The model of `cfg` on `device`, compressed as its prune / lora / quant groups say."""
    from sota.compress import pipeline
    from sota.models.build import build_model

    words = bench_words(cfg)
    model = build_model(cfg, words)
    model.to(device)
    calib: list[dict[str, Any]] = []
    plan = CompressionPlan.of(cfg)
    if plan.needs_calibration:
        calib = _noise_batches(model, plan.calib_batches, words, device)
    record = pipeline.before_training(model, cfg, calib if plan.prune is not None else [], device)
    model.to(device)
    record = pipeline.after_training(model, cfg, record, device, calib=calib)
    if pipeline.merge_tokens(model, cfg) is not None:
        record["tokens"] = {k: cfg.tokens.get(k) for k in ("method", "keep", "layer", "grouping", "attention")}
    if plan.mixed:
        record["quant"].setdefault("notes", []).append(
            "quant=mixed chose its map on noise calibration batches here: its speed and memory are measured, "
            "not the accuracy a run's map would keep")
    model.eval()
    return model, record


# ---------------------------------------------------------------------------------------------- report

def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| backend | mode | timer | TTFT ms (p90) | TPOT ms (p90) | e2e ms (tokens) | RTF | peak memory MB |",
            "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        backend, _, mode = key.rpartition("/")
        rows.append(
            f"| {r.get('backend') or backend} | {mode} | {r.get('timer') or '–'} "
            f"| {_fmt(r.get('ttft_ms'), 2)} ({_fmt(r.get('ttft_p90_ms'), 2)}) "
            f"| {_fmt(r.get('tpot_ms'), 2)} ({_fmt(r.get('tpot_p90_ms'), 2)}) "
            f"| {_fmt(r.get('e2e_ms'))} ({_fmt(r.get('e2e_tokens'))}) "
            f"| {_fmt(r.get('rtf'), 3)} | {_fmt(r.get('peak_memory_mb'))} |")
    return "\n".join(rows)


def _label(overrides: list[str]) -> str:
    """What a benchmark measured, from its overrides: the LLM shape or preset, else the model preset."""
    values = dict(_key_value(o) for o in overrides if "=" in o)
    return values.get("llm.arch") or values.get("llm") or values.get("model") or "(defaults)"


def _source(data: dict[str, Any]) -> str:
    return f"export {Path(data['from']).name}" if data.get("from") else _label(data.get("overrides", []))


def summarize(paths: list[Path]) -> str:
    """One markdown row per benchmark file and backend (strict mode where measured): the study table of
    several `--out` files, e.g. a model's shapes x quantization modes."""
    rows = ["| model | quant | backend | TTFT ms | TPOT ms | floor ms | TPOT / floor | transformers generate ms "
            "| peak memory MB |", "|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = json.loads(Path(path).read_text())
        quant = ((data.get("compression") or {}).get("quant") or {}).get("mode", "none")
        kernels = data.get("int4_kernels") or {}   # one export benched with each int4 kernel: rows told apart
        if kernels:
            quant += f" ({', '.join(sorted(kernels))})"
        floor, hf = data.get("floor_ms_per_token"), data.get("hf_generate_ms_per_token")
        by_backend: dict[str, dict[str, Any]] = {}
        for key, r in data["results"].items():
            backend, _, mode = key.rpartition("/")
            if backend not in by_backend or mode == "strict":
                by_backend[backend] = r
        for backend, r in by_backend.items():
            ratio = r["tpot_ms"] / floor if floor and r.get("tpot_ms") else None
            rows.append(f"| {_source(data)} | {quant} | {backend} | {_fmt(r.get('ttft_ms'), 2)} "
                        f"| {_fmt(r.get('tpot_ms'), 2)} | {_fmt(floor, 3)} | {_fmt(ratio, 2)} | {_fmt(hf, 2)} "
                        f"| {_fmt(r.get('peak_memory_mb'))} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- main

def copy_bandwidth_gbs(device: str, nbytes: int = 2 ** 30, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (CUDA only)."""
    if not device.startswith("cuda"):
        return None
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    times = []
    for i in range(repeats + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    del src, dst
    return 2 * nbytes / (float(np.median(times)) / 1000) / 1e9


def _noise_prompt(llm: Any, length: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-1 prompt of `length` random embeddings at the embedding table's scale, and its mask."""
    from sota.models.decoding import embedding_device_dtype

    table = llm.get_input_embeddings()
    device, dtype = embedding_device_dtype(llm)
    sample = table(torch.arange(0, table.num_embeddings, max(1, table.num_embeddings // 1024), device=device))
    prompt = torch.randn(1, length, table.embedding_dim, device=device, dtype=dtype) * sample.float().std().to(dtype)
    return prompt, torch.ones(1, length, dtype=torch.long, device=device)


def hf_generate_ms_per_token(model: Any, device: str, tokens: int = 32, repeats: int = 5) -> float:
    """transformers' plain greedy `generate` on the LLM after a 100-token prompt: (time for 1 + `tokens` new
    tokens - time for 1) / `tokens`, medians over `repeats`, synchronised wall clock."""
    from sota.measure.timer import Timer

    llm = model.llm
    prompt, attn = _noise_prompt(llm)

    def run(n: int) -> float:
        timer = Timer(device, sync=True)
        with timer.iteration(), timer.region("gen"):
            llm.generate(inputs_embeds=prompt, attention_mask=attn, max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
        return timer.samples["gen"][0]

    with torch.no_grad():
        run(tokens + 1)  # warm-up
        long = float(np.median([run(tokens + 1) for _ in range(repeats)]))
        short = float(np.median([run(1) for _ in range(repeats)]))
    return (long - short) / tokens


def profile_decode(model: Any, backend: str, device: str, steps: int = 20, top: int = 15) -> str:
    """Where a decode step's device time goes: the step of `backend` (compiled: Inductor's kernels) run
    `steps` times without its CUDA graph under torch.profiler, after a 100-token prompt; a table of the `top`
    kernels by total device time (CPU time on a CPU). The fused step's kernels launch one after another here, not
    as programmatic dependents (SOTA_TRITON_PDL=0): a dependent starts early and waits for the kernel before, and
    the profiler would count the wait as its time. On CUDA, then `steps` steps as measured, replayed from the
    step's graph (the fused step's kernels as programmatic dependents), by each kernel's share of the step's
    critical path (`critical_shares`)."""
    prompt, attn = _noise_prompt(model.llm)
    decoders = model.static_decoders(backend, steps + 2)
    if decoders is None:
        raise ValueError(f"--profile needs a static backend (static, compiled or fused) this LLM can use, "
                         f"got {backend!r}")
    dec = decoders.get(1, 100, steps + 2)
    cuda = device.startswith("cuda")
    with mock.patch.dict(os.environ, {"SOTA_TRITON_PDL": "0"}):
        prof = _profiled_steps(dec, dec._decode_fn, prompt, attn, steps, device)
    sort = "cuda_time_total" if cuda else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=70)
    if cuda:
        layers = getattr(base_model(model.llm).config, "num_hidden_layers", 0)
        text += "\n\n" + launch_roles([(name, us) for _, _, name, us in _device_kernels(prof)], steps, layers)
        text += "\n\n" + _profile_graphed(dec, prompt, attn, device, steps, layers)
    return text


def _profiled_steps(dec: Any, step: Any, prompt: torch.Tensor, attn: torch.Tensor, steps: int, device: str) -> Any:
    """torch.profiler over `steps` calls of `step` after prefilling `prompt` and one call more, where compiling (and
    a graph's capture) happens."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    with torch.no_grad():
        dec.prefill(prompt, attn)
        step()
        if cuda:
            torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize(device)
    return prof


def _device_kernels(prof: Any) -> list[tuple[float, float, str, float]]:
    """The profiled device kernels in launch order: (start, end, name, device time), µs."""
    return sorted((e.time_range.start, e.time_range.end, e.name, e.device_time) for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA)


def _profile_graphed(dec: Any, prompt: torch.Tensor, attn: torch.Tensor, device: str, steps: int,
                     layers: int) -> str:
    """`steps` decode steps as the measurement runs them, from the step's CUDA graph, by kernel role: each
    kernel's share of the critical path."""
    title = f"### in its graph, as measured ({steps} steps): each kernel's share of the critical path, µs"
    if not dec.graphs:
        return f"{title}\n(this decoder runs without graphs)"
    try:   # the first step captures the graph (its warm-up restores the state), then replays it
        prof = _profiled_steps(dec, dec.step, prompt, attn, steps, device)
    except RuntimeError as err:       # a table the measurement does not need: its results are kept, and this says why
        return f"{title}\n(not profiled: {type(err).__name__}: {str(err).splitlines()[0][:200]})"
    kernels = [(start, end, name) for start, end, name, _ in _device_kernels(prof)]
    if not kernels:
        return f"{title}\n(the profiler saw no kernel inside the graph)"
    shares = critical_shares(kernels)
    return (f"{title}; {sum(us for _, us in shares) / steps:.1f} µs a step\n"
            + launch_roles(shares, steps, layers))


def critical_shares(kernels: list[tuple[float, float, str]]) -> list[tuple[str, float]]:
    """(name, share) in launch order, from (start, end, name) of kernels: how far a kernel's end passes the latest
    end of the kernels started before it, and no further back than its own start (0 where it ends under one of
    them). A programmatic dependent starts while the kernel before it runs and waits for it, so its duration holds
    that wait; its share is what it adds to the step. The shares add up to the time some kernel runs."""
    shares, last = [], float("-inf")
    for start, end, name in sorted(kernels):
        shares.append((name, max(0.0, end - max(last, start))))
        last = max(last, end)
    return shares


def launch_roles(launches: list[tuple[str, float]], steps: int, layers: int) -> str:
    """A table of the device time a step spends in each kernel's roles, from the kernels of `steps` identical steps
    in launch order (name, µs). A kernel launched m x `layers` + r times a step plays m roles a layer (its i-th
    launch of a layer plays role i % m: o, gate/up and down for the fused step's products) and r roles outside the
    layers (the head, say), each averaged over the steps."""
    per_step = len(launches) // steps if steps else 0
    if not per_step or per_step * steps != len(launches) or not layers:
        return f"(no roles: {len(launches)} kernels over {steps} steps)"
    roles: dict[tuple[str, str], list[float]] = {}
    for i in range(steps):
        seen: dict[str, int] = {}
        step = launches[i * per_step:(i + 1) * per_step]
        count = Counter(name for name, _ in step)
        for name, us in step:
            j = seen.get(name, 0)
            seen[name] = j + 1
            m = count[name] // layers
            role = f"{j % m + 1} of {m} a layer" if j < m * layers else f"outside layers, {j - m * layers + 1}"
            roles.setdefault((name, role), []).append(us)
    rows = sorted(roles.items(), key=lambda kv: -sum(kv[1]))
    lines = ["| kernel | role | calls a step | µs a call | µs a step |", "|---|---|---|---|---|"]
    for (name, role), times in rows:
        calls = len(times) / steps
        lines.append(f"| {name[:60]} | {role} | {calls:g} | {sum(times) / len(times):.1f} | {sum(times) / steps:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sota.tools.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. model=tiny measure.iterations=5")
    parser.add_argument("--modes", default=None,
                        help="comma-separated measure modes (default: official,strict; a measure=X override "
                             "alone selects X)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated decoding backends (default: the config's generate.backend)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    parser.add_argument("--hf-generate", action=argparse.BooleanOptionalAction, default=True,
                        help="also time transformers' plain generate (slow for eager quantized models)")
    parser.add_argument("--profile", default=None, metavar="BACKEND",
                        help="print the kernels of one decode step of this static backend (its step without "
                             "the CUDA graph, under torch.profiler), 20 steps after a 100-token prompt")
    parser.add_argument("--from", dest="from_dir", type=Path, default=None, metavar="EXPORT",
                        help="measure the model of an export directory (python -m sota.export), loaded in this "
                             "fresh process: the peak memory is what a user who loads it sees")
    parser.add_argument("--int4-kernel", default=None, choices=int4.KERNELS,
                        help="with --from: the kernel its compact int4 layers are packed for, instead of the one the "
                             "export names (without --from: the quant.int4_kernel override)")
    parser.add_argument("--memory-trace", type=Path, default=None, metavar="JSON",
                        help="CUDA: record every allocation from loading to the end of the measurements, and write "
                             "the blocks alive at the peak, grouped by the code that allocated them")
    parser.add_argument("--summarize", nargs="+", type=Path, default=None, metavar="JSON",
                        help="print one table of earlier --out files (one row per file and backend) and exit")
    args = parser.parse_intermixed_args(argv)
    if args.summarize:
        missing = [str(p) for p in args.summarize if not p.is_file()]
        if missing:
            parser.error(f"--summarize: no such file: {', '.join(missing)}")
        print(summarize(args.summarize))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    exported = None
    if args.from_dir is not None:
        from sota.export import read

        try:
            exported = read.spec(args.from_dir)     # before anything is built: an export this code reads
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--from: {e}")
    if args.int4_kernel is not None and args.from_dir is None:
        parser.error("--int4-kernel replaces an export's kernel (with --from); a built model takes the "
                     "quant.int4_kernel override")
    picked = [m for m in (_selects_measure(o) for o in args.overrides) if m]
    modes = args.modes.split(",") if args.modes else (picked[-1:] or list(DEFAULT_MODES))
    from sota.measure import latency, memory_trace
    from sota.measure.protocol import MODES
    from sota.models.decoding import BACKENDS

    bad = [m for m in modes if m not in MODES]
    if bad:
        parser.error(f"--modes: unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")

    configs = {mode: compose(args.overrides, mode) for mode in modes}
    first = next(iter(configs.values()))
    backends = args.backends.split(",") if args.backends else [str(first.generate.get("backend", "eager"))]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        parser.error(f"--backends: unknown backend(s) {', '.join(bad)}; choose from {', '.join(BACKENDS)}")
    if args.profile is not None and args.profile not in BACKENDS[1:]:
        parser.error(f"--profile: {args.profile!r} is not a static backend; choose from {', '.join(BACKENDS[1:])}")
    device = pick_device(first)
    for cfg in configs.values():
        check(cfg, device)

    from sota.config import as_dict
    from sota.models.footprint import footprint
    from sota.utils.provenance import device_name, versions

    t0 = time.perf_counter()

    def progress(message: str) -> None:
        # stderr, as each phase ends: a run stopped by a time limit still says how far it got
        print(f"[bench +{time.perf_counter() - t0:.1f} s] {message}", file=sys.stderr, flush=True)

    if args.memory_trace is not None:
        if not device.startswith("cuda"):
            parser.error(f"--memory-trace records the CUDA allocator; the device here is {device}")
        memory_trace.start()
    torch.manual_seed(int(first.get("seed", 0)))
    if args.from_dir is not None:
        model, record = read.load(args.from_dir, device, args.int4_kernel), exported["compression"]
    else:
        model, record = build(first, device)
    build_s = time.perf_counter() - t0
    sizes = footprint(model)
    progress(f"model {'loaded' if args.from_dir else 'built and compressed'} "
             f"({sizes['weight_bytes'] / 2**20:.1f} MiB of weights)")
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        for mode, cfg in configs.items():
            r = results[f"{backend}/{mode}"] = latency.measure(model, cfg.measure, device, backend=backend)
            progress(f"{backend}/{mode}: TTFT {_fmt(r['ttft_ms'], 2)} ms, TPOT {_fmt(r['tpot_ms'], 2)} ms")
    trace = memory_trace.finish(args.memory_trace, device) if args.memory_trace is not None else None
    llm_bytes = footprint(model.llm)["weight_bytes"]
    hf_ms = hf_generate_ms_per_token(model, device) if args.hf_generate else None
    if args.hf_generate:
        progress(f"transformers generate: {_fmt(hf_ms, 2)} ms/token")
    bandwidth = copy_bandwidth_gbs(device)
    floor_ms = llm_bytes / (bandwidth * 1e9) * 1000 if bandwidth else None

    what = f"export {args.from_dir}" if args.from_dir else (" ".join(args.overrides) or "(defaults)")
    print(f"# {device_name(device)}: {what}\n")
    print(table(results))
    print(f"\ntransformers generate: {_fmt(hf_ms, 2)} ms/token; LLM weights {llm_bytes / 2**20:.1f} MiB"
          + (f"; copy bandwidth {bandwidth:.0f} GB/s -> floor {floor_ms:.3f} ms/token" if bandwidth else ""))
    for key, r in results.items():
        for note in r.get("notes") or []:
            print(f"- {key}: {note}")
    if trace is not None:
        print(f"\n## memory at the peak ({args.memory_trace})\n{memory_trace.table(trace)}")
    profile = profile_decode(model, args.profile, device) if args.profile else None
    if profile:
        print(f"\n## decode step kernels ({args.profile}, without its graph, one after another, 20 steps)\n{profile}")
    if args.out:
        payload = {
            "overrides": list(args.overrides), "from": str(args.from_dir) if args.from_dir else None,
            "device": device_name(device), "build_s": build_s,
            "model": sizes, "llm_weight_bytes": llm_bytes, "compression": record,
            "int4_kernels": int4.kernels_in(model),
            "hf_generate_ms_per_token": hf_ms, "copy_bandwidth_gbs": bandwidth, "floor_ms_per_token": floor_ms,
            "measure": {mode: as_dict(cfg.measure) for mode, cfg in configs.items()},
            "results": results, "profile": profile, "memory_trace": trace, "versions": versions(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
