"""Diffusion as memory (arXiv:2309.17290, arXiv:2309.16750): the denoiser against Tweedie's formula and
the modern-Hopfield step, the probability-flow step against a float64 replay, memorisation with
uniform landing, vmap/jit equivalence and the input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

import jamem as jm
from jamem.networks import diffusion


def memories_and_point(count=6, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dim)).astype(np.float32), rng.normal(size=dim).astype(np.float32)


def numpy_denoiser(x, memories, sigma):
    """sum_mu softmax_mu(-|x - xi^mu|^2 / (2 sigma^2)) xi^mu in float64."""
    x, memories = np.asarray(x, np.float64), np.asarray(memories, np.float64)
    logits = -np.sum((memories - x) ** 2, axis=1) / (2 * sigma**2)
    weights = np.exp(logits - logits.max())
    return weights @ memories / weights.sum()


@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
def test_denoiser_is_tweedie_and_one_memory_step(sigma):
    memories, x = memories_and_point()

    def log_density(v):  # the Gaussian mixture written independently of the energy
        logs = jax.scipy.stats.norm.logpdf(v[None, :], loc=memories, scale=sigma).sum(axis=1)
        return logsumexp(logs) - jnp.log(memories.shape[0])

    got = diffusion.denoise(x, memories, sigma=sigma)
    np.testing.assert_allclose(got, numpy_denoiser(x, memories, sigma), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, x + sigma**2 * jax.grad(log_density)(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        diffusion.score(x, memories, sigma=sigma), jax.grad(log_density)(x), rtol=1e-4, atol=1e-5
    )
    step = jm.retrieve(jm.GaussianKernelEnergy(1 / sigma**2), x, memories, solver=jm.GradientDescent(1.0), steps=1)
    np.testing.assert_allclose(step.state, got, rtol=1e-5, atol=1e-5)


def test_score_matches_finite_differences_of_the_density():
    memories, x = memories_and_point(seed=3)
    sigma, h = 0.8, 1e-5

    def log_density(v):
        logs = -np.sum((memories.astype(np.float64) - v) ** 2, axis=1) / (2 * sigma**2)
        return np.log(np.sum(np.exp(logs)))

    x64 = x.astype(np.float64)
    numeric = [(log_density(x64 + h * e) - log_density(x64 - h * e)) / (2 * h) for e in np.eye(x.size)]
    np.testing.assert_allclose(diffusion.score(x, memories, sigma=sigma), numeric, rtol=1e-3, atol=1e-4)


def test_probability_flow_is_the_literal_euler_replay():
    memories, x = memories_and_point(count=5, dim=4, seed=1)
    flow = diffusion.ProbabilityFlow(0.8, sigma_min=0.05)
    solution = jm.retrieve(
        flow, (3.0 * x, jnp.asarray(3.0)), memories, solver=jm.Iterate(), steps=25, tol=None, saveat=jm.SaveAt(every=1)
    )
    xs, sigmas = solution.trajectory
    state, sigma = 3.0 * x.astype(np.float64), 3.0
    for t in range(1, 26):
        lower = max(0.8 * sigma, 0.05)
        state = state + (lower - sigma) * (state - numpy_denoiser(state, memories, sigma)) / sigma
        sigma = lower
        np.testing.assert_allclose(xs[t], state, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(sigmas[t], sigma, rtol=1e-6)
    assert float(sigmas[-1]) == pytest.approx(0.05)  # 3 * 0.8^t passes 0.05 at t = 19, then stays


def test_the_flow_stops_at_sigma_min():
    memories, x = memories_and_point(seed=2)
    flow = diffusion.ProbabilityFlow(0.5, sigma_min=0.01)
    solution = jm.retrieve(flow, (x, jnp.asarray(10.0)), memories, solver=jm.Iterate(), steps=100, tol=0.0)
    assert bool(solution.converged)
    # 10 * 0.5^t reaches 0.01 after 10 halvings (the 10th is floored); one more step changes nothing
    assert int(solution.num_steps) == 11
    assert float(solution.state[1]) == pytest.approx(0.01)


def test_ideal_diffusion_memorises_each_memory_with_probability_one_over_k():
    count, dim, samples = 8, 16, 2000
    memories = np.asarray(jax.random.normal(jax.random.key(1), (count, dim)))
    noise = jax.random.normal(jax.random.key(0), (samples, dim))
    out = jax.jit(jax.vmap(lambda z: diffusion.generate(z, memories, sigma_max=80.0, sigma_min=0.002, steps=100)))(
        noise
    )
    index, distance = jax.vmap(diffusion.nearest_memory, (0, None))(out, memories)
    assert float(jnp.max(distance)) < 1e-4  # every sample is a stored memory
    counts = np.bincount(np.asarray(index), minlength=count)
    expected = samples / count
    chi_square = float(np.sum((counts - expected) ** 2 / expected))
    assert chi_square < 24.3, counts  # the 0.1% tail of chi-square with 7 degrees of freedom

    # retrieval at one low temperature from the same starts lands by basin, far from uniform
    energy = jm.GaussianKernelEnergy(1 / 0.002**2)
    fixed = jax.jit(
        jax.vmap(lambda z: jm.retrieve(energy, 80.0 * z, memories, solver=jm.GradientDescent(1.0), steps=100).state)
    )(noise)
    fixed_counts = np.bincount(
        np.asarray(jax.vmap(diffusion.nearest_memory, (0, None))(fixed, memories)[0]), minlength=count
    )
    assert float(np.sum((fixed_counts - expected) ** 2 / expected)) > 100.0, fixed_counts


def test_generate_vmap_equals_loop_and_jit_equals_eager():
    memories = np.asarray(jax.random.normal(jax.random.key(4), (5, 6)))
    noise = jax.random.normal(jax.random.key(5), (3, 6))
    options = dict(sigma_max=10.0, sigma_min=0.01, steps=30)
    batched = jax.vmap(lambda z: diffusion.generate(z, memories, **options))(noise)
    for i in range(3):
        eager = diffusion.generate(noise[i], memories, **options)
        np.testing.assert_allclose(batched[i], eager, rtol=1e-5, atol=1e-5)
        jitted = jax.jit(lambda z: diffusion.generate(z, memories, **options))(noise[i])
        np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)
    undenoised = diffusion.generate(noise[0], memories, denoise_last=False, **options)
    np.testing.assert_allclose(
        diffusion.denoise(undenoised, memories, sigma=0.01),
        diffusion.generate(noise[0], memories, **options),
        atol=1e-5,
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    # float16 overflows |x - xi|^2 (784 pixels at sigma 80) and 1/sigma^2 below sigma = 0.004
    memories = jax.random.uniform(jax.random.key(2), (10, 784), minval=-1.0, maxval=1.0)
    noise = jax.random.normal(jax.random.key(3), (784,))
    low = diffusion.generate(noise.astype(dtype), memories.astype(dtype), steps=40)
    assert low.dtype == dtype
    np.testing.assert_array_equal(low, diffusion.generate(noise, memories, steps=40).astype(dtype))
    near = (memories[0] + 0.001).astype(dtype)
    np.testing.assert_array_equal(
        diffusion.denoise(near, memories.astype(dtype), sigma=0.003), memories[0].astype(dtype)
    )


def test_bad_inputs_are_refused_with_the_argument_named():
    memories, x = memories_and_point()
    with pytest.raises(ValueError, match="ratio"):
        diffusion.ProbabilityFlow(1.0, sigma_min=0.1)
    with pytest.raises(ValueError, match="ratio"):
        diffusion.ProbabilityFlow(0.0, sigma_min=0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        diffusion.ProbabilityFlow(0.5, sigma_min=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        diffusion.generate(x, memories, sigma_max=1.0, sigma_min=2.0)
    with pytest.raises(ValueError, match="sigma_max"):
        diffusion.generate(x, memories, sigma_max=float("nan"))
    # (under the tests' runtime shape checks jaxtyping refuses the mismatch first, naming `noise` too)
    with pytest.raises((ValueError, TypeError), match="noise"):
        diffusion.generate(x[:3], memories)
    with pytest.raises((ValueError, TypeError), match="memories"):
        diffusion.generate(x, memories[0])
    with pytest.raises(ValueError, match="sigma"):
        diffusion.denoise(x, memories, sigma=0.0)
    with pytest.raises(ValueError, match="steps"):
        diffusion.generate(x, memories, steps=0)
    with pytest.raises(TypeError, match="denoise_last"):
        diffusion.generate(x, memories, denoise_last=1)
    flow = diffusion.ProbabilityFlow(0.5, sigma_min=0.1)
    with pytest.raises(ValueError, match="tuple"):
        jm.retrieve(flow, x, memories, solver=jm.Iterate())
    with pytest.raises(ValueError, match="tuple"):  # a list would come back from the step as a tuple
        jm.retrieve(flow, [x, jnp.asarray(1.0)], memories, solver=jm.Iterate())
    with pytest.raises(ValueError, match="sigma_min"):
        jm.retrieve(flow, (x, jnp.asarray(0.01)), memories, solver=jm.Iterate())
    with pytest.raises(ValueError, match="params"):
        jm.retrieve(flow, (x, jnp.asarray(1.0)), memories[0], solver=jm.Iterate())
    with pytest.raises(ValueError, match="features"):
        jm.retrieve(flow, (x[:3], jnp.asarray(1.0)), memories, solver=jm.Iterate())
    with pytest.raises((ValueError, TypeError), match="sigma"):  # jaxtyping's runtime check, under the tests, or ours
        diffusion.denoise(x, memories, sigma=np.array([0.5]))
    with pytest.raises(ValueError, match="sigma"):
        diffusion.denoise(x, memories, sigma=1e-19)  # 1/sigma^2 overflows float32
    with pytest.raises(TypeError, match="sigma_max"):
        jax.jit(lambda s: diffusion.generate(x, memories, sigma_max=s))(10.0)
    with pytest.raises(TypeError, match="ratio"):
        jax.jit(lambda r: diffusion.ProbabilityFlow(r, sigma_min=0.1))(0.5)
    with pytest.raises(TypeError, match="Iterate"):
        jm.retrieve(flow, (x, jnp.asarray(1.0)), memories, solver=jm.GradientDescent())


def test_far_from_the_memories_the_denoiser_stays_a_mixture_of_them():
    # computed as x - grad E, the denoiser cancelled at |x| = 1e6 to a point off the memories
    memory = np.array([[0.1234567, 0.7654321]], np.float32)
    np.testing.assert_array_equal(diffusion.denoise(np.array([1e6, 1e6], np.float32), memory, sigma=1.0), memory[0])
    segment = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    for far in (1e8, 1e15):  # (1, 1) is nearer by 2 far - 2 in squared distance: all the weight
        # (|x - xi|^2's rounding hid that gap: the old form gave the midpoint at 1e8, NaN at 2e19)
        np.testing.assert_array_equal(diffusion.denoise(np.array([far, 0.0], np.float32), segment, sigma=1.0), [1, 1])
    with pytest.raises(ValueError, match="`x`.*1e\\+16"):  # |x - xi|^2 would overflow float32
        diffusion.denoise(np.array([2e19, 0.0], np.float32), segment, sigma=1.0)
    with pytest.raises(ValueError, match="`memories`"):
        diffusion.nearest_memory(np.zeros(2, np.float32), np.array([[0.0, 0.0], [1e20, 0.0]], np.float32))
    cluster = np.array([[0.0], [1e4], [1e4 + 0.8]], np.float32)  # far from the origin, 0.8 apart
    np.testing.assert_allclose(
        diffusion.denoise(np.array([1e4 + 0.7], np.float32), cluster, sigma=0.3),
        numpy_denoiser([1e4 + 0.7], cluster, 0.3),
        rtol=1e-6,
    )
    index, distance = diffusion.nearest_memory(np.array([1e15, 0.0], np.float32), segment)
    assert int(index) == 1 and float(distance) == pytest.approx(1e15, rel=1e-6)


def test_score_of_half_precision_input_is_float32_not_inf():
    memories = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    x = np.array([0.5, 0.0], np.float32)
    low = diffusion.score(x.astype(np.float16), memories.astype(np.float16), sigma=1e-3)
    assert low.dtype == jnp.float32 and np.all(np.isfinite(low))  # ~ -5e5: past float16's 65504
    np.testing.assert_allclose(low, diffusion.score(x, memories, sigma=1e-3), rtol=1e-6)


def test_a_flow_may_start_at_sigma_min_itself_and_never_steps_back():
    memories, x = memories_and_point()
    for dtype in (jnp.float32, jnp.bfloat16):  # 0.7 rounds below itself in both
        flow = diffusion.ProbabilityFlow(0.5, sigma_min=0.7)
        start = (x, jnp.asarray(0.7, dtype))
        out = jm.retrieve(flow, start, memories, solver=jm.Iterate(), steps=3, tol=None)
        np.testing.assert_array_equal(out.state[0], x)  # at sigma_min the step is 0, not uphill
        assert out.state[1] == start[1]


def test_a_half_precision_flow_stops_at_sigma_min():
    # float16 rounds 0.002 up to 0.0020008: each new level used to round back above sigma_min, so the
    # flow crept on in tiny steps and tol = 0 never stopped it
    memories, x = memories_and_point()
    flow = diffusion.ProbabilityFlow(0.5, sigma_min=0.002)
    out = jm.retrieve(flow, (x.astype(jnp.float16), jnp.asarray(0.01, jnp.float16)), memories, solver=jm.Iterate(),
                      steps=50, tol=0.0)  # fmt: skip
    assert bool(out.converged) and int(out.num_steps) < 10
    assert out.state[1] == jnp.asarray(0.002, jnp.float16)
