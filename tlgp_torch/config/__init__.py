"""TOML experiment configs read into validated dataclasses (see docs/configuration.md)."""
from tlgp_torch.config.experiment import Config, DataConfig, TrainConfig, load_config
from tlgp_torch.config.toml import ConfigError

__all__ = ["Config", "ConfigError", "DataConfig", "TrainConfig", "load_config"]
