"""Atomic file writes: write to a temporary file in the same folder, then os.replace (never a half file)."""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> pathlib.Path:
    """Call write(binary file) on a temporary file beside path, then rename it to path (umask permissions).

    A reader never sees a half-written file: it finds the old file or the new one. If `write` raises, the
    temporary file is removed and the exception propagates; path is left as it was.

    Args:
        path: destination file (its folder must exist).
        write: callable that writes the content to the open binary file it is given.

    Returns:
        path as a pathlib.Path.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import atomic_write
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = atomic_write(pathlib.Path(tmp) / "a.bin", lambda fh: fh.write(b"abc"))
        ...     path.read_bytes()
        b'abc'
    """
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
    """Write UTF-8 text (\\n line ends) to path atomically (see atomic_write); returns path.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import atomic_write_text
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     atomic_write_text(pathlib.Path(tmp) / "a.txt", "x\\n").read_text()
        'x\\n'
    """
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
