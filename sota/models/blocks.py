"""The repeated transformer layers of a model, found by structure: what FSDP shards and regional compilation
compiles one at a time."""

from __future__ import annotations

from torch import nn


def transformer_layers(root: nn.Module) -> list[nn.Module]:
    """The members of every ModuleList named `layers` under `root` (Llama's and Whisper's layer stacks, through
    peft's wrappers), in order."""
    return [child for name, mod in root.named_modules() if isinstance(mod, nn.ModuleList)
            and name.rsplit(".", 1)[-1] == "layers" for child in mod]
