"""CTranslate2's model.bin read into numpy arrays (binary layout version 6), every short read or inconsistency an
error that names the file and offset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sota.formats.binary import BoundedReader

logger = logging.getLogger(__name__)

__all__ = ["CT2FormatError", "read_ct2", "read_ct2_with_spec"]

# The only layout this reader has been checked against (ctranslate2/specs/model_spec.py, CURRENT_BINARY_VERSION).
_SUPPORTED_BINARY_VERSION = 6
# Order of ctranslate2's DataType enum (include/ctranslate2/types.h), as used by model_spec._dtype_to_type_id.
_CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    """A CTranslate2 model file is corrupt, truncated, or not a Whisper model this converter understands."""



class _Reader(BoundedReader):
    """CTranslate2's strings (uint16 length including a trailing NUL, UTF-8) on top of the bounded reads."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        super().__init__(fh, path, size, CT2FormatError, "CTranslate2 model")

    def string(self, what: str) -> str:
        # model_spec._write_string: uint16 length (including the trailing NUL), UTF-8 bytes, NUL.
        length = self.unpack("H", f"{what} length")
        raw = self.read(length, what)
        if length == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.path}: corrupt CTranslate2 model: {what} at offset "
                                 f"{self.fh.tell() - length} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CT2FormatError(f"{self.path}: corrupt CTranslate2 model: {what} is not valid UTF-8") from exc


def _bfloat16_to_float32(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    # numpy has no bfloat16; bfloat16 is the upper half of a float32, so widening is exact.
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def read_ct2(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a CTranslate2 ``model.bin`` (binary version 6).

    Returns ``(variables, aliases)``: variables keep their stored dtype (scalars are 0-d arrays), except bfloat16,
    which numpy lacks and is widened exactly to float32; aliases map an alias name to the variable it shares.
    Raises ``CT2FormatError`` naming ``path`` on truncated, corrupt or unsupported input.
    """
    _, _, variables, aliases = read_ct2_with_spec(path)
    return variables, aliases


def read_ct2_with_spec(path: Path) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """``read_ct2`` plus the spec name and revision stored in the header."""
    path = Path(path)
    size = path.stat().st_size
    variables: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    with path.open("rb") as fh:
        r = _Reader(fh, path, size)
        version = r.unpack("I", "binary version")
        if version != _SUPPORTED_BINARY_VERSION:
            raise CT2FormatError(
                f"{path}: unsupported CTranslate2 binary version {version} (this reader handles "
                f"{_SUPPORTED_BINARY_VERSION}); the file is corrupt or was written by an incompatible ctranslate2"
            )
        spec_name = r.string("spec name")
        spec_revision = r.unpack("I", "spec revision")
        num_variables = r.unpack("I", "variable count")
        for index in range(num_variables):
            name = r.string(f"name of variable {index}")
            rank = r.unpack("B", f"rank of {name!r}")
            shape = tuple(r.unpack("I", f"shape of {name!r}") for _ in range(rank))
            type_id = r.unpack("B", f"dtype of {name!r}")
            if type_id >= len(_CT2_DTYPES):
                raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} has unknown dtype id "
                                     f"{type_id}")
            dtype = _CT2_DTYPES[type_id]
            num_bytes = r.unpack("I", f"byte size of {name!r}")
            itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            expected = int(np.prod(shape, dtype=np.int64)) * itemsize
            if num_bytes != expected:
                raise CT2FormatError(
                    f"{path}: corrupt CTranslate2 model: variable {name!r} of shape {shape} and dtype {dtype} "
                    f"declares {num_bytes} bytes, expected {expected}"
                )
            raw = r.read(num_bytes, f"data of {name!r}")
            if name in variables:
                raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} appears twice")
            if dtype == "bfloat16":
                variables[name] = _bfloat16_to_float32(raw, shape)
            else:
                variables[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        num_aliases = r.unpack("I", "alias count")
        for index in range(num_aliases):
            alias = r.string(f"alias {index}")
            aliases[alias] = r.string(f"target of alias {alias!r}")
        trailing = size - fh.tell()
        if trailing:
            raise CT2FormatError(f"{path}: corrupt CTranslate2 model: {trailing} unexpected bytes after the aliases")
    for alias, target in aliases.items():
        if target not in variables and target not in aliases:
            raise CT2FormatError(f"{path}: corrupt CTranslate2 model: alias {alias!r} points to missing {target!r}")
    logger.debug("read %s: spec %s rev %d, %d variables, %d aliases", path, spec_name, spec_revision,
                 len(variables), len(aliases))
    return spec_name, spec_revision, variables, aliases


