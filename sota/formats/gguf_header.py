"""A GGUF file's header read and checked without loading its tensors: version, metadata, tensor types, and whether
the file is as long as its tensors need (a truncated download is named before any conversion starts)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from sota.formats.binary import BoundedReader

_GGUF_MAGIC = b"GGUF"
# v1 used 32-bit counts and is long obsolete; v2 and v3 share the layout read here (v3 only adds big-endian files).
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
# struct formats of GGUF's scalar metadata types (gguf.GGUFValueType); 8 = string and 9 = array are handled apart.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """A GGUF file is truncated, corrupt, or holds a model that transformers cannot load."""


class GGUFHeader:
    """What the header says: format version, metadata, and the byte size the tensor data needs."""

    def __init__(self, version: int, metadata: dict[str, Any], tensor_types: dict[str, int], data_end: int) -> None:
        self.version = version
        self.metadata = metadata
        self.tensor_types = tensor_types
        self.data_end = data_end

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")


class _Reader(BoundedReader):
    """GGUF's strings (uint64 length, UTF-8) and typed metadata values on top of the bounded reads."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        super().__init__(fh, path, size, GGUFFormatError, "GGUF file")

    def string(self, what: str) -> str:
        raw = self.read(self.unpack("Q", f"{what} length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"{self.path}: corrupt GGUF file: {what} is not valid UTF-8") from exc

    def value(self, kind: int, key: str, keep: bool) -> Any:
        """One metadata value; large arrays (the tokenizer's vocabulary) are skipped unless `keep`."""
        if kind in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[kind], f"value of {key!r}")
        if kind == _STRING:
            return self.string(f"value of {key!r}")
        if kind == _ARRAY:
            item = self.unpack("I", f"array type of {key!r}")
            count = self.unpack("Q", f"array length of {key!r}")
            if item in _SCALAR_FORMATS and not keep:
                self.skip(count * struct.calcsize("<" + _SCALAR_FORMATS[item]), f"array {key!r}")
                return None
            values = [self.value(item, key, keep) for _ in range(count)]
            return values if keep else None
        raise GGUFFormatError(f"{self.path}: corrupt GGUF file: metadata {key!r} has unknown type id {kind}")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse a GGUF header and check that the file holds all the tensor data it declares.

    Takes well under a second, so bad input is rejected before transformers is imported and spends seconds
    dequantizing (and then fails with an error that does not name the file).
    """
    import gguf  # the ggml type sizes, maintained by llama.cpp; light to import

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    metadata: dict[str, Any] = {}
    types: Counter[str] = Counter()
    data_needed = 0
    with path.open("rb") as fh:
        r = _Reader(fh, path, size)
        if fh.read(4) != _GGUF_MAGIC:
            raise GGUFFormatError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
        version = r.unpack("I", "format version")
        if version not in _SUPPORTED_VERSIONS:
            raise GGUFFormatError(f"{path}: unsupported GGUF version {version} (readable: "
                                  f"{', '.join(map(str, _SUPPORTED_VERSIONS))}; big-endian files are not supported)")
        n_tensors = r.unpack("Q", "tensor count")
        n_kv = r.unpack("Q", "metadata count")
        for index in range(n_kv):
            key = r.string(f"metadata key {index}")
            kind = r.unpack("I", f"type of {key!r}")
            # Token lists are kept out of memory: only small scalars and strings are needed here.
            metadata[key] = r.value(kind, key, keep=not key.startswith("tokenizer.ggml."))
        for index in range(n_tensors):
            name = r.string(f"name of tensor {index}")
            n_dims = r.unpack("I", f"rank of {name!r}")
            if n_dims > 8:
                raise GGUFFormatError(f"{path}: corrupt GGUF file: tensor {name!r} has rank {n_dims}")
            dims = [r.unpack("Q", f"shape of {name!r}") for _ in range(n_dims)]
            type_id = r.unpack("I", f"type of {name!r}")
            offset = r.unpack("Q", f"offset of {name!r}")
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
                block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise GGUFFormatError(f"{path}: corrupt GGUF file: tensor {name!r} has unknown type id {type_id}") \
                    from None
            elements = 1
            for d in dims:
                elements *= d
            if elements % block:
                raise GGUFFormatError(f"{path}: corrupt GGUF file: tensor {name!r} of shape {dims} is not a whole "
                                      f"number of {qtype.name} blocks of {block}")
            types[qtype.name] += 1
            data_needed = max(data_needed, offset + elements // block * block_bytes)
        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFFormatError(f"{path}: corrupt GGUF file: general.alignment = {alignment!r}")
        data_start = -(-fh.tell() // alignment) * alignment
    data_end = data_start + data_needed
    if data_end > size:
        raise GGUFFormatError(f"{path}: truncated GGUF file: its {n_tensors} tensors need {data_end} bytes, but the "
                              f"file has {size} bytes")
    return GGUFHeader(version, metadata, dict(types), data_end)
