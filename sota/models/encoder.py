"""Audio encoders: a Whisper encoder whose context can be trimmed below stock Whisper's 30 s, and an optional
second transformers audio model whose frames are concatenated to Whisper's (SALMONN's BEATs slot)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from sota.models.hub import resolve_pretrained

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Whisper: 100 mel frames per second, halved by the second convolution.
WHISPER_FRAMES_PER_SECOND = 50
MEL_FRAMES_PER_SECOND = 100


def settings_problems(context_s: Any, dtype: Any = "float32", bucket_s: Any = None, second: Any = None) -> list[str]:
    """Every problem of the encoder group's settings, in one place: config validation reports them all before
    any work starts, and the encoder refuses to be built with any of them."""
    out = []
    number = isinstance(context_s, (int, float)) and not isinstance(context_s, bool)
    frames = context_s * WHISPER_FRAMES_PER_SECOND if number else 0.5
    if not number or context_s <= 0 or abs(frames - round(frames)) > 1e-6:
        out.append(f"encoder.context_s must be a positive multiple of 0.02 s (one Whisper frame), got {context_s}")
    if dtype not in DTYPES:
        out.append(f"encoder.dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if bucket_s is not None:
        ok = isinstance(bucket_s, (int, float)) and not isinstance(bucket_s, bool) and number and 0 < bucket_s <= context_s
        if not ok or abs(bucket_s * WHISPER_FRAMES_PER_SECOND - round(bucket_s * WHISPER_FRAMES_PER_SECOND)) > 1e-6:
            out.append(f"encoder.bucket_s must be null or a multiple of 0.02 s in (0, encoder.context_s="
                       f"{context_s}], got {bucket_s!r}")
        elif second:
            out.append("encoder.bucket_s needs encoder.second=null (the second encoder's frames follow the context)")
    return out


def trim_whisper_context(encoder: WhisperEncoder, context_s: float) -> WhisperEncoder:
    """Keep the first `context_s` seconds of positional embeddings so shorter inputs cost less.

    Stock Whisper always encodes 30 s (1500 frames); attention cost grows with the square of that.
    """
    frames = context_s * WHISPER_FRAMES_PER_SECOND
    if abs(frames - round(frames)) > 1e-6 or frames < 1:
        raise ValueError(f"encoder.context_s must be a positive multiple of 0.02 s, got {context_s}")
    frames = int(round(frames))
    full = encoder.config.max_source_positions
    if frames > full:
        raise ValueError(f"encoder.context_s={context_s} exceeds this Whisper's {full / WHISPER_FRAMES_PER_SECOND} s")
    if frames < full:
        old = encoder.embed_positions
        new = nn.Embedding(frames, old.embedding_dim)
        new.weight.data.copy_(old.weight.data[:frames])
        new.weight.requires_grad_(old.weight.requires_grad)
        encoder.embed_positions = new
        encoder.config.max_source_positions = frames
    return encoder


def load_whisper_encoder(path: str | None, config: dict[str, Any] | None) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """Whisper encoder from pretrained weights (`path`: bundled name, hub id or directory) or a config dict."""
    if path is None:
        if config is None:
            raise ValueError("encoder: set either `path` (pretrained weights) or `config` (random init)")
        wcfg = WhisperConfig(**config)
        return WhisperEncoder(wcfg), WhisperFeatureExtractor(feature_size=wcfg.num_mel_bins)
    from transformers import WhisperModel

    local = resolve_pretrained(path, key="encoder.path")
    model = WhisperModel.from_pretrained(local, local_files_only=True)
    extractor = WhisperFeatureExtractor.from_pretrained(local, local_files_only=True)
    encoder = model.get_encoder()
    del model.decoder
    return encoder, extractor


class SecondEncoder(nn.Module):
    """Any transformers audio model taking raw 16 kHz waveforms; its frames are resampled to Whisper's rate."""

    def __init__(self, path: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if path is not None:
            local = resolve_pretrained(path, key="encoder.second.path")
            self.model = AutoModel.from_pretrained(local, local_files_only=True)
            self.extractor = AutoFeatureExtractor.from_pretrained(local, local_files_only=True)
        elif config is not None:
            cfg = dict(config)
            self.model = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
            self.extractor = None
        else:
            raise ValueError("encoder.second: set `path` or `config`")
        self.out_dim = int(self.model.config.hidden_size)

    def featurize(self, waves: list[np.ndarray], num_samples: int) -> torch.Tensor:
        batch = np.zeros((len(waves), num_samples), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : min(len(w), num_samples)] = w[:num_samples]
        if self.extractor is not None:
            return self.extractor(list(batch), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        return torch.from_numpy(batch)

    def forward(self, inputs: torch.Tensor, frames: int) -> torch.Tensor:
        hidden = self.model(inputs).last_hidden_state  # [B, T2, D2]
        return F.interpolate(hidden.transpose(1, 2), size=frames, mode="nearest").transpose(1, 2)


class AudioEncoder(nn.Module):
    """Waveforms -> frame features [B, T, D] at 50 frames/s; frozen encoders stay in eval mode."""

    frames_per_second = WHISPER_FRAMES_PER_SECOND

    def __init__(
        self,
        path: str | None = "bundled:whisper-tiny.en",
        config: dict[str, Any] | None = None,
        context_s: float = 30.0,
        frozen: bool = True,
        second: dict[str, Any] | None = None,
        dtype: str = "float32",
        bucket_s: float | None = None,
    ) -> None:
        super().__init__()
        problems = settings_problems(context_s, dtype, bucket_s, second)
        if problems:
            raise ValueError("; ".join(problems))
        self.bucket_s = bucket_s
        whisper, self.extractor = load_whisper_encoder(path, config)
        self.whisper = trim_whisper_context(whisper, context_s).to(DTYPES[dtype])
        self.context_s = context_s
        self.second = SecondEncoder(**second) if second else None
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "AudioEncoder":
        # A frozen encoder keeps dropout off even while the rest of the model trains.
        return super().train(mode and not self.frozen)

    @property
    def out_dim(self) -> int:
        return self.whisper.config.d_model + (self.second.out_dim if self.second else 0)

    @property
    def total_frames(self) -> int:
        return self.whisper.config.max_source_positions

    @property
    def num_samples(self) -> int:
        return int(round(self.context_s * SAMPLE_RATE))

    def chunks_for(self, num_samples: int) -> int:
        """Context-length chunks a clip of `num_samples` is encoded in (clips longer than the context)."""
        return max(1, -(-int(num_samples) // self.num_samples))

    def frames_for(self, num_samples: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """Valid encoder frames of clips with `num_samples` samples (the rest is padding). A clip longer than the
        context is encoded in consecutive chunks whose frames follow each other, so its frames keep counting."""
        n = torch.as_tensor(num_samples)
        frames = torch.div(n * self.frames_per_second + SAMPLE_RATE - 1, SAMPLE_RATE, rounding_mode="floor")
        return frames.clamp(min=1)

    def padded_frames(self, num_samples: list[int]) -> int:
        """Frames of the encoder output for a batch of these clips: its longest clip's chunks, whole."""
        return max(self.chunks_for(n) for n in num_samples) * self.total_frames

    def bucket_samples(self, num_samples: int) -> int:
        """Samples a clip is encoded in: with `bucket_s`, a clip shorter than the context is padded only up to
        the next multiple of `bucket_s` (so a 3.1 s clip costs 4 s of encoder work, not 5 s); otherwise, and for
        clips longer than the context, whole context-length chunks. A property of the clip alone, so its
        features are the same in whatever batch it is encoded."""
        if self.bucket_s is None or num_samples >= self.num_samples:
            return self.num_samples
        step = int(round(self.bucket_s * SAMPLE_RATE))
        return min(self.num_samples, max(1, -(-int(num_samples) // step)) * step)

    def featurize(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """CPU-side inputs for `forward`: log-mel features [B, K, mel, frames] of each clip's K context-length
        chunks (K: the batch's most; shorter clips are padded with silent chunks, whose frames lie past
        their valid frames and are never read), and the second encoder's inputs likewise. With `bucket_s`,
        also `mel_frames` [B]: the mel frames each clip is encoded over (the rest of its row is padding)."""
        n = self.num_samples
        if self.bucket_s is not None:
            buckets = [self.bucket_samples(len(w)) for w in waves]
            mel_frames = torch.tensor([b * MEL_FRAMES_PER_SECOND // SAMPLE_RATE for b in buckets])
            if max(buckets) < n:  # every clip fits one chunk: pad to the batch's longest bucket, not the context
                pieces = [np.asarray(w, dtype=np.float32) if len(w) else np.zeros(1, dtype=np.float32) for w in waves]
                mel = self.extractor(pieces, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=max(buckets),
                                     return_tensors="pt").input_features
                return {"mel": mel[:, None], "mel_frames": mel_frames}
        chunks = max(self.chunks_for(len(w)) for w in waves)
        pieces = [np.asarray(w[k * n:(k + 1) * n], dtype=np.float32) for w in waves for k in range(chunks)]
        pieces = [p if p.size else np.zeros(1, dtype=np.float32) for p in pieces]
        mel = self.extractor(pieces, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=n,
                             return_tensors="pt").input_features
        inputs = {"mel": mel.reshape(len(waves), chunks, *mel.shape[1:]),
                  "num_chunks": torch.tensor([self.chunks_for(len(w)) for w in waves])}
        if self.bucket_s is not None:
            inputs["mel_frames"] = mel_frames
        if self.second is not None:
            second = self.second.featurize(pieces, n)
            inputs["second"] = second.reshape(len(waves), chunks, *second.shape[1:])
        return inputs

    def forward(self, mel: torch.Tensor, second: torch.Tensor | None = None,
                mel_frames: torch.Tensor | None = None, num_chunks: torch.Tensor | None = None) -> torch.Tensor:
        """mel [B, K, mel, frames] (or [B, mel, frames], one chunk) -> frames [B, K * total_frames, D].
        `num_chunks` [B] (from `featurize`): each clip's own chunks; the silent ones padding it to K are not
        encoded, and their frames are zero."""
        if mel.dim() == 3:
            mel = mel[:, None]
            second = second[:, None] if second is not None else None
        b, k = mel.shape[:2]
        if num_chunks is not None and k > 1 and bool((num_chunks < k).any()):
            own = (torch.arange(k, device=num_chunks.device)[None] < num_chunks[:, None]).flatten().to(mel.device)
            frames = mel.new_zeros(b * k, self.total_frames, self.out_dim, dtype=next(self.parameters()).dtype)
            frames[own] = self(mel.flatten(0, 1)[own][:, None],
                               second.flatten(0, 1)[own][:, None] if second is not None else None,
                               mel_frames.repeat_interleave(k)[own] if mel_frames is not None else None
                               ).to(frames.dtype)
            return frames.reshape(b, k * self.total_frames, self.out_dim)
        if mel_frames is not None:  # clips within one chunk in their buckets, longer clips in whole chunks
            full = self.total_frames * 2
            short = mel_frames < full
            if short.all():
                return self._bucketed(mel[:, 0], mel_frames)
            if short.any():
                out = torch.zeros(b, k * self.total_frames, self.out_dim, dtype=next(self.parameters()).dtype,
                                  device=mel.device)
                out[short, :self.total_frames] = self._bucketed(mel[short, 0], mel_frames[short])
                out[~short] = self(mel[~short], second).to(out.dtype)
                return out
        dtype = next(self.whisper.parameters()).dtype
        hidden = self.whisper(mel.flatten(0, 1).to(dtype)).last_hidden_state.to(dtype)
        if self.second is not None:
            extra = self.second(second.flatten(0, 1), hidden.shape[1]).to(hidden.dtype)
            hidden = torch.cat([hidden, extra], dim=-1)
        return hidden.reshape(b, k * hidden.shape[1], hidden.shape[2])

    def _bucketed(self, mel: torch.Tensor, mel_frames: torch.Tensor) -> torch.Tensor:
        """Each group of clips with the same bucket through Whisper over that many frames only (transformers'
        WhisperEncoder insists on the full context, so its forward is spelled out: the same modules, in order)."""
        w = self.whisper
        dtype = next(w.parameters()).dtype
        out = mel.new_zeros(mel.shape[0], self.total_frames, self.out_dim, dtype=dtype)
        for frames in mel_frames.unique().tolist():
            rows = (mel_frames == frames).nonzero().flatten().to(mel.device)
            x = F.gelu(w.conv1(mel[rows, :, :frames].to(dtype)))
            x = F.gelu(w.conv2(x)).permute(0, 2, 1)
            x = x + w.embed_positions.weight[: x.shape[1]]
            for layer in w.layers:
                x = layer(x, None)
            # under autocast (bf16-mixed training of a compressed encoder) layer_norm answers in float32
            out[rows, : x.shape[1]] = w.layer_norm(x).to(dtype)
        return out
