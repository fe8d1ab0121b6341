"""Accuracy metrics: ASR (WER/CER after Whisper normalization) and audio captioning (aac-metrics)."""

from sota.metrics.aac import AACScores, aac_scores, caption_scores, ptb_like_tokenize
from sota.metrics.asr import ASRScores, asr_scores, normalize

__all__ = [
    "AACScores",
    "ASRScores",
    "aac_scores",
    "asr_scores",
    "caption_scores",
    "normalize",
    "ptb_like_tokenize",
]
