"""Shared fixtures: a private cache per test session, a small random Whisper, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sota.compose import compose
from sota.paths import CONF  # noqa: F401 (tests import it from here)

ROOT = CONF.parent

# Triton kernels run one small configuration each in tests (values, not speed): autotuning every candidate at first
# use would spend minutes of the GPU tier compiling. Read when the kernels' modules are imported.
os.environ.setdefault("SOTA_TRITON_AUTOTUNE", "0")

# Random-init encoder small enough for unit tests (the real tiny.en is exercised by run tests).
SMALL_WHISPER = dict(d_model=64, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=80,
                     decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, vocab_size=64,
                     max_source_positions=1500, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                     decoder_start_token_id=1)

# The smallest corpus a run accepts: enough clips for CIDEr-D's document frequencies.
SMALL_CORPUS = [
    "corpus.asr_train=24", "corpus.asr_val=4", "corpus.asr_test=6",
    "corpus.aac_train=12", "corpus.aac_val=4", "corpus.aac_test=4",
    "data.max_eval_samples=8",  # also caps the real-speech set (data.real_test) scored in every run
]


@pytest.fixture(scope="session", autouse=True)
def sota_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests never touch the user's cache; corpora and converted weights are shared within the session."""
    cache = Path(os.environ.get("SOTA_TEST_CACHE") or tmp_path_factory.mktemp("sota-cache"))
    os.environ["SOTA_CACHE"] = str(cache)
    os.environ.setdefault("WANDB_SILENT", "true")
    return cache


@pytest.fixture()
def compose_cfg():
    def _compose(*overrides: str):
        return compose(overrides)

    return _compose
