"""Equinox models built on jamem's energies."""

from .classifier import DenseAMClassifier as DenseAMClassifier
from .classifier import dual_outputs as dual_outputs
from .classifier import log_power_loss as log_power_loss
from .classifier import power_loss as power_loss
from .energy_transformer import EnergyTransformer as EnergyTransformer
from .energy_transformer import MaskedPatchET as MaskedPatchET
from .energy_transformer import layer_norm_lagrangian as layer_norm_lagrangian
from .energy_transformer import masked_patch_mse as masked_patch_mse
from .energy_transformer import patchify as patchify
from .energy_transformer import random_mask as random_mask
from .energy_transformer import unpatchify as unpatchify
from .mlp import ReLUMLP as ReLUMLP
