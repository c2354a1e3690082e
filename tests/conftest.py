import os
from pathlib import Path

# Under pytest-xdist every worker is a process of its own: on a GPU none may take the default 75%
# of its memory at start-up (read when the backend starts, after this import).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

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


@pytest.fixture(scope="session")
def small_mnist_run(mnist, tmp_path_factory):
    """A DenseAM (n = 3, K = 200) trained 8 epochs on 10k real MNIST images: (model, history, checkpoint)."""
    from jamem import train

    (images, labels), (test_images, test_labels) = mnist
    config = train.preset(3, num_memories=200, epochs=8, batch_size=500, learning_rate=0.2, temperature_ramp_epochs=4)
    path = tmp_path_factory.mktemp("small_run") / "mnist_n3.ckpt"
    model, history = train.fit(
        config, (images[:10000], labels[:10000]), (test_images, test_labels), checkpoint_path=path, progress=False
    )
    return model, history, path
