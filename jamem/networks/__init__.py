"""Networks built on the core energies and `retrieve`: the two-layer family of Krotov & Hopfield
2020, hierarchical memories (Krotov 2021), the Energy Transformer (Hoover et al. 2023) and
random-feature memories (Hoover et al. 2024), clustering as memory (ClAM, Saha et al. 2023),
sequence memories (Chaudhry et al. 2023) and diffusion as memory (Ambrogioni 2023; Hoover et al. 2023).
Imports only the core (and optax, to fit ClAM's prototypes)."""

from . import clustering as clustering
from . import diffusion as diffusion
from . import energy_transformer as energy_transformer
from . import hierarchical as hierarchical
from . import random_features as random_features
from . import sequence as sequence
from . import two_layer as two_layer
