"""CPU memory for the N x N buffers of GP training: glibc malloc thresholds, raised while trainers run.

Every evaluation of an exact GP allocates a dozen or more N x N float64 buffers (8 MB each at N = 1000, 32 MB at
N = 2000): the kernel matrix and its autograd temporaries, the Cholesky factor, K^-1. glibc's malloc serves
blocks above its mmap threshold (128 KiB, raised dynamically to at most 32 MiB) with fresh mmap'd pages and trims
free memory at the top of the heap above its trim threshold, so each such buffer comes back as new pages that the
kernel must fault in and zero: on a 2-core CPU at N = 1000 that was about a third of one Matern evaluation
(measurements in docs/benchmarks.md, "CPU allocator").

``cpu_allocator("tuned", device)`` raises M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to 1 GiB (mallopt), once per
process, so freed buffers are reused from the heap; when the outermost such block ends, ``malloc_trim(0)`` gives
the free memory back to the system, so the process's resident size after a fit is what it would have been. The
thresholds stay raised afterwards (glibc cannot restore its dynamic default). Nothing is changed where malloc is
not glibc's (macOS, Windows, musl), on a CUDA device, with mode "system", or when the user set MALLOC_MMAP_THRESHOLD_
or MALLOC_TRIM_THRESHOLD_ in the environment (their choice is kept).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

ALLOCATOR_MODES = ("tuned", "system")
THRESHOLD_BYTES = 1 << 30    # blocks up to 1 GiB come from (and return to) the heap
_M_TRIM_THRESHOLD = -1       # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_ENV_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_lock = threading.Lock()
_state = {"tuned": None, "depth": 0}   # tuned: None (not tried), True, False (not available)
_libc = None


def _glibc():
    """The C library when it is glibc (has mallopt and malloc_trim), else None."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") and hasattr(lib, "gnu_get_libc_version"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def tune_cpu_allocator(threshold: int = THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to `threshold` bytes, once per process; True when they are raised.

    Args:
        threshold: bytes; blocks up to this size are served from and returned to the heap.

    Returns:
        True when the thresholds are (or were already) raised by this module; False where malloc is not glibc's,
        where the user set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, or where mallopt refused.

    Example:
        >>> from tlgp_torch.runtime.allocator import tune_cpu_allocator
        >>> tune_cpu_allocator() in (True, False)
        True
    """
    with _lock:
        if _state["tuned"] is None:
            lib = _glibc()
            ok = lib is not None and not any(k in os.environ for k in _ENV_KEYS)
            if ok:
                ok = bool(lib.mallopt(_M_MMAP_THRESHOLD, int(threshold))) \
                    and bool(lib.mallopt(_M_TRIM_THRESHOLD, int(threshold)))
            _state["tuned"] = ok
        return bool(_state["tuned"])


def release_free_memory() -> bool:
    """Return the heap's free pages to the system (glibc malloc_trim(0)); False where that is not available.

    Example:
        >>> from tlgp_torch.runtime.allocator import release_free_memory
        >>> release_free_memory() in (True, False)
        True
    """
    lib = _glibc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


@contextmanager
def cpu_allocator(mode: str, device: torch.device | str) -> Iterator[bool]:
    """Block of GP training with the CPU allocator in `mode`: "tuned" raises the thresholds (tune_cpu_allocator)
    and, when the outermost tuned block ends, gives the free memory back (release_free_memory); "system" changes
    nothing. Yields whether the tuned thresholds are in force.

    Args:
        mode: "tuned" or "system" (FitSettings.cpu_allocator).
        device: the training device; only "cpu" is tuned.

    Raises:
        ValueError: for a mode other than "tuned" or "system".

    Example:
        >>> from tlgp_torch.runtime.allocator import cpu_allocator
        >>> with cpu_allocator("system", "cpu") as tuned:
        ...     print(tuned)
        False
    """
    if mode not in ALLOCATOR_MODES:
        raise ValueError(f"cpu_allocator must be one of {ALLOCATOR_MODES}, got {mode!r}")
    if mode == "system" or torch.device(device).type != "cpu" or not tune_cpu_allocator():
        yield False
        return
    with _lock:
        _state["depth"] += 1
    try:
        yield True
    finally:
        with _lock:
            _state["depth"] -= 1
            last = _state["depth"] == 0
        if last:
            release_free_memory()
