"""Efficiency measurement: the timer, the official and strict modes (one code path), validation, the bench
CLI; GPU-tier tests check the CUDA clocks against kernels of known length."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sota.errors import ConfigError
from sota.measure import clips, latency, memory, protocol
from sota.measure.timer import CUDA_EVENTS, PERF_COUNTER, WALL_NO_SYNC, Timer, percentile, summarize

from test_model import batch_for, small_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def mcfg(mode="strict", **kw):
    base = {"mode": mode, "device": None, "warmup": 1, "iterations": 3, "clip_s": 3.0, "real_clips": 2,
            "e2e_repeats": 1, "max_new_tokens": 3, "seed": 0, "task": None,
            "cpu_threads": 1}
    return {**base, **kw}


def waves(seconds, task="asr"):
    return [{"wave": np.random.default_rng(i).standard_normal(int(s * 16000)).astype(np.float32) * 0.1,
             "task": task} for i, s in enumerate(seconds)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return small_model(context_s=2.0).eval()


def test_strict_mode_drops_the_decoders_that_evaluation_built(model):
    """Evaluation's static caches (its batch sizes) are not part of the batch-1 model strict mode measures;
    official mode, which never resets its peak, keeps them."""
    evaluation = model.static_decoders("static", 3)
    evaluation.get(4, 8, 3)
    latency.measure(model, mcfg("official", iterations=1), "cpu", backend="static")
    assert model.static_decoders("static", 3) is evaluation
    latency.measure(model, mcfg("strict", iterations=1, real_clips=0), "cpu", backend="static")
    after = model.static_decoders("static", 3)
    assert after is not evaluation and [d.batch_size for d in after.all()] == [1]
    model.forget_compiled()


# ---------------------------------------------------------------------------------------------- timer

def test_summary_statistics():
    s = summarize([float(x) for x in range(1, 11)])
    assert (s.median, s.mean, s.min, s.n) == (5.5, 5.5, 1.0, 10)
    assert s.p90 == pytest.approx(float(np.percentile(np.arange(1, 11), 90)))
    assert percentile([3.0], 90) == 3.0
    assert summarize([]).as_dict() == {"median": None, "p90": None, "mean": None, "min": None, "n": 0}


def test_cpu_timer_times_a_region_with_perf_counter():
    timer = Timer("cpu", sync=False)
    assert timer.kind == PERF_COUNTER
    for _ in range(3):
        with timer.iteration():
            with timer.region("outer"):
                with timer.region("sleep"):
                    time.sleep(0.02)
    s = timer.stats("sleep")
    assert s.n == 3 and 19.0 <= s.median < 200.0
    assert timer.stats("outer").median >= s.median
    with pytest.raises(RuntimeError, match="not started"):
        timer.stop("never")


def test_cuda_timer_is_refused_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Timer("cuda")


# ---------------------------------------------------------------------------------------------- modes

@pytest.mark.parametrize("mode", ["official", "strict"])
def test_each_mode_produces_every_key_on_cpu(model, mode):
    out = latency.measure(model, mcfg(mode), "cpu", real_batches=waves([0.7, 1.5]))
    assert set(out) == set(protocol.KEYS)
    json.dumps(out)
    assert out["mode"] == mode and out["backend"] == "eager" and out["timer"] == PERF_COUNTER
    assert out["device"].startswith("cpu")
    assert set(out["breakdown_ms"]) == set(protocol.BREAKDOWN) and all(v > 0 for v in out["breakdown_ms"].values())
    assert out["ttft_ms"] > 0 and out["tpot_ms"] > 0 and out["ttft_p90_ms"] >= out["ttft_ms"]
    assert out["ttft_ms"] >= out["breakdown_ms"]["encoder"]
    assert (out["iterations"], out["warmup"], out["clip_s"]) == (3, 1, 3.0)
    # the 3 s protocol clip is heard whole, in two chunks of the 2 s context
    assert out["clip_audio_s"] == 3.0 and any("encoded in 2 chunks" in n for n in out["notes"])
    assert out["audio_tokens"] > 0 and out["prompt_tokens"] > out["audio_tokens"]
    assert out["peak_memory_mb"] > 0 and out["peak_rss_mb"] > 0 and out["peak_reserved_mb"] is None
    assert out["nvml_memory_mb"] is None
    if mode == "official":
        assert out["e2e_ms"] is None and out["rtf"] is None and out["real_clips"] == 0
        assert "official protocol" in out["notes"][0]
    else:
        assert out["e2e_ms"] > 0 and 1 <= out["e2e_tokens"] <= 3
        assert out["rtf"] == pytest.approx(out["e2e_ms"] / 1000 / 3.0)
        assert out["real_clips"] == 2 and out["real_audio_s"] == pytest.approx((0.7 + 1.5) / 2)
        assert out["real_ttft_ms"] > 0 and out["real_tpot_ms"] > 0 and out["real_e2e_ms"] > 0 and out["real_rtf"] > 0


def test_official_and_strict_share_the_measurement_code(model, monkeypatch):
    """The same region functions run the same number of times in both modes; only the protocol points
    (clock sync, peak reset, extra clips, end-to-end, NVML) differ."""
    calls: dict[str, dict[str, int]] = {}
    current = {"mode": None}
    for name in ("_features", "_encode", "_connect", "_prefill", "_decode"):
        real = getattr(latency, name)

        def wrapped(*a, _real=real, _name=name, **k):
            calls.setdefault(current["mode"], {}).setdefault(_name, 0)
            calls[current["mode"]][_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(latency, name, wrapped)
    timers = []

    class Spy(Timer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            timers.append((current["mode"], self.sync))

    monkeypatch.setattr(latency, "Timer", Spy)
    for mode in ("official", "strict"):
        current["mode"] = mode
        latency.measure(model, mcfg(mode, warmup=2, iterations=4, real_clips=0, e2e_repeats=1), "cpu")
    for name in ("_encode", "_connect", "_prefill", "_decode"):
        assert calls["official"][name] == calls["strict"][name] == 6, name
    # strict additionally featurizes the clip for its end-to-end answers (one warm-up + one timed)
    assert calls["official"]["_features"] == 6 and calls["strict"]["_features"] == 8
    assert {s for m, s in timers if m == "official"} == {False}
    assert {s for m, s in timers if m == "strict"} == {True}
    off, strict = protocol.for_mode("official"), protocol.for_mode("strict")
    differ = {f.name for f in dataclasses.fields(off) if getattr(off, f.name) != getattr(strict, f.name)}
    assert differ == {"mode", "sync", "reset_peak", "real_clips", "e2e", "nvml"}
    assert (off.sync, off.reset_peak, strict.sync, strict.reset_peak) == (False, False, True, True)


def test_prefill_and_decode_regions_follow_greedy_generation(model):
    clip = clips.noise_clip(model, 1.0, "asr")
    with torch.no_grad():
        inputs, frames = latency._features(model, clip, "cpu")
        embeds, mask = latency._connect(model, latency._encode(model, inputs), frames)
        state = latency._prefill(model, embeds, mask, ["asr"])
        first = int(state["token"])
        second = latency._decode(model, state)
        ref = model.assemble(embeds, mask, ["asr"])
        out = model.llm.generate(inputs_embeds=ref["inputs_embeds"], attention_mask=ref["attention_mask"],
                                 max_new_tokens=2, min_new_tokens=2, do_sample=False, num_beams=1,
                                 pad_token_id=model.tokenizer.pad_token_id)
    assert out[0, -2:].tolist() == [first, int(second)]


def test_encoder_runs_even_for_collated_batches_and_cached_features_are_refused(model):
    b = batch_for(model, [1.0, 0.5], ["asr", "aac"])
    got = clips.clips_from_batches(model, [b])
    assert [c.task for c in got] == ["asr", "aac"] and [c.seconds for c in got] == [1.0, 0.5]
    assert got[0].encoder_inputs["mel"].shape[0] == 1
    with torch.no_grad():
        feats = model.encoder(**b["encoder_inputs"])
    with pytest.raises(ValueError, match="encoder must run in the timed region"):
        clips.clips_from_batches(model, [{"features": feats, "num_frames": b["num_frames"], "tasks": ["asr"]}])


def test_real_clips_picks_spread_samples():
    class Sample:
        def __init__(self, i):
            self.task, self.id = ("asr" if i < 5 else "aac"), f"c{i}"

    class Data:
        samples = [Sample(i) for i in range(10)]
        waves = [np.zeros(16000 * (i + 1), np.float32) for i in range(10)]

    picked = clips.real_clips(Data(), 3)
    assert [p["id"] for p in picked] == ["c0", "c4", "c9"] and {p["task"] for p in picked} == {"asr", "aac"}
    assert clips.real_clips(Data(), 0) == []


def test_mode_none_returns_the_keys_with_nulls(model):
    out = latency.measure(model, {"mode": "none"}, "cpu")
    assert set(out) == set(protocol.KEYS) and out["mode"] == "none" and out["ttft_ms"] is None
    assert "not measured" in out["notes"][0]


def test_nvml_is_optional(monkeypatch):
    import sys

    assert memory.nvml_process_memory_mb("cpu") == (None, None)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if nvidia-ml-py were absent
    value, note = memory.nvml_process_memory_mb("cuda:0")
    assert value is None and "nvidia-ml-py" in note


# ---------------------------------------------------------------------------------------------- validation

def test_validate_rejects_cuda_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out: list[str] = []
    protocol.validate(mcfg(device="cuda"), "cpu", out)
    assert len(out) == 1 and "measure.device is 'cuda'" in out[0] and "no usable CUDA device" in out[0]
    out = []
    protocol.validate(mcfg(), "cuda", out)  # a GPU run on this machine
    assert len(out) == 1 and "the run's device is 'cuda'" in out[0]
    with pytest.raises(ConfigError, match="no usable CUDA device"):
        latency.measure(None, mcfg("official", device="cuda"), "cpu")  # refused before touching the model
    out = []
    protocol.validate({"mode": "none", "device": "cuda"}, "cpu", out)
    assert out == []


def test_validate_reports_every_problem_at_once():
    out: list[str] = []
    protocol.validate(mcfg(iterations=0, warmup=-1, clip_s=0.0, max_new_tokens=1.5, device="tpu"), "cpu", out)
    text = "\n".join(out)
    for key in ("measure.iterations", "measure.warmup", "measure.clip_s", "measure.max_new_tokens", "measure.device"):
        assert key in text
    out = []
    protocol.validate({"mode": "fast"}, "cpu", out)
    assert out == ["measure.mode must be one of strict, official, none; got 'fast'"]


def test_measure_groups_compose():
    from sota.tools.bench import compose

    strict = compose(["generate=beam"], "strict")
    assert strict.measure.mode == "strict" and strict.measure.max_new_tokens == 200
    assert (strict.measure.warmup, strict.measure.iterations, strict.measure.real_clips) == (3, 20, 8)
    official = compose(["measure.iterations=7"], "official")
    assert (official.measure.mode, official.measure.warmup, official.measure.iterations) == ("official", 10, 7)
    assert official.measure.clip_s == 10.0 and official.measure.real_clips == 0
    assert compose([], "none").measure.mode == "none"
    for mode in ("strict", "official", "none"):
        out: list[str] = []
        protocol.validate(compose([], mode).measure, "cpu", out)
        assert out == [], mode


# ---------------------------------------------------------------------------------------------- bench CLI

def test_bench_cli_measures_tiny_in_both_modes(tmp_path, capsys):
    from sota.tools import bench

    out_file = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    assert bench.main(["model=tiny", "measure.iterations=3", "measure.warmup=1", "measure.e2e_repeats=1",
                       "generate.max_new_tokens=4", "measure.cpu_threads=1", "--backends", "eager,static",
                       "--out", str(out_file)]) == 0
    elapsed = time.perf_counter() - t0
    captured = capsys.readouterr()
    printed = captured.out
    assert "model built and compressed" in captured.err and "static/strict: TTFT" in captured.err  # progress
    assert ("| backend | mode | timer | TTFT ms (p90) | TPOT ms (p90) | e2e ms (tokens) | RTF | peak memory MB |"
            in printed)
    assert "| eager | official |" in printed and "| static | strict |" in printed
    assert "transformers generate:" in printed
    data = json.loads(out_file.read_text())
    assert set(data["results"]) == {"eager/official", "eager/strict", "static/official", "static/strict"}
    for key, r in data["results"].items():
        assert set(r) == set(protocol.KEYS) and r["ttft_ms"] > 0 and r["tpot_ms"] > 0
        assert r["backend"] == key.split("/")[0]
    assert data["results"]["eager/strict"]["e2e_ms"] > 0 and data["results"]["eager/official"]["e2e_ms"] is None
    assert data["hf_generate_ms_per_token"] > 0 and data["copy_bandwidth_gbs"] is None
    assert data["model"]["params_total"] > 0
    assert torch.get_num_threads() == threads  # measure.cpu_threads applies while measuring only
    assert elapsed < 120


def test_bench_profiles_a_static_decode_step_and_skips_transformers_generate(tmp_path, capsys):
    from sota.tools import bench

    out_file = tmp_path / "bench.json"
    assert bench.main(["model=tiny", "measure=strict", "measure.iterations=2", "measure.warmup=1",
                       "measure.e2e_repeats=1", "generate.max_new_tokens=4", "--backends", "static",
                       "--no-hf-generate", "--profile", "static", "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "transformers generate: – ms/token" in printed
    assert "## decode step kernels (static, without its graph, one after another, 20 steps)" in printed
    assert "aten::" in printed
    data = json.loads(out_file.read_text())
    assert data["hf_generate_ms_per_token"] is None and "aten::" in data["profile"]


def test_the_profiled_steps_launch_their_kernels_one_after_another(tmp_path, monkeypatch):
    """A programmatic dependent (the fused step's kernels on a Hopper GPU) starts before the kernel it follows has
    finished and waits for it: profiled so, each kernel's time would hold that wait. The profiled steps run with
    SOTA_TRITON_PDL=0, and only they."""
    from sota.models.decoding import StaticDecoder
    from sota.tools import bench

    monkeypatch.delenv("SOTA_TRITON_PDL", raising=False)
    seen = []
    step = StaticDecoder._decode
    monkeypatch.setattr(StaticDecoder, "_decode", lambda self: seen.append(os.environ.get("SOTA_TRITON_PDL"))
                        or step(self))
    assert bench.main(["model=tiny", "measure=strict", "measure.iterations=2", "measure.warmup=1",
                       "measure.e2e_repeats=1", "generate.max_new_tokens=4", "--backends", "static",
                       "--no-hf-generate", "--profile", "static", "--out", str(tmp_path / "bench.json")]) == 0
    assert seen[-21:] == ["0"] * 21 and None in seen[:-21]    # the warm-up and 20 profiled steps; the bench's own
                                                               # steps before them keep PDL
    assert "SOTA_TRITON_PDL" not in os.environ


def test_profile_roles_split_a_kernel_by_its_place_in_the_layer():
    """A kernel launched 3 times a layer plus once after the layers (the fused step's products and its head) is
    read as three roles a layer and one outside, each averaged over the steps."""
    from sota.tools.bench import launch_roles

    step = [("embed", 1.0)] + [("qkv", 2.0), ("proj", 4.0), ("proj", 5.0), ("proj", 6.0)] * 2 + [("proj", 9.0)]
    rows = launch_roles(step * 3, steps=3, layers=2).splitlines()[2:]
    cells = {tuple(c.strip() for c in row.strip("|").split("|")[:2]): row.split("|")[3:6] for row in rows}
    assert [float(v) for v in cells[("proj", "2 of 3 a layer")]] == [2, 5.0, 10.0]
    assert [float(v) for v in cells[("proj", "outside layers, 1")]] == [1, 9.0, 9.0]
    assert [float(v) for v in cells[("qkv", "1 of 1 a layer")]] == [2, 2.0, 4.0]
    assert "no roles" in launch_roles(step[:-1] * 2 + step, steps=3, layers=2)


def test_critical_shares_count_what_each_kernel_adds_to_the_step():
    """From a graph's kernels as the profiler sees them (start, end): a programmatic dependent that starts early is
    charged only past the end of the kernel before it, a kernel that ends under another nothing, and the time no
    kernel runs nobody; the shares add up to the time some kernel runs."""
    from sota.tools.bench import critical_shares

    kernels = [(5.0, 14.0, "b"), (0.0, 10.0, "a"), (1.0, 3.0, "under a"), (14.0, 20.0, "c"), (30.0, 31.0, "e"),
               (29.0, 30.5, "d")]
    shares = critical_shares(kernels)
    assert shares == [("a", 10.0), ("under a", 0.0), ("b", 4.0), ("c", 6.0), ("d", 1.5), ("e", 0.5)]
    assert sum(us for _, us in shares) == 22.0                  # [0, 20] and [29, 31]


def test_bench_summarizes_several_result_files_one_row_per_backend(tmp_path, capsys):
    from sota.tools import bench

    def result(ttft, tpot):
        return {"ttft_ms": ttft, "tpot_ms": tpot, "peak_memory_mb": 100.0}

    (tmp_path / "a.json").write_text(json.dumps({
        "overrides": ["model=mini", "llm=shape_only", "llm.arch=meta-llama/Llama-3.2-3B-Instruct"],
        "compression": {"quant": {"mode": "int4_weight"}}, "floor_ms_per_token": 0.5,
        "hf_generate_ms_per_token": None, "int4_kernels": {"triton": 196},
        "results": {"eager/official": result(1.0, 9.0), "eager/strict": result(2.0, 10.0),
                    "compiled/strict": result(3.0, 1.0)}}))
    (tmp_path / "b.json").write_text(json.dumps({
        "overrides": ["model=tiny"], "compression": {}, "floor_ms_per_token": None, "hf_generate_ms_per_token": 7.0,
        "results": {"static/official": result(4.0, 2.0)}}))
    assert bench.main(["--summarize", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | quant | backend | TTFT ms | TPOT ms | floor ms | TPOT / floor |")
    assert lines[2:] == [
        "| meta-llama/Llama-3.2-3B-Instruct | int4_weight (triton) | eager | 2.00 | 10.00 | 0.500 | 20.00 | – | 100.0 |",
        "| meta-llama/Llama-3.2-3B-Instruct | int4_weight (triton) | compiled | 3.00 | 1.00 | 0.500 | 2.00 | – | 100.0 |",
        "| tiny | none | static | 4.00 | 2.00 | – | – | 7.00 | 100.0 |"]
    with pytest.raises(SystemExit):
        bench.main(["--summarize", str(tmp_path / "missing.json")])
    assert "--summarize: no such file:" in capsys.readouterr().err


def test_bench_refuses_to_profile_the_eager_backend_before_building(capsys):
    from sota.tools import bench

    with pytest.raises(SystemExit):
        bench.main(["model=tiny", "--profile", "eager"])
    assert "--profile: 'eager' is not a static backend; choose from static, compiled, fused" in capsys.readouterr().err


def test_bench_takes_an_int4_kernel_only_for_an_export(capsys):
    from sota.tools import bench

    with pytest.raises(SystemExit):
        bench.main(["model=tiny", "--int4-kernel", "triton"])
    assert "--int4-kernel replaces an export's kernel (with --from)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--from", "x", "--int4-kernel", "marlin"])
    assert "invalid choice: 'marlin'" in capsys.readouterr().err


def test_bench_from_a_directory_that_is_no_export_says_so_before_building(tmp_path, capsys):
    from sota.tools import bench

    with pytest.raises(SystemExit):
        bench.main(["--from", str(tmp_path)])
    assert f"--from: {tmp_path}: no sota.json; not a directory written by python -m sota.export" in (
        capsys.readouterr().err)


def test_sota_bench_is_the_bench_by_its_short_name(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sota.bench", "--from", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--from: " in proc.stderr and "no sota.json" in proc.stderr


def test_bench_refuses_cuda_without_cuda(monkeypatch):
    from sota.tools import bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA device"):
        bench.main(["model=tiny", "measure.device=cuda"])


# ---------------------------------------------------------------------------------------------- GPU tier

def _sleep_cycles_per_ms() -> float:
    """Calibrate torch.cuda._sleep against the wall clock, with a synchronize on both sides."""
    torch.cuda._sleep(1_000_000)
    torch.cuda.synchronize()
    rates = []
    for _ in range(3):
        cycles = 200_000_000
        t0 = time.perf_counter()
        torch.cuda._sleep(cycles)
        torch.cuda.synchronize()
        rates.append(cycles / ((time.perf_counter() - t0) * 1000))
    return float(np.median(rates))


@pytest.mark.gpu
@needs_cuda
def test_strict_timer_measures_a_kernel_of_known_length_and_official_does_not():
    target_ms = 50.0
    cycles = int(_sleep_cycles_per_ms() * target_ms)
    strict = Timer("cuda", sync=True)
    assert strict.kind == CUDA_EVENTS
    for _ in range(5):
        with strict.iteration():
            with strict.region("kernel"):
                torch.cuda._sleep(cycles)
    assert strict.stats("kernel").median == pytest.approx(target_ms, rel=0.10)
    # A matmul loop timed by events and, separately, by the wall clock around a synchronize.
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1000
    for _ in range(3):
        with strict.iteration():
            with strict.region("matmul"):
                for _ in range(20):
                    a @ a
    assert strict.stats("matmul").median == pytest.approx(wall_ms, rel=0.10)
    # The official clock returns as soon as the kernel is queued.
    official = Timer("cuda", sync=False)
    assert official.kind == WALL_NO_SYNC
    with official.iteration():
        with official.region("kernel"):
            torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    assert official.stats("kernel").median < 0.5 * target_ms


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("mode", ["official", "strict"])
def test_each_mode_on_cuda(mode):
    torch.manual_seed(0)
    model = small_model(context_s=2.0).eval().cuda()
    out = latency.measure(model, mcfg(mode), "cuda", real_batches=waves([0.7, 1.5]))
    assert set(out) == set(protocol.KEYS) and out["device"] == torch.cuda.get_device_name()
    assert out["ttft_ms"] > 0 and out["tpot_ms"] > 0 and out["peak_memory_mb"] > 0 and out["peak_reserved_mb"] > 0
    if mode == "official":
        assert out["timer"] == WALL_NO_SYNC and "no torch.cuda.synchronize()" in out["notes"][0]
        assert "never reset" in out["peak_memory_source"] and out["nvml_memory_mb"] is None
        assert out["warmup_peak_memory_mb"] is None
    else:
        assert out["timer"] == CUDA_EVENTS and "reset after the warm-up" in out["peak_memory_source"]
        assert out["warmup_peak_memory_mb"] > 0
        assert out["e2e_ms"] > 0 and out["real_clips"] == 2 and out["real_peak_memory_mb"] > 0
        try:
            import pynvml  # noqa: F401
        except ImportError:
            assert out["nvml_memory_mb"] is None and any("nvidia-ml-py" in n for n in out["notes"])
        else:
            assert out["nvml_memory_mb"] is None or out["nvml_memory_mb"] > out["peak_memory_mb"]


@pytest.mark.gpu
@needs_cuda
def test_strict_peak_memory_is_reset_but_official_keeps_earlier_allocations():
    torch.manual_seed(0)
    model = small_model(context_s=2.0).eval().cuda()
    big = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")  # 512 MiB, freed before measuring
    del big
    official = latency.measure(model, mcfg("official", iterations=2), "cuda")
    strict = latency.measure(model, mcfg("strict", iterations=2, real_clips=0), "cuda")
    assert official["peak_memory_mb"] >= 512 > strict["peak_memory_mb"]
    # static caches built for an evaluation batch of 64 are dropped before strict mode measures batch 1
    alone = latency.measure(model, mcfg("strict", iterations=2, real_clips=0), "cuda", backend="static")
    model.static_decoders("static", 3).get(64, 256, 3)
    after_eval = latency.measure(model, mcfg("strict", iterations=2, real_clips=0), "cuda", backend="static")
    assert after_eval["peak_memory_mb"] <= alone["peak_memory_mb"] + 1


@pytest.mark.gpu
@needs_cuda
def test_profile_reads_the_graphed_step_by_its_critical_path():
    """The profile's second table times the step as measured, replayed from its graph: the roles' shares add up to
    a positive step, and the profile saw the graph's kernels."""
    from sota.tools.bench import profile_decode

    torch.manual_seed(0)
    model = small_model(context_s=2.0).eval().cuda()
    text = profile_decode(model, "static", "cuda", steps=4)
    graphed = text.split("### in its graph")[1]
    assert "no kernel" not in graphed and "without graphs" not in graphed
    step_us = float(graphed.split("; ")[1].split(" µs a step")[0])
    rows = [r.split("|") for r in graphed.splitlines() if r.startswith("| ") and "role" not in r]
    assert step_us > 0 and sum(float(r[5]) for r in rows) == pytest.approx(step_us, rel=0.02)
