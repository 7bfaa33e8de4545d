"""Deterministic partition of a molecule's (atom, property) models over workers: --shard, torchrun, job arrays."""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence, TypeVar

__all__ = ["Shard", "parse_shard", "shard_from_env", "shard_jobs", "shard_results_name"]

T = TypeVar("T")
Shard = tuple[int, int]  # (index, count), index 0-based


def parse_shard(text: str) -> Shard:
    """'i/n' (0-based i < n) -> (i, n); ValueError with the expected form otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4 ... 3/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_from_env(environ: Mapping[str, str] = os.environ) -> Shard | None:
    """(RANK, WORLD_SIZE) under torchrun (or any launcher setting both), else None."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        return parse_shard(f"{environ['RANK']}/{environ['WORLD_SIZE']}")
    except ValueError:
        raise ValueError(f"RANK={environ['RANK']!r} and WORLD_SIZE={environ['WORLD_SIZE']!r} do not name a "
                         "shard (need 0 <= RANK < WORLD_SIZE)") from None


def shard_jobs(jobs: Sequence[T], shard: Shard) -> list[T]:
    """The jobs of one shard: every n-th job from position i (round robin over the config's order)."""
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i]


def shard_results_name(shard: Shard) -> str:
    """File name of one shard's results table (merged into results.csv by `tlgp merge`)."""
    return f"results.shard-{shard[0]}-of-{shard[1]}.csv"
