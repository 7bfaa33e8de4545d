"""`tlgp submit`: the shards of a config as a SLURM job array (or local processes) through submitit."""
from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["SubmitConfig", "submit_shards"]

CLUSTERS = ("slurm", "local", "debug")


@dataclass
class SubmitConfig:
    """[submit]: how `tlgp submit` launches the shards (one job-array task = one shard = one GPU).

    Fields are the keys of the config's [submit] table (see docs/configuration.md).

    Raises:
        ValueError: for an unknown cluster, or shards, timeout_min or cpus_per_task below 1, or negative GPUs.

    Example:
        >>> from tlgp_torch.runtime.submit import SubmitConfig
        >>> SubmitConfig(shards=4, cluster="local", gpus_per_task=0).timeout_min
        120
    """

    shards: int = 1                      # number of shards / array tasks
    cluster: str = "slurm"               # "slurm", or "local" (processes on this machine), or "debug" (in-process)
    partition: str | None = None         # SLURM partition
    account: str | None = None           # SLURM account
    gpus_per_task: int = 1               # GPUs per shard (0 on CPU-only nodes)
    cpus_per_task: int = 8               # CPU cores per shard
    mem_gb: int | None = None            # memory per shard (unset: the cluster's default)
    timeout_min: int = 120               # time limit per shard
    array_parallelism: int | None = None  # at most this many shards running at once

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ValueError(f"submit.cluster must be one of {CLUSTERS}, got {self.cluster!r}")
        for name in ("shards", "timeout_min", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"submit.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise ValueError(f"submit.gpus_per_task must be >= 0, got {self.gpus_per_task}")


def run_shard(entry: Callable[[list[str]], int], argv: list[str]) -> int:
    """One array task: `entry(argv)` (the CLI's main with `train ... --shard i/n`); raises on failure so the
    scheduler marks the task failed.

    Example:
        >>> run_shard(lambda argv: 0, ["train", "cfg.toml", "--shard", "0/2"])
        0
    """
    rc = entry(argv)
    if rc != 0:
        raise RuntimeError(f"tlgp {' '.join(argv)} exited with {rc}")
    return rc


def submit_shards(entry: Callable[[list[str]], int], train_argv: list[str], settings: SubmitConfig,
                  folder: pathlib.Path) -> list[Any]:
    """Submit one `entry(train_argv + ["--shard", "i/n"])` per shard (entry: the CLI's main, passed in so that
    this module does not import the CLI); returns the submitit jobs.

    Args:
        entry: the CLI's main(argv) -> exit code.
        train_argv: the `tlgp train` arguments every shard shares.
        settings: the [submit] settings (cluster, partition, resources).
        folder: submitit's log folder.

    Raises:
        ImportError: without submitit (extra `cluster`).

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.runtime.submit import SubmitConfig, submit_shards
        >>> settings = SubmitConfig(shards=2, cluster="debug", gpus_per_task=0)   # "debug": in this process
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     jobs = submit_shards(lambda argv: 0, ["train", "cfg.toml"], settings, pathlib.Path(tmp))
        ...     [job.result() for job in jobs]
        [0, 0]
    """
    try:
        import submitit
    except ImportError as err:
        raise ImportError(f"tlgp submit needs submitit ({err}): pip install \"tlgp_torch[cluster]\"") from err
    executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster)
    params: dict[str, Any] = {"timeout_min": settings.timeout_min, "cpus_per_task": settings.cpus_per_task,
                              "gpus_per_node": settings.gpus_per_task, "name": "tlgp-train"}
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    if settings.cluster == "slurm":
        params.update({k: v for k, v in (("slurm_partition", settings.partition),
                                          ("slurm_account", settings.account),
                                          ("slurm_array_parallelism", settings.array_parallelism)) if v is not None})
    executor.update_parameters(**params)
    n = settings.shards
    argvs = [train_argv + ["--shard", f"{i}/{n}"] for i in range(n)]
    return executor.map_array(functools.partial(run_shard, entry), argvs)
