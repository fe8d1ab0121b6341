"""Little-endian reads bounded by a file's size, for the binary formats the converters read (CTranslate2's
model.bin, GGUF headers): a truncated or corrupt file fails with its name, what was being read and the offset."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO


class BoundedReader:
    """Reads of `fh` (`size` bytes long) that raise the format's own `error` about a `kind` of file."""

    def __init__(self, fh: BinaryIO, path: Path, size: int, error: type[Exception], kind: str) -> None:
        self.fh, self.path, self.size, self.error, self.kind = fh, path, size, error, kind

    def _check(self, n: int, what: str) -> int:
        offset = self.fh.tell()
        if n < 0 or offset + n > self.size:
            raise self.error(f"{self.path}: truncated or corrupt {self.kind}: {what} needs {n} bytes at offset "
                             f"{offset}, but the file has {self.size} bytes")
        return offset

    def read(self, n: int, what: str) -> bytes:
        offset = self._check(n, what)
        data = self.fh.read(n)
        if len(data) != n:  # the file shrank while it was read
            raise self.error(f"{self.path}: short read of {what} at offset {offset}")
        return data

    def skip(self, n: int, what: str) -> None:
        self._check(n, what)
        self.fh.seek(n, os.SEEK_CUR)

    def unpack(self, fmt: str, what: str) -> Any:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]
