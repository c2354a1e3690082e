"""The engine's options: pytree states with pytree masks, save points with one meaning, and both
adjoints against gradients through an unrolled reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jamem as jm

XI = jax.random.normal(jax.random.key(0), (6, 5)) / 2.0
X0 = jax.random.normal(jax.random.key(1), (5,))
LSE = jm.LogSumExpEnergy(0.7)


def _unrolled(x, params, energy, step_size, steps):
    """The same descent written out: x <- x - eta grad E, `steps` times."""
    for _ in range(steps):
        x = jax.tree.map(lambda a, g: a - step_size * g, x, jax.grad(energy)(x, params))
    return x


def test_pytree_state_and_mask():
    # a state split over two arrays, one of them partly clamped; the energy couples them
    def energy(state, params):
        a, b = state
        return LSE(jnp.concatenate([a, b]), params)

    x0 = (X0[:2], X0[2:])
    mask = (jnp.array([True, False]), jnp.zeros(3, bool))
    sol = jm.retrieve(energy, x0, XI, solver=jm.GradientDescent(0.3), steps=25, mask=mask)
    flat = jm.retrieve(
        LSE, X0, XI, solver=jm.GradientDescent(0.3), steps=25, mask=jnp.array([True, False, False, False, False])
    )
    np.testing.assert_allclose(jnp.concatenate(sol.state), flat.state, rtol=1e-6, atol=1e-7)
    assert float(sol.state[0][0]) == float(X0[0])  # clamped
    with pytest.raises(ValueError, match="mask"):
        jm.retrieve(energy, x0, XI, mask=jnp.zeros(5, bool))


def test_save_points_mean_the_same_everywhere():
    gd = jm.GradientDescent(0.2)
    full = jm.retrieve(LSE, X0, XI, solver=gd, steps=12, saveat=jm.SaveAt(every=1))
    every3 = jm.retrieve(LSE, X0, XI, solver=gd, steps=12, saveat=jm.SaveAt(every=3))
    chosen = jm.retrieve(LSE, X0, XI, solver=gd, steps=12, saveat=jm.SaveAt(steps=(0, 5, 12)))
    energy_only = jm.retrieve(LSE, X0, XI, solver=gd, steps=12, saveat=jm.SaveAt(every=3, states=False))
    np.testing.assert_array_equal(full.ts, np.arange(13))
    np.testing.assert_array_equal(every3.ts, [0, 3, 6, 9, 12])
    np.testing.assert_allclose(every3.trajectory, full.trajectory[::3], rtol=1e-6)
    np.testing.assert_allclose(chosen.trajectory, full.trajectory[np.array([0, 5, 12])], rtol=1e-6)
    np.testing.assert_allclose(chosen.trajectory_energy, full.trajectory_energy[np.array([0, 5, 12])], rtol=1e-6)
    np.testing.assert_allclose(energy_only.trajectory_energy, every3.trajectory_energy, rtol=1e-6)
    assert energy_only.trajectory is None
    # energies are those of the saved states, and the last saved state is the final one
    np.testing.assert_allclose(full.trajectory_energy, jax.vmap(lambda x: LSE(x, XI))(full.trajectory), rtol=1e-5)
    np.testing.assert_allclose(full.trajectory[-1], full.state)
    # an early stop: rows after it repeat the final state, under the same save points
    stopped = jm.retrieve(LSE, X0, XI, solver=gd, steps=400, tol=1e-4, saveat=jm.SaveAt(every=50))
    taken = int(stopped.num_steps)
    assert bool(stopped.converged) and taken < 400
    later = np.asarray(stopped.ts) > taken
    assert later.any()
    np.testing.assert_allclose(stopped.trajectory[later], np.broadcast_to(stopped.state, (later.sum(), 5)))
    with pytest.raises(ValueError, match="every"):
        jm.SaveAt(every=0)
    with pytest.raises(ValueError, match="increasing"):
        jm.SaveAt(steps=(3, 1))
    with pytest.raises(ValueError, match="asks for step"):
        jm.retrieve(LSE, X0, XI, steps=4, saveat=jm.SaveAt(steps=(0, 9)))


def test_direct_adjoint_equals_the_unrolled_gradient():
    gd = jm.GradientDescent(0.2)

    def loss_fixed(m):
        return jnp.sum(jm.retrieve(LSE, X0, m, solver=gd, steps=30).state ** 2)

    def loss_reference(m):
        return jnp.sum(_unrolled(X0, m, LSE, 0.2, 30) ** 2)

    np.testing.assert_allclose(jax.grad(loss_fixed)(XI), jax.grad(loss_reference)(XI), rtol=1e-4, atol=1e-6)

    # with a tolerance the loop is a checkpointed while loop, still differentiable: its gradient
    # is the unrolled one over the steps it actually took
    taken = int(jm.retrieve(LSE, X0, XI, solver=gd, steps=500, tol=1e-3).num_steps)

    def loss_tol(m):
        return jnp.sum(jm.retrieve(LSE, X0, m, solver=gd, steps=500, tol=1e-3).state ** 2)

    def loss_taken(m):
        return jnp.sum(_unrolled(X0, m, LSE, 0.2, taken) ** 2)

    np.testing.assert_allclose(jax.grad(loss_tol)(XI), jax.grad(loss_taken)(XI), rtol=1e-4, atol=1e-6)

    # and through the recorded energies (checkpointed loop with save points)
    def energy_sum(m):
        sol = jm.retrieve(LSE, X0, m, solver=gd, steps=40, tol=1e-9, saveat=jm.SaveAt(every=10))
        return jnp.sum(sol.trajectory_energy)

    def energy_sum_scan(m):
        sol = jm.retrieve(LSE, X0, m, solver=gd, steps=40, saveat=jm.SaveAt(every=10))
        return jnp.sum(sol.trajectory_energy)

    np.testing.assert_allclose(jax.grad(energy_sum)(XI), jax.grad(energy_sum_scan)(XI), rtol=1e-4, atol=1e-6)


def test_implicit_adjoint_equals_a_long_unrolled_gradient_for_a_pytree_state():
    gd = jm.GradientDescent(1.0)

    def energy(state, params):
        return LSE(jnp.concatenate([state["a"], state["b"]]), params)

    x0 = {"a": X0[:3], "b": X0[3:]}

    def loss(m, adjoint, steps, tol):
        sol = jm.retrieve(energy, x0, m, solver=gd, steps=steps, tol=tol, adjoint=adjoint)
        return jnp.sum(sol.state["a"] ** 2) + jnp.sum(jnp.sin(sol.state["b"]))

    implicit = jax.grad(loss)(XI, jm.ImplicitAdjoint(), 2000, 1e-7)
    gmres = jax.grad(loss)(XI, jm.ImplicitAdjoint(linear_solver="gmres"), 2000, 1e-7)
    unrolled = jax.grad(loss)(XI, jm.DirectAdjoint(), 300, None)
    assert float(jnp.max(jnp.abs(unrolled))) > 1e-3
    np.testing.assert_allclose(implicit, unrolled, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gmres, unrolled, rtol=1e-3, atol=1e-5)
    sol = jm.retrieve(energy, x0, XI, solver=gd, steps=2000, tol=1e-7, adjoint=jm.ImplicitAdjoint())
    assert bool(sol.converged) and 0 < int(sol.num_steps) < 2000


def test_tol_none_runs_every_step_for_every_solver():
    xi = jax.random.rademacher(jax.random.key(3), (4, 20), dtype=jnp.float32)
    for solver in (jm.AsyncBinary(), jm.SyncBinary()):
        sol = jm.retrieve(jm.DenseEnergy(jm.Power(3)), xi[0], xi, solver=solver, steps=7, tol=None)
        assert int(sol.num_steps) == 7 and bool(sol.converged)
        default = jm.retrieve(jm.DenseEnergy(jm.Power(3)), xi[0], xi, solver=solver, steps=7)
        assert int(default.num_steps) == 1  # a stored memory: the first sweep flips nothing
