"""Equinox models built on jamem's energies."""

from .classifier import DenseAMClassifier as DenseAMClassifier
from .classifier import dual_outputs as dual_outputs
from .classifier import log_power_loss as log_power_loss
from .classifier import power_loss as power_loss
from .mlp import ReLUMLP as ReLUMLP
