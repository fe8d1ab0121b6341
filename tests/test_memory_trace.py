"""bench --memory-trace: the allocator's events replayed to the peak, and the blocks alive there grouped by the
code that allocated them."""

import json

import pytest

from sota.measure import memory_trace

MIB = 2 ** 20


def frame(path, line, name):
    return {"filename": f"/env/lib/python3.12/site-packages/{path}", "line": line, "name": name}


WEIGHTS = [frame("sota/export/read.py", 10, "load"), frame("runpy.py", 1, "run")]
WORKSPACE = [frame("transformers/models/llama/modeling_llama.py", 99, "forward"),
             frame("torch/nn/modules/module.py", 1, "_call_impl")]
SCRATCH = [frame("sota/models/decoding.py", 5, "step")]


def test_the_blocks_alive_at_the_peak_are_grouped_by_where_they_were_allocated():
    events = [
        {"action": "alloc", "addr": 1, "size": 40 * MIB, "frames": WEIGHTS},
        {"action": "alloc", "addr": 2, "size": 20 * MIB, "frames": WEIGHTS},
        {"action": "alloc", "addr": 3, "size": 50 * MIB, "frames": SCRATCH},     # a transient, freed
        {"action": "free_requested", "addr": 3, "size": 50 * MIB},
        {"action": "free_completed", "addr": 3, "size": 50 * MIB},
        {"action": "alloc", "addr": 4, "size": 32 * MIB, "frames": WORKSPACE},
        {"action": "alloc", "addr": 5, "size": 1 * MIB, "frames": SCRATCH},      # the peak: 93 MiB
        {"action": "free_completed", "addr": 5, "size": 1 * MIB},
        {"action": "segment_alloc", "addr": 9, "size": 64 * MIB},                  # reserved, not allocated
    ]
    report = memory_trace.live_at_peak(events)
    assert report["peak_allocated_mib"] == 110.0      # 40 + 20 + 50 before the transient was freed
    rows = report["live_at_peak"]
    assert [(r["mib"], r["blocks"]) for r in rows] == [(60.0, 2), (50.0, 1)]
    assert rows[0]["where"] == ["sota/export/read.py:10 load"] and rows[0]["largest_mib"] == 40.0
    later = memory_trace.live_at_peak(events[:3] + events[4:5] + [
        {"action": "alloc", "addr": 6, "size": 80 * MIB, "frames": WORKSPACE}])
    assert later["peak_allocated_mib"] == 140.0
    assert later["live_at_peak"][0]["where"][0] == "transformers/models/llama/modeling_llama.py:99 forward"
    table = memory_trace.table(later)
    assert "| 80.0 | 1 | 80.0 | transformers/models/llama/modeling_llama.py:99 forward <- torch/nn/modules" in table


def test_a_block_without_a_known_frame_still_counts():
    report = memory_trace.live_at_peak([{"action": "alloc", "addr": 1, "size": MIB, "frames": []}])
    assert report["live_at_peak"][0]["mib"] == 1.0 and "no Python frame" in report["live_at_peak"][0]["where"][0]


def test_bench_refuses_a_memory_trace_off_cuda(capsys):
    from sota.tools import bench

    with pytest.raises(SystemExit):
        bench.main(["model=tiny", "measure.device=cpu", "--memory-trace", "x.json"])
    assert "--memory-trace records the CUDA allocator; the device here is cpu" in capsys.readouterr().err


@pytest.mark.gpu
def test_bench_traces_the_peak_of_a_cuda_measurement(tmp_path, capsys):
    from test_run import RANDOM_ENCODER

    from sota.tools import bench

    trace = tmp_path / "peak.json"
    assert bench.main(["model=tiny", *RANDOM_ENCODER, "measure=official", "measure.iterations=2", "measure.warmup=1",
                       "generate.max_new_tokens=4", "--no-hf-generate", "--memory-trace", str(trace),
                       "--out", str(tmp_path / "bench.json")]) == 0
    report = json.loads(trace.read_text())
    official = json.loads((tmp_path / "bench.json").read_text())["results"]["eager/official"]
    # the official peak is never reset: the replayed peak is the same allocator's high-water mark
    assert report["peak_allocated_mib"] == pytest.approx(official["peak_memory_mb"], rel=0.05)
    assert sum(r["mib"] for r in report["live_at_peak"]) == pytest.approx(report["peak_allocated_mib"], abs=0.01)
    assert any("sota/" in w for r in report["live_at_peak"] for w in r["where"])
    assert "## memory at the peak" in capsys.readouterr().out
