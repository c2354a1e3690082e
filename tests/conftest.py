import jax
import pytest
from hypothesis import settings

# Shape mistakes fail loudly in tests (DESIGN.md): no silent rank promotion.
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("jamem", max_examples=15, deadline=None, derandomize=True)
settings.load_profile("jamem")


@pytest.fixture
def key():
    return jax.random.key(0)
