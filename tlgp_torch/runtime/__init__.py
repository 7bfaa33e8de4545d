"""Where and how runs execute: device choice and synchronised timing, the CPU allocator, sharding over workers,
SLURM submission."""
from tlgp_torch.runtime.allocator import cpu_allocator, tune_cpu_allocator
from tlgp_torch.runtime.device import resolve_device, synchronize
from tlgp_torch.runtime.sharding import parse_shard, shard_from_env, shard_jobs

__all__ = ["cpu_allocator", "parse_shard", "resolve_device", "shard_from_env", "shard_jobs", "synchronize",
           "tune_cpu_allocator"]
