"""CTranslate2 Whisper variables mapped onto transformers' Whisper state dict: aliases resolved, int8/int16 weights
dequantized, fused projections split, and every variable accounted for (an unmapped tensor is refused)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sota.formats.ct2 import CT2FormatError

# ctranslate2 common_spec.Activation.GELU: the erf GELU that transformers calls "gelu".
_CT2_ACTIVATION_GELU = 3


class Weights:
    """Resolves aliases, dequantizes int8/int16 weights, and records which CT2 variables were consumed."""

    def __init__(self, variables: dict[str, np.ndarray], aliases: dict[str, str], path: Path) -> None:
        self.variables = variables
        self.aliases = aliases
        self.path = path
        self.used: set[str] = set()

    def resolve(self, name: str) -> str:
        seen = {name}
        while name in self.aliases:
            name = self.aliases[name]
            if name in seen:
                raise CT2FormatError(f"{self.path}: alias cycle through {name!r}")
            seen.add(name)
        return name

    def has(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def raw(self, name: str) -> np.ndarray:
        real = self.resolve(name)
        if real not in self.variables:
            raise CT2FormatError(f"{self.path}: not a Whisper model this converter understands: "
                                 f"variable {name!r} is missing")
        self.used.add(real)
        return self.variables[real]

    def scalar(self, name: str, default: int | None = None) -> int:
        if default is not None and not self.has(name):
            return default
        return int(self.raw(name).reshape(-1)[0])

    def float32(self, name: str) -> np.ndarray:
        value = self.raw(name)
        if value.dtype in (np.int8, np.int16):
            # ctranslate2 quantizes as q = round(w * scale) (scale per output row for int8, global for int16);
            # undo it so the transformers model gets the weights the CT2 runtime effectively uses.
            scale = self.raw(name + "_scale").astype(np.float32)
            flat = value.reshape(value.shape[0], -1).astype(np.float32)
            scale = scale.reshape(-1, 1) if scale.ndim else scale
            return (flat / scale).reshape(value.shape)
        return np.ascontiguousarray(value, dtype=np.float32)

    def unused(self) -> list[str]:
        return sorted(set(self.variables) - self.used)


def count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise CT2FormatError(f"{prefix} layers are not numbered contiguously: {sorted(indices)}")
    return len(indices)


def map_weights(w: Weights, n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Map CT2 Whisper variables to transformers ``WhisperForConditionalGeneration`` state-dict names."""
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = w.float32(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = w.float32(f"{src}/bias")

    def layer_norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = w.float32(f"{src}/gamma")
        sd[f"{dst}.bias"] = w.float32(f"{src}/beta")

    def fused(src: str, parts: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        weight = w.float32(f"{src}/weight")
        bias = w.float32(f"{src}/bias")
        if weight.shape[0] % parts:
            raise CT2FormatError(f"{w.path}: {src}/weight has {weight.shape[0]} rows, not divisible by {parts}")
        return np.split(weight, parts, axis=0), np.split(bias, parts, axis=0)

    def self_attention(dst: str, src: str) -> None:
        layer_norm(f"{dst}_layer_norm", f"{src}/layer_norm")
        (wq, wk, wv), (bq, _bk, bv) = fused(f"{src}/linear_0", 3)
        # transformers' Whisper k_proj has no bias. Dropping it is exact: q.(k + b) adds the same q.b to every key
        # of a query, which softmax cancels (ctranslate2 stores zeros there anyway).
        sd.update({f"{dst}.q_proj.weight": wq, f"{dst}.q_proj.bias": bq, f"{dst}.k_proj.weight": wk,
                   f"{dst}.v_proj.weight": wv, f"{dst}.v_proj.bias": bv})
        linear(f"{dst}.out_proj", f"{src}/linear_1")

    def cross_attention(dst: str, src: str) -> None:
        layer_norm(f"{dst}_layer_norm", f"{src}/layer_norm")
        linear(f"{dst}.q_proj", f"{src}/linear_0")
        (wk, wv), (_bk, bv) = fused(f"{src}/linear_1", 2)
        sd.update({f"{dst}.k_proj.weight": wk, f"{dst}.v_proj.weight": wv, f"{dst}.v_proj.bias": bv})
        linear(f"{dst}.out_proj", f"{src}/linear_2")

    def ffn(dst: str, src: str) -> None:
        layer_norm(f"{dst}.final_layer_norm", f"{src}/layer_norm")
        linear(f"{dst}.fc1", f"{src}/linear_0")
        linear(f"{dst}.fc2", f"{src}/linear_1")

    enc, dec = "model.encoder", "model.decoder"
    linear(f"{enc}.conv1", "encoder/conv1")
    linear(f"{enc}.conv2", "encoder/conv2")
    sd[f"{enc}.embed_positions.weight"] = w.float32("encoder/position_encodings/encodings")
    for i in range(n_enc):
        self_attention(f"{enc}.layers.{i}.self_attn", f"encoder/layer_{i}/self_attention")
        ffn(f"{enc}.layers.{i}", f"encoder/layer_{i}/ffn")
    layer_norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = w.float32("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = w.float32("decoder/position_encodings/encodings")
    for i in range(n_dec):
        self_attention(f"{dec}.layers.{i}.self_attn", f"decoder/layer_{i}/self_attention")
        cross_attention(f"{dec}.layers.{i}.encoder_attn", f"decoder/layer_{i}/attention")
        ffn(f"{dec}.layers.{i}", f"decoder/layer_{i}/ffn")
    layer_norm(f"{dec}.layer_norm", "decoder/layer_norm")

    # transformers ties proj_out to embed_tokens (tie_word_embeddings=True); verify the CT2 model does the same
    # instead of silently dropping a distinct output projection.
    if w.has("decoder/projection/weight"):
        if w.resolve("decoder/projection/weight") != w.resolve("decoder/embeddings/weight"):
            projection = w.float32("decoder/projection/weight")
            if not np.array_equal(projection, sd[f"{dec}.embed_tokens.weight"]):
                raise CT2FormatError(f"{w.path}: decoder/projection/weight differs from the token embeddings; "
                                     "untied Whisper output projections are not supported")
    if w.has("decoder/projection/bias"):
        if np.any(w.float32("decoder/projection/bias")):
            raise CT2FormatError(f"{w.path}: decoder/projection/bias is non-zero; Whisper has no output bias")
    return sd


def check_decoder_flags(w: Weights) -> None:
    """Reject CT2 decoder options that transformers' Whisper cannot express (they would change the outputs)."""
    expected = {
        "decoder/activation": _CT2_ACTIVATION_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, want in expected.items():
        if w.has(name) and (got := w.scalar(name)) != want:
            raise CT2FormatError(f"{w.path}: unsupported Whisper variant: {name} = {got}, expected {want}")
    # Alignment heads only drive CT2's word timestamps (transformers keeps them in generation_config), and the ALiBi
    # options are inert with alibi = 0 (checked above); newer ctranslate2 versions always write them.
    for name in ("decoder/alignment_heads", "decoder/alignment_layer", "decoder/alibi_use_positive_positions",
                 "decoder/scale_alibi"):
        if w.has(name):
            w.raw(name)
