"""The package's layers: core imports nothing above it, networks only the core, classifier the
core and tooling's data / plots / provenance; those import no layer; the CLI sits on top. And the
abstract classes cannot be instantiated."""

import ast
from pathlib import Path

import jax.numpy as jnp
import pytest

import jamem as jm
from jamem.core.adjoints import AbstractAdjoint
from jamem.networks.hierarchical import AbstractSynapse

PACKAGE = Path(jm.__file__).parent
ALLOWED = {
    "core": {"core"},
    "networks": {"core", "networks"},
    "classifier": {"core", "classifier", "tooling.data", "tooling.plots", "tooling.provenance"},
    "tooling": {"tooling.data", "tooling.plots", "tooling.provenance"},
}


def _jamem_imports(path: Path) -> set[str]:
    """The jamem modules `path` imports, as 'layer' or 'layer.module' names."""
    layer = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = [layer] if node.level == 1 else []
            parts = base + (node.module.split(".") if node.module else [])
            if parts == [] or parts[0] in ("_checks", "_sharding"):
                continue
            if len(parts) == 1 and parts[0] != layer:  # `from ..core import x` or `from . import x`
                found.update(f"{parts[0]}.{alias.name}" for alias in node.names)
            elif len(parts) == 1:
                found.update(f"{layer}.{alias.name}" for alias in node.names)
            else:
                found.add(".".join(parts[:2]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jamem"):
            found.add(node.module.removeprefix("jamem.") or "jamem")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_never_import_higher_ones(layer):
    for path in sorted((PACKAGE / layer).glob("*.py")):
        if path.name == "cli.py":
            continue  # the command line is the top of the stack
        for name in _jamem_imports(path):
            allowed = ALLOWED[layer]
            assert name.split(".")[0] in allowed or name in allowed or name.startswith(f"{layer}."), (path.name, name)


@pytest.mark.parametrize(
    "cls",
    [jm.AbstractEnergy, jm.AbstractSolver, jm.AbstractSeparation, jm.AbstractLagrangian, AbstractSynapse],
)
def test_abstract_classes_cannot_be_built(cls):
    with pytest.raises(TypeError):
        cls()


def test_an_incomplete_energy_cannot_be_built():
    class NoCall(jm.AbstractEnergy):
        pass

    class Complete(jm.AbstractEnergy):
        def __call__(self, state, params):
            return (state**2).sum()

    with pytest.raises(TypeError):
        NoCall()
    assert float(Complete()(jnp.array([3.0, 4.0]), None)) == 25.0
    assert issubclass(jm.DirectAdjoint, AbstractAdjoint)
