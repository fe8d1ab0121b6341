"""Connectors from encoder frames to LLM embeddings over fixed windows of frames, so the audio-token rate is a
configurable compression knob: SALMONN's window-level Q-Former (learned queries attend to each window) and the
window projector of SLAM-ASR and LLaVA (each window's frames, concatenated, through a two-layer MLP)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel


def window_geometry(frames_per_second: float, window_s: float, stride_s: float) -> tuple[int, int]:
    """Window and stride in encoder frames (SALMONN rounds 0.333 s at 50 frames/s to 17 frames)."""
    kernel = max(1, round(window_s * frames_per_second))
    stride = max(1, round(stride_s * frames_per_second))
    return kernel, stride


def count_windows(num_frames: torch.Tensor | int, total_frames: int, kernel: int, stride: int) -> torch.Tensor:
    """Windows that contain real audio for clips of `num_frames` valid frames, out of `total_frames`.

    Windows cover every frame: the last one is zero-padded. (SALMONN's unfold drops the tail instead, 4 of
    Whisper's 1500 frames, giving 88 windows where this gives 89; with a 5 s context the same rule would drop
    the last 0.24 s of speech.)
    """
    n = torch.as_tensor(num_frames).clamp(max=total_frames)
    return _ceil_windows(n, kernel, stride)


def _ceil_windows(n: torch.Tensor | int, kernel: int, stride: int) -> torch.Tensor:
    n = torch.as_tensor(n)
    return torch.div((n - kernel).clamp(min=0) + stride - 1, stride, rounding_mode="floor") + 1


class WindowConnector(nn.Module):
    """Windows of encoder frames -> `num_queries` tokens each -> LLM embeddings, with a padding mask.
    Subclasses map the frames of the windows that hold audio ([N, k, D]) to tokens ([N, num_queries, H])."""

    def __init__(self, in_dim: int, *, frames_per_second: float, window_s: float, stride_s: float,
                 num_queries: int, trim_padding: bool) -> None:
        super().__init__()
        if window_s <= 0 or stride_s <= 0:
            raise ValueError(f"connector.window_s and connector.stride_s must be > 0, got {window_s}, {stride_s}")
        if stride_s > window_s:
            raise ValueError(f"connector.stride_s ({stride_s}) must be <= connector.window_s ({window_s}): "
                             "a larger stride skips audio between windows")
        if num_queries < 1:
            raise ValueError(f"connector.num_queries must be >= 1, got {num_queries}")
        self.kernel, self.stride = window_geometry(frames_per_second, window_s, stride_s)
        self.num_queries = num_queries
        self.trim_padding = trim_padding
        self.norm = nn.LayerNorm(in_dim)

    def tokens_for(self, num_frames: torch.Tensor | int, total_frames: int) -> torch.Tensor:
        """Audio tokens sent to the LLM for clips of `num_frames` valid frames."""
        windows = count_windows(num_frames, total_frames, self.kernel, self.stride)
        if not self.trim_padding:
            windows = torch.full_like(windows, int(_ceil_windows(total_frames, self.kernel, self.stride)))
        return windows * self.num_queries

    def tokens(self, windows: torch.Tensor) -> torch.Tensor:
        """The frames of the windows that hold audio [N, k, D] -> their tokens [N, num_queries, H]."""
        raise NotImplementedError(f"{type(self).__name__} must map windows to tokens")

    def forward(self, hidden: torch.Tensor, num_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [B, T, D], num_frames [B] -> (embeds [B, W*Q, out_dim], mask [B, W*Q] bool)."""
        b, t, d = hidden.shape
        if t < self.kernel:
            raise ValueError(f"encoder output has {t} frames, fewer than one connector window ({self.kernel})")
        full = int(_ceil_windows(t, self.kernel, self.stride))
        pad = (full - 1) * self.stride + self.kernel - t
        windows = F.pad(self.norm(hidden), (0, 0, 0, pad)).unfold(1, self.kernel, self.stride)  # [B, W, D, k]
        w = windows.shape[1]
        windows = windows.permute(0, 1, 3, 2)  # [B, W, k, D]
        valid = self.tokens_for(num_frames.cpu(), t).to(hidden.device) // self.num_queries
        win_mask = torch.arange(w, device=hidden.device)[None, :] < valid[:, None]  # [B, W]
        # Only windows with audio go through the connector: trimming padding saves its compute too.
        out = self.tokens(windows[win_mask])  # [N, k, D] -> [N, Q, H]
        embeds = out.new_zeros(b, w, self.num_queries, out.shape[-1])
        embeds[win_mask] = out
        embeds = self.proj(embeds.reshape(b, w * self.num_queries, -1))
        mask = win_mask.repeat_interleave(self.num_queries, dim=1)
        width = int(mask.sum(1).max())
        return embeds[:, :width], mask[:, :width]


class WindowQFormer(WindowConnector):
    """SALMONN's connector: `num_queries` learned queries cross-attend to each window's frames."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        frames_per_second: float,
        window_s: float = 0.333333,
        stride_s: float = 0.333333,
        num_queries: int = 1,
        layers: int = 2,
        hidden_size: int = 768,
        heads: int = 12,
        intermediate_size: int = 3072,
        dropout: float = 0.1,
        trim_padding: bool = True,
    ) -> None:
        super().__init__(in_dim, frames_per_second=frames_per_second, window_s=window_s, stride_s=stride_s,
                         num_queries=num_queries, trim_padding=trim_padding)
        qcfg = Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate_size,
            encoder_hidden_size=in_dim,
            cross_attention_frequency=1,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        self.qformer = Blip2QFormerModel(qcfg)
        self.query = nn.Parameter(torch.randn(1, num_queries, hidden_size) * qcfg.initializer_range)
        self.proj = nn.Linear(hidden_size, out_dim)

    def tokens(self, windows: torch.Tensor) -> torch.Tensor:
        return self.qformer(query_embeds=self.query.expand(windows.shape[0], -1, -1),
                            encoder_hidden_states=windows).last_hidden_state


class WindowProjector(WindowConnector):
    """SLAM-ASR's and LLaVA's connector: each window's frames, concatenated, through a two-layer MLP (one token
    per window). Nothing has to learn where to look, so it learns from far fewer examples than a Q-Former."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        frames_per_second: float,
        window_s: float = 0.1,
        stride_s: float = 0.1,
        hidden_size: int = 2048,
        dropout: float = 0.0,
        trim_padding: bool = True,
    ) -> None:
        super().__init__(in_dim, frames_per_second=frames_per_second, window_s=window_s, stride_s=stride_s,
                         num_queries=1, trim_padding=trim_padding)
        if stride_s != window_s:
            raise ValueError(f"connector.stride_s ({stride_s}) must equal connector.window_s ({window_s}) for the "
                             "projector: it concatenates each window's frames, which overlapping windows repeat")
        self.mlp = nn.Sequential(nn.Linear(self.kernel * in_dim, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_size, hidden_size))
        self.proj = nn.Linear(hidden_size, out_dim)

    def tokens(self, windows: torch.Tensor) -> torch.Tensor:
        return self.mlp(windows.flatten(1))[:, None]


def max_audio_tokens(context_s: float, frames_per_second: float, window_s: float, stride_s: float,
                     num_queries: int) -> int:
    """Audio tokens of a full-context clip: sizes static caches and reports the token budget."""
    total = int(math.floor(context_s * frames_per_second))
    kernel, stride = window_geometry(frames_per_second, window_s, stride_s)
    return int(_ceil_windows(total, kernel, stride)) * num_queries
