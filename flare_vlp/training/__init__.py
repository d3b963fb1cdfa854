"""The one local training loop, shared by the centralized / local-only baselines and every FLARE executor."""

from flare_vlp.training.loop import TrainResult, train_loop
from flare_vlp.training.objectives import ContrastiveObjective, Objective
from flare_vlp.training.schedule import build_scheduler, lr_multiplier

__all__ = ["train_loop", "TrainResult", "Objective", "ContrastiveObjective", "lr_multiplier", "build_scheduler"]
