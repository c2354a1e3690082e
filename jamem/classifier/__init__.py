"""The DenseAM classifier of Krotov & Hopfield 2016 (arXiv:1606.01164) and what surrounds it:
the model (with its fused CPU class-gap kernel, `native`), its optimiser and training loop,
prototype statistics, adversarial attacks and the MNIST job; and hidden units learned without
labels by competition (Krotov & Hopfield 2019, arXiv:1806.10181). Imports the core and
tooling's data, plots and provenance."""

from . import adversarial as adversarial
from . import competing as competing
from . import mlp as mlp
from . import mnist as mnist
from . import model as model
from . import native as native
from . import optim as optim
from . import prototypes as prototypes
from . import train as train
