"""The `tlgp` command line (see docs/cli.md)."""
from tlgp_torch.cli.main import main

__all__ = ["main"]
