"""Training data in memory: `AtomDataset` (x [N, D], y [N, P], property names, periodic-feature mask) and
the random subsets the transfer trainer draws its sources from."""
from tlgp_torch.data.dataset import AtomDataset, cyclic_feature_mask
from tlgp_torch.data.subsets import complement, random_subsets

__all__ = ["AtomDataset", "complement", "cyclic_feature_mask", "random_subsets"]
