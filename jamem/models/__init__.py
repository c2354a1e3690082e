"""Equinox models built on jamem's energies."""

from .classifier import DenseAMClassifier as DenseAMClassifier
from .classifier import dual_outputs as dual_outputs
from .classifier import power_loss as power_loss
