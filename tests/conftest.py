import os
from pathlib import Path

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


SHARED_DATA = Path(os.environ.get("JAMEM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One TFDS preparation per test session (about a minute), shared by the data and training tests."""
    return tmp_path_factory.mktemp("jamem_cache")


@pytest.fixture(scope="session")
def mnist(cache):
    """Real MNIST (train, test) from the offline IDX files, or skip when they are absent."""
    from jamem import data

    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("offline MNIST files not found")
    return tuple(data.load("mnist", split=s, data_dir=SHARED_DATA, cache_dir=cache) for s in ("train", "test"))
