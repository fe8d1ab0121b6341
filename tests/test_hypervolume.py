"""The hypervolume of a sweep's frontier: exact on hand-computed cases, in each objective's direction, growing
as points finish, with its reference point checked and recorded."""

import json

import pytest

from sota.sweep.frontier import parse_objective
from sota.sweep.hypervolume import hypervolume, reference_point, summary
from sota.sweep.report import ReportSettings, write_report

WER_MEM = [parse_objective("metrics.asr/wer:min"), parse_objective("efficiency.peak_memory_mb:min")]


def row(pid, wer, mem, cider=None, status="ok"):
    metrics = {"asr/wer": wer} if cider is None else {"asr/wer": wer, "aac/cider_d": cider}
    return {"id": pid, "status": status, "metrics": metrics, "efficiency": {"peak_memory_mb": mem}}


def test_two_objectives_by_hand():
    rows = [row("a", 0.2, 100), row("b", 0.1, 200), row("c", 0.3, 50)]
    # staircase up to (WER 1.0, 300 MB): 50 MB x 0.7 + 100 MB x 0.8 + 100 MB x 0.9
    assert hypervolume(rows, WER_MEM, [1.0, 300]) == pytest.approx(205.0)
    dominated = rows + [row("d", 0.3, 250), row("e", 1.2, 10), row("f", 0.05, 500), row("g", 0.0, 1, status="failed")]
    assert hypervolume(dominated, WER_MEM, [1.0, 300]) == pytest.approx(205.0)  # none of these adds volume


def test_a_maximised_objective_counts_upwards():
    objs = [parse_objective("metrics.aac/cider_d:max"), parse_objective("efficiency.peak_memory_mb:min")]
    rows = [row("a", 0.5, 100, cider=0.8), row("b", 0.5, 200, cider=0.9)]
    # CIDEr-D above 0 up to 300 MB: 100 MB x 0.8 + 100 MB x 0.9
    assert hypervolume(rows, objs, [0.0, 300]) == pytest.approx(170.0)


def test_history_grows_and_the_reference_says_where_it_came_from():
    rows = [row("a", 0.5, 300), row("b", 0.2, 100), row("c", 0.6, 350), row("d", 0.1, 200)]
    hv = summary(rows, WER_MEM, {"metrics.asr/wer": 1.0})
    assert hv["reference"] == [1.0, 350.0] and hv["reference_from_data"] == ["efficiency.peak_memory_mb"]
    values = [h["hypervolume"] for h in hv["history"]]
    assert [h["points"] for h in hv["history"]] == [1, 2, 3, 4]
    assert values == sorted(values) and values[-1] == hv["hypervolume"] > values[0] > 0
    with pytest.raises(ValueError, match="not objectives"):
        reference_point(rows, WER_MEM, {"metrics.aac/cider_d": 0.0})
    with pytest.raises(ValueError, match="not objectives"):
        ReportSettings.from_config(["asr/wer:min", "efficiency.peak_memory_mb:min"],
                                   {"hypervolume_reference": {"efficiency.tpot_ms": 10}})


def test_the_report_writes_it_and_compare_shares_one_reference(tmp_path):
    settings = ReportSettings.from_config(["asr/wer:min", "efficiency.peak_memory_mb:min"],
                                          {"hypervolume_reference": {"asr/wer": 1.0, "efficiency.peak_memory_mb": 300}})
    rows = [row("a", 0.2, 100), row("b", 0.1, 200), row("c", 0.3, 50)]
    paths = write_report(tmp_path, rows, settings, "t")
    hv = json.loads(paths["hypervolume"].read_text())
    assert hv["hypervolume"] == pytest.approx(205.0) and hv["reference_from_data"] == []
    both = [{**r, "sweep": "one"} for r in rows] + [{**row("x", 0.5, 100), "sweep": "two"}]
    hv = json.loads(write_report(tmp_path, both, settings, "t", stem="compare", group_field="sweep")
                    ["hypervolume"].read_text())
    assert hv["groups"]["one"]["hypervolume"] == pytest.approx(205.0)
    assert hv["groups"]["two"]["hypervolume"] == pytest.approx(0.5 * 200)
