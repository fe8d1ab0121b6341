"""What the data side needs of an audio encoder: the datamodule batches and caches through this protocol, so
`sota.data` knows no model (`sota.models.encoder.AudioEncoder` is the implementation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch


class Featurizer(Protocol):
    """Turns waveforms into encoder inputs, and those into encoder outputs of `out_dim` features per frame."""

    frozen: bool
    context_s: float
    out_dim: int

    def featurize(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]: ...

    def __call__(self, **inputs: Any) -> torch.Tensor: ...

    def chunks_for(self, num_samples: int) -> int: ...

    def frames_for(self, num_samples: list[int]) -> torch.Tensor: ...

    def padded_frames(self, num_samples: list[int]) -> int: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def to(self, device: torch.device | str) -> Any: ...
