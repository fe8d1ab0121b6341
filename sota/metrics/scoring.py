"""Scores a set of predictions per task: ASR rows get WER/CER, AAC rows caption metrics."""

from __future__ import annotations

from typing import Any


def score_predictions(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`rows` hold `task`, `prediction` and `references`; returns flat metrics with slashed names.

    A task with no rows reports null metrics, so results.json keeps the same keys whatever was evaluated.
    """
    from sota.metrics.aac import caption_scores
    from sota.metrics.asr import asr_scores

    metrics: dict[str, Any] = {"asr/wer": None, "aac/cider_d": None, "aac/spider": None}
    asr = [r for r in rows if r["task"] == "asr" and r.get("references")]
    if asr:
        scores = asr_scores([r["references"][0] for r in asr], [r["prediction"] for r in asr])
        metrics.update(scores.metrics)
        for r, detail in zip(asr, scores.rows):
            r["wer"] = detail.get("wer") if isinstance(detail, dict) else getattr(detail, "wer", None)
    aac = [r for r in rows if r["task"] == "aac" and r.get("references")]
    if len(aac) >= 2:  # CIDEr-D's document frequencies need at least two clips
        metrics.update(caption_scores([r["prediction"] for r in aac], [r["references"] for r in aac]))
    unscored = sum(1 for r in rows if not r.get("references"))
    if unscored:
        metrics["unscored"] = unscored
        metrics["note"] = (f"{unscored} of {len(rows)} clips have no reference transcript/caption: they are "
                           "predicted (predictions.csv) but not scored")
    return metrics
