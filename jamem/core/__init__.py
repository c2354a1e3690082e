"""The core layer: separation functions, energies, Lagrangians, the dynamics engine (`retrieve`)
and its adjoints, capacity experiments and exact-arithmetic references. It imports nothing from
the other layers."""

from . import adjoints as adjoints
from . import capacity as capacity
from . import dynamics as dynamics
from . import energies as energies
from . import lagrangians as lagrangians
from . import reference as reference
from . import separation as separation
