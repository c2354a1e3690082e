"""The compiled CPU class-gap kernel (jamem/classifier/class_gaps.cc) against the XLA form it replaces."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jamem import DenseAMClassifier
from jamem.classifier import model as model_module
from jamem.classifier import native

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not native.native_kernels_enabled(),
    reason="the CPU class-gap kernel is not built on this machine (no C++ compiler or not a CPU backend)",
)


@pytest.fixture
def use_kernel():
    """Calls `fn` traced afresh with the kernel on and with XLA's fusion, restoring the setting."""

    def both(fn, *args):
        results = []
        for enabled in (True, False):
            native.set_native_kernels(enabled)
            compiled = jax.jit(lambda *a: fn(*a))  # a new lambda: traced again
            # the comparison means something only if the kernel ran on one side and not the other
            assert ("jamem_class_gaps" in compiled.lower(*args).as_text()) == enabled
            results.append(compiled(*args))
        return results

    yield both
    native.set_native_kernels(True)


def _inputs(batch, num_classes, num_memories, key=0, scale=1.0):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    base = scale * (jax.random.normal(k1, (batch, num_memories)) - 0.2)
    shift = 0.3 * scale * jax.random.normal(k2, (num_classes, num_memories))
    cotangent = jax.random.normal(k3, (batch, num_classes))
    return base, shift, cotangent


def _close(got, want, rtol):
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) <= rtol * scale, (got, want)


# odd class counts and memory counts off the 16-lane blocks exercise the kernel's tails; 45 images
# are three row chunks on the thread pool
@pytest.mark.parametrize(("batch", "num_classes", "num_memories"), [(1, 1, 5), (45, 3, 37), (17, 10, 64)])
@pytest.mark.parametrize("degree", [1, 2, 3, 30])
def test_gaps_and_gradient_match_xla(use_kernel, degree, batch, num_classes, num_memories):
    base, shift, cotangent = _inputs(batch, num_classes, num_memories, key=degree)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, degree), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    for got, want in zip(kernel, xla):
        _close(got, want, rtol=2e-5)


def test_gradient_matches_float64_closed_form(use_kernel):
    """d/dbase and d/dshift of sum_bc g_bc gaps_bc, written out in float64 NumPy."""
    degree = 3
    base, shift, cotangent = _inputs(9, 4, 21, key=7)
    weighted_sum = lambda b, s: jnp.sum(cotangent * model_module.rectified_power_gaps(b, s, degree))
    kernel, _ = use_kernel(lambda b, s: jax.grad(weighted_sum, (0, 1))(b, s), base, shift)
    b, s, g = (np.asarray(a, np.float64) for a in (base, shift, cotangent))
    f = lambda x: degree * np.maximum(x, 0) ** (degree - 1)
    on = f(b[:, None, :] + s[None])  # (B, C, K)
    d_base = np.einsum("bc,bck->bk", g, on) - g.sum(1)[:, None] * f(b)
    d_shift = np.einsum("bc,bck->ck", g, on)
    np.testing.assert_allclose(kernel[0], d_base, rtol=1e-5, atol=1e-5 * np.abs(d_base).max())
    np.testing.assert_allclose(kernel[1], d_shift, rtol=1e-5, atol=1e-5 * np.abs(d_shift).max())


def test_classifier_training_gradient_matches_xla(use_kernel):
    """The whole model: scores and the memories' gradient of the power loss, as training takes it."""
    model = DenseAMClassifier(num_memories=40, num_visible=30, num_classes=10, degree=3, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (20, 30), minval=-1, maxval=1)
    labels = jnp.arange(20) % 10

    def loss(m):
        out = jnp.tanh(m.batch_scores(images, temperature=2.0))
        return jnp.sum((out - (2 * jax.nn.one_hot(labels, 10) - 1)) ** 6)

    kernel, xla = use_kernel(lambda m: jax.grad(loss)(m).memories, model)
    _close(kernel, xla, rtol=1e-5)


def test_vmap_equals_loop_and_jit_equals_eager():
    model = DenseAMClassifier(num_memories=33, num_visible=12, num_classes=5, degree=4, key=jax.random.key(2))
    images = jax.random.uniform(jax.random.key(3), (6, 12), minval=-1, maxval=1)
    score = lambda x: model.scores(x, temperature=1.5)
    batched = jax.vmap(score)(images)
    looped = jnp.stack([score(x) for x in images])
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(score)(images[0]), looped[0], rtol=1e-6, atol=1e-6)
    grads = jax.vmap(jax.grad(lambda x: jnp.sum(score(x))))(images)
    np.testing.assert_allclose(grads[2], jax.grad(lambda x: jnp.sum(score(x)))(images[2]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("degree", [1, 3])
def test_nan_and_infinity_propagate_as_in_xla(use_kernel, degree):
    base, shift, cotangent = _inputs(4, 3, 20)
    base = base.at[1, 7].set(jnp.nan).at[2, 3].set(jnp.inf)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, degree), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    for got, want in zip(kernel, xla):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert bool(jnp.all(jnp.isnan(kernel[0][1]))) and bool(jnp.all(jnp.isfinite(kernel[0][jnp.array([0, 3])])))


def test_gradient_of_the_gradient_matches_xla(use_kernel):
    """The compiled backward is differentiated through the XLA form of the same backward."""
    base, shift, _ = _inputs(6, 3, 20, key=3)

    def penalty(b, s):
        d_base = jax.grad(lambda b: jnp.sum(jnp.tanh(0.1 * model_module.rectified_power_gaps(b, s, 3))))(b)
        return jnp.sum(d_base**2)

    kernel, xla = use_kernel(lambda b, s: jax.grad(penalty, (0, 1))(b, s), base, shift)
    for got, want in zip(kernel, xla):
        _close(got, want, rtol=1e-5)


def test_only_an_integer_degree_takes_the_kernel():
    # the kernel reads the degree as an int64: 2.5 (rejected by the annotation under type checks,
    # not otherwise) must keep the XLA form rather than be truncated to 2
    base, shift, _ = _inputs(5, 3, 20)
    assert model_module._use_native_kernel(base, shift, 3) and model_module._use_native_kernel(base, shift, np.int64(3))
    for degree in (2.5, 0, True):
        assert not model_module._use_native_kernel(base, shift, degree)
    assert not model_module._use_native_kernel(base.astype(jnp.float16), shift, 3)


def test_empty_batch(use_kernel):
    base, shift, cotangent = _inputs(0, 3, 20)

    def gaps_and_vjp(b, s, g):
        gaps, vjp = jax.vjp(lambda b, s: model_module.rectified_power_gaps(b, s, 3), b, s)
        return (gaps, *vjp(g))

    kernel, xla = use_kernel(gaps_and_vjp, base, shift, cotangent)
    assert kernel[0].shape == (0, 3)
    np.testing.assert_array_equal(kernel[2], np.zeros((3, 20)))


def test_without_a_compiler_it_warns_once_and_uses_xla(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("JAMEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(native._state, "loaded", None)
    with pytest.warns(RuntimeWarning, match="could not build its CPU class-gap kernel"):
        assert not native.native_kernels_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not native.native_kernels_enabled()  # decided once per process
        base, shift, _ = _inputs(5, 3, 20)
        gaps = jax.jit(lambda b, s: model_module.rectified_power_gaps(b, s, 2))(base, shift)
    want = jnp.sum(jax.nn.relu(base[:, None] + shift[None]) ** 2 - jax.nn.relu(base)[:, None] ** 2, axis=-1)
    _close(gaps, want, rtol=1e-6)
