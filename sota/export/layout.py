"""The export directory's names and format version: one place, read by the writer and the loader."""

from __future__ import annotations

FORMAT = "sota-export"
VERSION = 1
SPEC = "sota.json"
LLM = "llm"
ENCODER = "encoder"
CONNECTOR = "connector"
WEIGHTS = "model.safetensors"
INT4 = "int4_compact.safetensors"   # a part's int4 linears in sota's compact layout (export/tensors.py)
CARD = "README.md"
GGUF = "llm.gguf"
PARTS = ("encoder", "connector", "llm")
