"""jamem: Dense Associative Memory (modern Hopfield networks) in JAX."""

from . import capacity as capacity
from . import energies as energies
from . import hierarchical as hierarchical
from . import implicit as implicit
from . import lagrangians as lagrangians
from . import random_features as random_features
from . import separation as separation
from . import two_layer as two_layer
from .dynamics import AbstractSolver as AbstractSolver
from .dynamics import AsyncBinary as AsyncBinary
from .dynamics import EulerFlow as EulerFlow
from .dynamics import GradientDescent as GradientDescent
from .dynamics import Solution as Solution
from .dynamics import SyncBinary as SyncBinary
from .dynamics import retrieve as retrieve
from .energies import AbstractEnergy as AbstractEnergy
from .energies import DenseEnergy as DenseEnergy
from .energies import GaussianKernelEnergy as GaussianKernelEnergy
from .energies import LogSumExpEnergy as LogSumExpEnergy
from .energies import LogSumReLUEnergy as LogSumReLUEnergy
from .lagrangians import AbstractLagrangian as AbstractLagrangian
from .lagrangians import legendre_energy as legendre_energy
from .random_features import RandomFeatureMemory as RandomFeatureMemory
from .separation import AbstractSeparation as AbstractSeparation
from .separation import CustomSeparation as CustomSeparation
from .separation import Exponential as Exponential
from .separation import Power as Power
from .separation import RectifiedPower as RectifiedPower
from .separation import as_separation as as_separation

__version__ = "0.1.0"
