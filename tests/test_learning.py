"""The model learns: a seeded tiny audio-LLM trained on a task that only the audio can answer must transcribe
held-out clips after a fixed number of steps. A training pipeline that breaks learning (the answer-only loss
mask, the audio scatter, the connector's windows) fails it, and a deliberately broken mask is shown to."""

import jiwer
import numpy as np
import pytest
import torch

from sota.models.audio_llm import IGNORE, AudioLLM
from sota.models.connector import WindowQFormer
from sota.models.encoder import AudioEncoder
from sota.models.llm import tiny_llama

from conftest import SMALL_WHISPER

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
PROMPTS = {"asr": "<AudioHere> transcribe the speech"}
FRAMES_PER_WORD = 10          # 0.2 s at 50 frames/s: one connector window per word
STEPS, BATCH, WORDS_PER_CLIP = 300, 32, 3
BOUND_WER = 0.10  # measured 0.000 (loss 0.008); labels one token early: 0.333; an audio-blind model: ~0.9


def make_model() -> AudioLLM:
    torch.manual_seed(0)
    encoder = AudioEncoder(path=None, config=SMALL_WHISPER, context_s=1.0)
    llm, tok = tiny_llama(WORDS + ["transcribe", "the", "speech"], hidden_size=64, layers=1, heads=4, kv_heads=2,
                          intermediate_size=128)
    con = WindowQFormer(encoder.out_dim, 64, frames_per_second=50, window_s=0.2, stride_s=0.2, hidden_size=64,
                        heads=4, intermediate_size=128, layers=1, dropout=0.0)
    return AudioLLM(encoder, con, llm, tok, PROMPTS)


class Speech:
    """Encoder features of spoken digit sequences: each word is a fixed random frame pattern plus noise."""

    def __init__(self, dim: int) -> None:
        self.patterns = torch.randn(len(WORDS), FRAMES_PER_WORD, dim, generator=torch.Generator().manual_seed(1))

    def batch(self, rng: np.random.Generator, n: int) -> dict:
        said = rng.integers(0, len(WORDS), (n, WORDS_PER_CLIP))
        feats = self.patterns[torch.as_tensor(said)].flatten(1, 2)  # [n, words * frames, D]
        feats = feats + 0.3 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
        return {"features": feats, "num_frames": torch.full((n,), feats.shape[1]), "tasks": ["asr"] * n,
                "answers": [" ".join(WORDS[i] for i in row) for row in said]}


def train_and_score(model: AudioLLM) -> tuple[float, float]:
    speech = Speech(model.encoder.out_dim)
    rng = np.random.default_rng(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    model.train()
    for _ in range(STEPS):
        loss = model(speech.batch(rng, BATCH))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    held_out = speech.batch(np.random.default_rng(123), 64)
    said = model.generate({k: v for k, v in held_out.items() if k != "answers"}, max_new_tokens=8)
    return float(loss), float(jiwer.wer(held_out["answers"], said))


def test_a_seeded_tiny_model_learns_to_transcribe_what_only_the_audio_says():
    loss, wer = train_and_score(make_model())
    print(f"final loss {loss:.3f}, held-out WER {wer:.3f}")
    assert loss < 0.2 and wer <= BOUND_WER, f"learning broke: final loss {loss:.3f}, held-out WER {wer:.3f}"


def test_the_learning_test_fails_when_the_answer_mask_is_broken(monkeypatch):
    # Labels one token early (the answer's first token, and so on, predicted one step too soon): the same run
    # no longer transcribes.
    assemble = AudioLLM.assemble

    def shifted(self, *args, **kwargs):
        out = assemble(self, *args, **kwargs)
        lab = out["labels"]
        out["labels"] = torch.cat([lab[:, 1:], torch.full_like(lab[:, :1], IGNORE)], 1)
        return out

    monkeypatch.setattr(AudioLLM, "assemble", shifted)
    loss, wer = train_and_score(make_model())
    print(f"broken mask: final loss {loss:.3f}, held-out WER {wer:.3f}")
    assert wer > BOUND_WER
