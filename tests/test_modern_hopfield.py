import jax
import jax.numpy as jnp
import numpy as np

import jamem as jm


def test_softmax_update_is_one_gradient_step_on_lse_energy(key):
    """Ramsauer et al. 2020 (arXiv:2008.02217): x - grad E(x) = Xi^T softmax(beta Xi x), through
    `retrieve` with step size 1."""
    xi = jax.random.normal(key, (12, 16))
    xs = jax.random.normal(jax.random.key(1), (5, 16))
    betas = (0.3, 1.0, 8.0)

    @jax.jit
    def both(xs):
        out = []
        for beta in betas:
            energy = jm.LogSumExpEnergy(beta)
            step = lambda x: jm.retrieve(energy, x, xi, solver=jm.GradientDescent(1.0), steps=1).state
            half = lambda x: jm.retrieve(energy, x, xi, solver=jm.GradientDescent(0.5), steps=1).state
            update = lambda x: xi.T @ jax.nn.softmax(beta * (xi @ x))
            out.append((jax.vmap(step)(xs), jax.vmap(update)(xs), jax.vmap(half)(xs)))
        return out

    for beta, (gd, sm, half) in zip(betas, both(xs)):
        np.testing.assert_allclose(gd, sm, rtol=1e-5, atol=1e-5, err_msg=f"beta={beta}")
        # a different step size is a different map: the check can fail
        assert not np.allclose(half, sm, atol=1e-3)


def test_repeated_updates_never_increase_the_energy(key):
    """CCCP (arXiv:2008.02217): the energy along x <- Xi^T softmax(beta Xi x) is non-increasing."""
    xi = jax.random.normal(key, (20, 10))
    x0 = 3.0 * jax.random.normal(jax.random.key(2), (10,))
    run = jax.jit(
        lambda x0: jm.retrieve(
            jm.LogSumExpEnergy(2.0), x0, xi, solver=jm.GradientDescent(1.0), steps=10, saveat=jm.SaveAt(every=1)
        )
    )
    e = np.asarray(run(x0).trajectory_energy, np.float64)
    assert np.all(np.diff(e) <= 1e-5 * np.abs(e[:-1]).max())
    assert e[-1] < e[0]


def _two_memories(delta, radius):
    """Two memories of norm `radius` with separation Delta = r^2 (1 - cos theta) = `delta`."""
    cos = 1.0 - delta / radius**2
    sin = np.sqrt(1.0 - cos**2)
    return jnp.array([[radius, 0.0, 0.0], [radius * cos, radius * sin, 0.0]])


def test_one_step_error_decays_like_exp_minus_beta_delta():
    """arXiv:2008.02217: the error of one update started at xi_1 falls with Delta, with log-slope near -beta."""
    beta, radius = 1.5, 4.0
    deltas = np.linspace(2.0, 9.0, 8)

    @jax.jit
    def error(xi):
        x1 = jm.retrieve(jm.LogSumExpEnergy(beta), xi[0], xi, solver=jm.GradientDescent(1.0), steps=1).state
        return jnp.linalg.norm(x1 - xi[0])

    errors = np.array([float(error(_two_memories(d, radius))) for d in deltas])
    assert np.all(np.diff(errors) < 0), errors
    slope = np.polyfit(deltas, np.log(errors), 1)[0]
    # error = sqrt(2 Delta) / (1 + exp(beta Delta)): slope -beta up to the slow sqrt(Delta) factor
    assert -1.2 * beta < slope < -0.8 * beta, slope
    # and Delta is what the experiment measures
    xi = _two_memories(5.0, radius)
    gram = xi @ xi.T
    np.testing.assert_allclose(gram[0, 0] - gram[0, 1], 5.0, rtol=1e-5)
