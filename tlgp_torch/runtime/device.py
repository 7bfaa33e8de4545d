"""Device choice, synchronised wall-clock timing and memory budgets."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else is passed to torch.device (clear error if CUDA is missing).

    Args:
        device: "auto" or None, or anything torch.device takes ("cpu", "cuda", "cuda:1", a torch.device).

    Raises:
        RuntimeError: when a CUDA device is asked for and CUDA is not available.

    Example:
        >>> from tlgp_torch.runtime import resolve_device
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on `device` so wall times are honest (a no-op on the CPU).

    Example:
        >>> import torch
        >>> from tlgp_torch.runtime import synchronize
        >>> synchronize(torch.device("cpu"))
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(times: dict[str, float], key: str, device: torch.device) -> Iterator[None]:
    """Add the device-synchronised wall time of the block to times[key] (seconds).

    Example:
        >>> import torch
        >>> times = {}
        >>> with timed(times, "fit", torch.device("cpu")):
        ...     _ = torch.ones(3).sum()
        >>> list(times), times["fit"] >= 0
        (['fit'], True)
    """
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0


def memory_budget(device: torch.device, fraction: float = 0.5) -> int:
    """Bytes we allow one batched evaluation to use: a fraction of free GPU memory or of available RAM (8 GiB
    assumed where /proc/meminfo cannot be read; what each path needs is likelihoods.memory's rule)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return int(info.get("MemAvailable", 8 * 2**30) * fraction)
    except OSError:
        return int(8 * 2**30 * fraction)
