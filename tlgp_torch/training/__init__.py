"""Trainers: DirectTrainer (multi-start DL) and TransferTrainer (seeding-relaxation TL), and their TrainResult."""
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.result import TrainResult
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.transfer import TransferTrainer

__all__ = ["DirectTrainer", "FitSettings", "TrainResult", "TransferTrainer"]
