"""Atomic file writes: write to a temporary file in the same folder, then os.replace (never a half file)."""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> pathlib.Path:
    """Call write(binary file) on a temporary file beside path, then rename it to path (umask permissions)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write UTF-8 text (\\n line ends) to path atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
