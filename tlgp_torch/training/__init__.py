"""Trainers: DirectTrainer (multi-start DL) and TransferTrainer (seeding-relaxation TL), and their TrainResult."""
from .direct import DirectTrainer
from .fitting import FitSettings
from .result import TrainResult
from .transfer import TransferTrainer

__all__ = ["DirectTrainer", "FitSettings", "TrainResult", "TransferTrainer"]
