"""Where and how runs execute: device choice and synchronised timing, sharding over workers, SLURM submission."""
from tlgp_torch.runtime.device import resolve_device, synchronize
from tlgp_torch.runtime.sharding import parse_shard, shard_from_env, shard_jobs

__all__ = ["parse_shard", "resolve_device", "shard_from_env", "shard_jobs", "synchronize"]
