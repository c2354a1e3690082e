import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm
from jamem import lagrangians as lg
from jamem import two_layer as tl

N, K = 10, 6


def _problem(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    xi = jax.random.normal(k1, (K, N)) / np.sqrt(N)
    v0 = jax.random.normal(k2, (N,))
    return xi, v0


MODELS = {
    "A": lambda tau_h: tl.model_a(tau_h=tau_h),
    "B": lambda tau_h: tl.model_b(2.0, tau_h=tau_h),
    "C": lambda tau_h: tl.model_c(lg.Exponential(2.0), tau_h=tau_h),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_energy_never_increases_along_the_dynamics(name):
    """arXiv:2008.06996: dE/dt <= 0 along Euler trajectories with a small step, for slow and fast hidden neurons."""
    xi, v0 = _problem(1)
    scale = 3.0 if name == "A" else 1.0  # model A needs overlaps large enough to move Sign(v)
    run = jax.jit(
        lambda net, v0, h0: tl.simulate(net, v0, scale * xi, h0=h0, dt=0.01, steps=400, save_every=2).trajectory_energy
    )
    h0 = jax.random.normal(jax.random.key(7), (K,))
    for tau_h in (0.5, 0.0):
        e = np.asarray(run(MODELS[name](tau_h), v0, h0), np.float64)
        assert np.all(np.isfinite(e))
        assert np.all(np.diff(e) <= 1e-5 * max(1.0, np.abs(e).max())), (name, tau_h, np.diff(e).max())
        assert e[-1] < e[0] - 1e-3, (name, tau_h)  # it really moves


def test_energy_derivative_is_minus_the_hessian_forms():
    """arXiv:2008.06996 exactly: dE/dt = - tau_v v' Hess L_v v' - tau_h h' Hess L_h h' (model B, by jax.jvp)."""
    xi, v0 = _problem(2)
    net = tl.model_b(1.5, tau_v=0.7, tau_h=0.3)
    h0 = jax.random.normal(jax.random.key(3), (K,))

    @jax.jit
    def parts(v0, h0):
        dv, dh = net.velocity(v0, h0, xi)
        _, dedt = jax.jvp(lambda v, h: net.energy(v, h, xi), (v0, h0), (dv, dh))
        return dv, dh, dedt, jax.hessian(net.feature)(v0), jax.hessian(net.hidden)(h0)

    dv, dh, dedt, hv, hh = parts(v0, h0)
    expected = -0.7 * dv @ hv @ dv - 0.3 * dh @ hh @ dh
    np.testing.assert_allclose(dedt, expected, rtol=1e-4, atol=1e-6)
    assert expected < 0


def test_fast_hidden_energies_are_the_one_layer_energies():
    """Models A-C of arXiv:2008.06996: with h = Xi g(v) the two-layer energy is the DenseAM, modern Hopfield and
    normalised DenseAM energy of v."""
    xi, v0 = _problem(3)
    xi = 2.0 * xi
    # model A: L_h = sum relu^3 / 3, so 3 E = - sum relu(xi . Sign v)^3, the DenseEnergy with F = relu^3
    np.testing.assert_allclose(
        3.0 * tl.model_a().fast_energy(v0, xi),
        jm.DenseEnergy(jm.RectifiedPower(3))(jnp.sign(v0), xi),
        rtol=1e-5,
    )
    np.testing.assert_allclose(tl.model_b(1.7).fast_energy(v0, xi), jm.LogSumExpEnergy(1.7)(v0, xi), rtol=1e-5)
    overlaps = xi @ v0 / jnp.linalg.norm(v0)
    np.testing.assert_allclose(
        tl.model_c(lg.Exponential(2.0)).fast_energy(v0, xi), -jnp.sum(jnp.exp(2.0 * overlaps)) / 2.0, rtol=1e-5
    )
    # the two-layer energy away from the hidden equilibrium is a different number: the check can fail
    h = 1.5 * tl.model_b(1.7).hidden_equilibrium(v0, xi)  # (a shift would not do: softmax ignores it)
    assert not np.isclose(tl.model_b(1.7).energy(v0, h, xi), jm.LogSumExpEnergy(1.7)(v0, xi), rtol=1e-3)


def test_model_b_fast_step_is_the_softmax_update_and_fixed_points_agree():
    """Model B: with tau_h = 0 one Euler step with dt = tau_v is v <- Xi^T softmax(beta Xi v); with a
    fast but finite tau_h the dynamics settle where modern Hopfield retrieval does."""
    xi, v0 = _problem(4)
    xi, beta = 3.0 * xi, 2.0
    one = tl.simulate(tl.model_b(beta, tau_v=0.5), v0, xi, dt=0.5, steps=1)
    np.testing.assert_allclose(one.state[0], xi.T @ jax.nn.softmax(beta * (xi @ v0)), rtol=1e-5, atol=1e-6)
    target = jm.retrieve(jm.LogSumExpEnergy(beta), v0, xi, solver=jm.GradientDescent(1.0), steps=200).state
    slow = jax.jit(lambda v0: tl.simulate(tl.model_b(beta, tau_h=0.05), v0, xi, dt=0.05, steps=800).state[0])(v0)
    np.testing.assert_allclose(slow, target, atol=1e-3)
    assert np.abs(np.asarray(target - v0)).max() > 0.1  # the fixed point is not the start


def test_simulate_works_under_vmap_and_saves_on_schedule():
    xi, _ = _problem(5)
    vs = jax.random.normal(jax.random.key(9), (3, N))
    out = jax.jit(jax.vmap(lambda v: tl.simulate(tl.model_b(), v, xi, dt=0.1, steps=20, save_every=5)))(vs)
    vs, hs = out.trajectory
    assert vs.shape == (3, 5, N) and hs.shape == (3, 5, K) and out.trajectory_energy.shape == (3, 5)
    np.testing.assert_allclose(0.1 * out.ts, np.tile(np.arange(5) * 0.5, (3, 1)), rtol=1e-6)  # times dt * step
    np.testing.assert_allclose(vs[:, -1], out.state[0])


def test_bad_inputs_raise_clear_errors():
    xi, v0 = _problem(6)
    net = tl.model_b(tau_h=0.5)
    with pytest.raises(TypeError, match="`feature`"):
        tl.TwoLayerNetwork(lambda x: x, lg.Softmax())
    with pytest.raises(ValueError, match="`tau_v`"):
        tl.TwoLayerNetwork(lg.Identity(), lg.Softmax(), tau_v=0.0)
    with pytest.raises(ValueError, match="`tau_h`"):
        tl.model_b(tau_h=-1.0)
    with pytest.raises(ValueError, match="`dt`"):
        tl.simulate(net, v0, xi, dt=0.6)
    with pytest.raises(ValueError, match="`dt`"):
        tl.simulate(net, v0, xi, dt=0.0)
    # shape mismatches: jaxtyping's runtime check (a TypeError) in the tests, a ValueError without it
    with pytest.raises((ValueError, TypeError), match="v0|memories"):
        tl.simulate(net, v0[:-1], xi)
    with pytest.raises((ValueError, TypeError), match="h0|memories"):
        tl.simulate(net, v0, xi, h0=jnp.zeros(K + 1))
    with pytest.raises(ValueError, match="`steps`"):
        tl.simulate(net, v0, xi, steps=0)
    with pytest.raises(ValueError, match="every"):
        tl.simulate(net, v0, xi, steps=10, save_every=3)
    with pytest.raises(ValueError, match="`memories`"):
        tl.simulate(net, v0, xi.at[0, 0].set(jnp.nan))
    with pytest.raises(TypeError, match="network"):
        tl.simulate(jm.LogSumExpEnergy(), v0, xi)
