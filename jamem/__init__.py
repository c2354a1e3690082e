"""jamem: Dense Associative Memory (modern Hopfield networks) in JAX.

The package has four layers, each importing only the ones before it:

- `jamem.core`: separation functions, energies, Lagrangians, the dynamics engine `retrieve`
  and its adjoints, capacity experiments, exact-arithmetic references;
- `jamem.networks`: two-layer and hierarchical memories, the Energy Transformer, random
  features, clustering, sequence memories and diffusion;
- `jamem.classifier`: the DenseAM classifier, its training, prototypes, adversarial attacks,
  competing hidden units and the MNIST job;
- `jamem.tooling`: data, plots, provenance (which import no other layer) and the CLI (on top).

The names used most are re-exported here.
"""

from .classifier import adversarial as adversarial
from .classifier import competing as competing
from .classifier import mnist as mnist
from .classifier import optim as optim
from .classifier import prototypes as prototypes
from .classifier import train as train
from .classifier.mlp import ReLUMLP as ReLUMLP
from .classifier.model import DenseAMClassifier as DenseAMClassifier
from .classifier.model import dual_outputs as dual_outputs
from .classifier.model import log_power_loss as log_power_loss
from .classifier.model import power_loss as power_loss
from .core import adjoints as adjoints
from .core import capacity as capacity
from .core import dynamics as dynamics
from .core import energies as energies
from .core import lagrangians as lagrangians
from .core import reference as reference
from .core import separation as separation
from .core.adjoints import DirectAdjoint as DirectAdjoint
from .core.adjoints import ImplicitAdjoint as ImplicitAdjoint
from .core.adjoints import fixed_point as fixed_point
from .core.dynamics import AbstractMap as AbstractMap
from .core.dynamics import AbstractSolver as AbstractSolver
from .core.dynamics import AsyncBinary as AsyncBinary
from .core.dynamics import EulerFlow as EulerFlow
from .core.dynamics import GradientDescent as GradientDescent
from .core.dynamics import Iterate as Iterate
from .core.dynamics import SaveAt as SaveAt
from .core.dynamics import Solution as Solution
from .core.dynamics import SyncBinary as SyncBinary
from .core.dynamics import retrieve as retrieve
from .core.energies import AbstractEnergy as AbstractEnergy
from .core.energies import DenseEnergy as DenseEnergy
from .core.energies import GaussianKernelEnergy as GaussianKernelEnergy
from .core.energies import LogSumExpEnergy as LogSumExpEnergy
from .core.energies import LogSumReLUEnergy as LogSumReLUEnergy
from .core.lagrangians import AbstractLagrangian as AbstractLagrangian
from .core.lagrangians import legendre_energy as legendre_energy
from .core.separation import AbstractSeparation as AbstractSeparation
from .core.separation import CustomSeparation as CustomSeparation
from .core.separation import Exponential as Exponential
from .core.separation import Power as Power
from .core.separation import RectifiedPower as RectifiedPower
from .core.separation import as_separation as as_separation
from .networks import clustering as clustering
from .networks import diffusion as diffusion
from .networks import energy_transformer as energy_transformer
from .networks import hierarchical as hierarchical
from .networks import random_features as random_features
from .networks import sequence as sequence
from .networks import two_layer as two_layer
from .networks.energy_transformer import EnergyTransformer as EnergyTransformer
from .networks.energy_transformer import MaskedPatchET as MaskedPatchET
from .networks.random_features import RandomFeatureMemory as RandomFeatureMemory
from .networks.sequence import SequenceMemory as SequenceMemory
from .tooling import data as data
from .tooling import plots as plots
from .tooling import provenance as provenance

__version__ = "0.2.0"
