"""Deterministic partition of a molecule's (atom, property) models over workers: --shard, torchrun, job arrays."""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence, TypeVar

__all__ = ["Shard", "parse_shard", "shard_from_env", "shard_jobs", "shard_results_name"]

T = TypeVar("T")
Shard = tuple[int, int]  # (index, count), index 0-based


def parse_shard(text: str) -> Shard:
    """'i/n' (0-based i < n) -> (i, n); ValueError with the expected form otherwise.

    Example:
        >>> from tlgp_torch.runtime import parse_shard
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        ValueError: --shard must be i/n with 0 <= i < n (e.g. 0/4 ... 3/4), got '4/4'
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4 ... 3/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_from_env(environ: Mapping[str, str] = os.environ) -> Shard | None:
    """(RANK, WORLD_SIZE) under torchrun (or any launcher setting both), else None.

    Args:
        environ: the environment to read (default os.environ).

    Raises:
        ValueError: when RANK and WORLD_SIZE do not form a shard.

    Example:
        >>> from tlgp_torch.runtime import shard_from_env
        >>> shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}), shard_from_env({})
        ((2, 3), None)
    """
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        return parse_shard(f"{environ['RANK']}/{environ['WORLD_SIZE']}")
    except ValueError:
        raise ValueError(f"RANK={environ['RANK']!r} and WORLD_SIZE={environ['WORLD_SIZE']!r} do not name a "
                         "shard (need 0 <= RANK < WORLD_SIZE)") from None


def shard_jobs(jobs: Sequence[T], shard: Shard) -> list[T]:
    """The jobs of one shard: every n-th job from position i (round robin over the config's order).

    Example:
        >>> from tlgp_torch.runtime import shard_jobs
        >>> shard_jobs(["C1 iqa", "C1 q00", "O2 iqa", "O2 q00", "H3 iqa"], (1, 2))
        ['C1 q00', 'O2 q00']
    """
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i]


def shard_results_name(shard: Shard) -> str:
    """File name of one shard's results table (merged into results.csv by `tlgp merge`).

    Example:
        >>> shard_results_name((0, 4))
        'results.shard-0-of-4.csv'
    """
    return f"results.shard-{shard[0]}-of-{shard[1]}.csv"
