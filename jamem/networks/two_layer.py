"""The general two-layer associative memory of Krotov & Hopfield 2020 ("Large Associative Memory
Problem in Neurobiology and Machine Learning", arXiv:2008.06996).

Feature neurons v (N of them) and hidden neurons h (K of them) each have a Lagrangian, L_v and
L_h (`jamem.lagrangians`), whose gradients are the activations g = grad L_v(v), f = grad L_h(h).
The memories Xi (K x N) are the symmetric synapses between the layers. The dynamics (arXiv:2008.06996) are

    tau_v dv/dt = Xi^T f - v + I,        tau_h dh/dt = Xi g - h,

I being an optional external input to the feature neurons, and the energy (arXiv:2008.06996)

    E(v, h) = [ (v - I) . g - L_v(v) ] + [ h . f - L_h(h) ] - f . Xi g

decreases along them, dE/dt = - tau_v v' Hess L_v v' - tau_h h' Hess L_h h' <= 0, whenever both
Hessians are positive semi-definite. `simulate` integrates the dynamics with explicit Euler through
`jamem.retrieve` (`TwoLayerFlow` is the network as an energy) and records the energy.

In the limit of fast hidden neurons (tau_h -> 0, allowed here as `tau_h=0`) the hidden layer sits
at h = Xi g(v) and the energy becomes a one-layer energy of v:

- model A (arXiv:2008.06996): L_v = sum |v| (g = Sign v), L_h = sum_mu F(h_mu): E = - sum_mu F(xi^mu . Sign v),
  the Dense Associative Memory of Krotov & Hopfield 2016;
- model B (arXiv:2008.06996): L_v = 1/2 |v|^2, L_h = (1/beta) log sum exp(beta h): E = 1/2 |v|^2 -
  (1/beta) log sum_mu exp(beta xi^mu . v), the modern Hopfield network; an Euler step with
  dt = tau_v is v <- Xi^T softmax(beta Xi v) (Ramsauer et al. 2020);
- model C (arXiv:2008.06996): L_v = |v| (g = v / |v|), L_h = sum_mu F(h_mu): E = - sum_mu F(xi^mu . v / |v|).

`model_a`, `model_b` and `model_c` build these configurations.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import as_float_array, check_feature_dims, check_positive, check_positive_int
from ..core.dynamics import EulerFlow, SaveAt, Solution, retrieve
from ..core.energies import AbstractEnergy
from ..core.lagrangians import AbstractLagrangian, Identity, RectifiedPower, Softmax, SphericalNorm


class AbsoluteValue(AbstractLagrangian):
    """L(x) = sum_i |x_i|, g(x) = Sign(x) (0 at x = 0): the feature Lagrangian of model A (arXiv:2008.06996).

    Convex; its Hessian vanishes away from 0, so the neuron energy x . g - L is identically 0 and
    the energy of model A depends on v only through Sign(v)."""

    def __call__(self, x):
        return jnp.sum(jnp.abs(x))

    def activation(self, x):
        return jnp.sign(x)


def _check_lagrangian(lagrangian, *, name):
    if not isinstance(lagrangian, AbstractLagrangian):
        raise TypeError(
            f"`{name}` must be a jamem.lagrangians.AbstractLagrangian (e.g. lagrangians.Softmax()), "
            f"got {type(lagrangian).__name__}."
        )
    return lagrangian


class TwoLayerNetwork(eqx.Module):
    """Feature and hidden neurons with Lagrangians and time constants (arXiv:2008.06996). Acts on one state
    (v, h); batch with `jax.vmap`.

    Args:
        feature: L_v, the feature neurons' Lagrangian.
        hidden: L_h, the hidden neurons' Lagrangian.
        tau_v: the feature time constant, > 0.
        tau_h: the hidden time constant, >= 0; 0 is the limit of fast hidden neurons, where
            h = Xi g(v) at every instant.
    """

    feature: AbstractLagrangian
    hidden: AbstractLagrangian
    tau_v: float = eqx.field(static=True, default=1.0)
    tau_h: float = eqx.field(static=True, default=1.0)

    def __init__(self, feature, hidden, *, tau_v: float = 1.0, tau_h: float = 1.0):
        self.feature = _check_lagrangian(feature, name="feature")
        self.hidden = _check_lagrangian(hidden, name="hidden")
        self.tau_v = check_positive(tau_v, name="tau_v")
        self.tau_h = check_positive(tau_h, name="tau_h", allow_zero=True)

    def energy(
        self,
        v: Float[Array, " N"],
        h: Float[Array, " K"],
        memories: Float[Array, "K N"],
        external: Float[Array, " N"] | None = None,
    ) -> Float[Array, ""]:
        """E = [(v - I) . g - L_v(v)] + [h . f - L_h(h)] - f . Xi g (arXiv:2008.06996)."""
        _check_external(external, v)
        g = self.feature.activation(v)
        f = self.hidden.activation(h)
        shifted = v if external is None else v - external
        feature_term = jnp.dot(shifted, g) - self.feature(v)
        hidden_term = jnp.dot(h, f) - self.hidden(h)
        return feature_term + hidden_term - jnp.dot(f, memories @ g)

    def hidden_equilibrium(self, v: Float[Array, " N"], memories: Float[Array, "K N"]) -> Float[Array, " K"]:
        """h = Xi g(v), where the hidden neurons settle for fixed v (and stay when tau_h = 0)."""
        return memories @ self.feature.activation(v)

    def fast_energy(
        self, v: Float[Array, " N"], memories: Float[Array, "K N"], external: Float[Array, " N"] | None = None
    ) -> Float[Array, ""]:
        """The energy with the hidden neurons at equilibrium, E(v, Xi g(v)): the one-layer energy
        of the fast-hidden limit (arXiv:2008.06996)."""
        return self.energy(v, self.hidden_equilibrium(v, memories), memories, external)

    def velocity(
        self,
        v: Float[Array, " N"],
        h: Float[Array, " K"],
        memories: Float[Array, "K N"],
        external: Float[Array, " N"] | None = None,
    ) -> tuple[Float[Array, " N"], Float[Array, " K"]]:
        """(dv/dt, dh/dt) = ((Xi^T f - v + I) / tau_v, (Xi g - h) / tau_h) (arXiv:2008.06996); dh/dt is 0 when
        tau_h = 0 (h is then kept at Xi g by `simulate`)."""
        _check_external(external, v)
        drive = memories.T @ self.hidden.activation(h) - v
        if external is not None:
            drive = drive + external
        dv = drive / self.tau_v
        dh = jnp.zeros_like(h) if self.tau_h == 0 else (self.hidden_equilibrium(v, memories) - h) / self.tau_h
        return dv, dh


def _check_external(external, v) -> None:
    """The external input I must be one value per feature neuron: (N,) like v (checked when traced,
    before the dynamics run; a (1,) or scalar input would broadcast silently)."""
    if external is not None and jnp.shape(external) != jnp.shape(v):
        shapes = tuple(jnp.shape(v)), tuple(jnp.shape(external))
        raise ValueError(f"`external` must have the shape of `v` {shapes[0]}, got {shapes[1]}.")


def model_a(hidden: AbstractLagrangian | None = None, *, tau_v: float = 1.0, tau_h: float = 0.0) -> TwoLayerNetwork:
    """Model A (arXiv:2008.06996): L_v = sum |v| (g = Sign v), L_h = sum_mu F(h_mu). With tau_h = 0 the energy
    is the Dense Associative Memory energy - sum_mu F(xi^mu . Sign v) (Krotov & Hopfield 2016).

    Args:
        hidden: the hidden Lagrangian L_h(h) = sum_mu F(h_mu), a separable
            `jamem.core.lagrangians` Lagrangian (default `RectifiedPower(3)`:
            F(x) = max(x, 0)^3 / 3; `Exponential(beta)` also fits).
    """
    hidden = RectifiedPower(3) if hidden is None else hidden
    return TwoLayerNetwork(AbsoluteValue(), hidden, tau_v=tau_v, tau_h=tau_h)


def model_b(beta: float = 1.0, *, tau_v: float = 1.0, tau_h: float = 0.0) -> TwoLayerNetwork:
    """Model B (arXiv:2008.06996): L_v = 1/2 |v|^2, L_h = (1/beta) log sum exp(beta h). With tau_h = 0 the
    energy is 1/2 |v|^2 - (1/beta) log sum_mu exp(beta xi^mu . v) (`jamem.LogSumExpEnergy`) and an
    Euler step with dt = tau_v is the modern Hopfield update v <- Xi^T softmax(beta Xi v)."""
    return TwoLayerNetwork(Identity(), Softmax(beta), tau_v=tau_v, tau_h=tau_h)


def model_c(hidden: AbstractLagrangian | None = None, *, tau_v: float = 1.0, tau_h: float = 0.0) -> TwoLayerNetwork:
    """Model C (arXiv:2008.06996): L_v = |v| (g = v / |v|), L_h = sum_mu F(h_mu). With tau_h = 0 the energy is
    - sum_mu F(xi^mu . v / |v|).

    Args:
        hidden: the hidden Lagrangian L_h(h) = sum_mu F(h_mu) (default `RectifiedPower(3)`).
    """
    hidden = RectifiedPower(3) if hidden is None else hidden
    return TwoLayerNetwork(SphericalNorm(), hidden, tau_v=tau_v, tau_h=tau_h)


class TwoLayerFlow(AbstractEnergy):
    """The two-layer network as a `jamem` energy for `retrieve`: the state is (v, h) (v alone when
    tau_h = 0, h then sitting at Xi g(v)), `params` the memories Xi, and the velocity is the
    dynamics (arXiv:2008.06996), so `retrieve(TwoLayerFlow(network), (v0, h0), memories, solver=EulerFlow(dt))`
    runs the network. The energy decreases along it (arXiv:2008.06996)."""

    network: TwoLayerNetwork
    external: Float[Array, " N"] | None = None

    def _layers(self, state, memories):
        if self.network.tau_h == 0:
            return state, self.network.hidden_equilibrium(state, memories)
        return state

    def __call__(self, state, memories):
        v, h = self._layers(state, memories)
        return self.network.energy(v, h, memories, self.external)

    def velocity(self, state, memories):
        dv, dh = self.network.velocity(*self._layers(state, memories), memories, self.external)
        return dv if self.network.tau_h == 0 else (dv, dh)


def simulate(
    network: TwoLayerNetwork,
    v0: Float[Array, " N"],
    memories: Float[Array, "K N"],
    *,
    h0: Float[Array, " K"] | None = None,
    dt: float = 0.1,
    steps: int = 100,
    external: Float[Array, " N"] | None = None,
    save_every: int = 1,
) -> Solution:
    """Integrate the two-layer dynamics (arXiv:2008.06996) with explicit Euler through `jamem.retrieve`,

        v <- v + (dt / tau_v) (Xi^T f(h) - v + I),    h <- h + (dt / tau_h) (Xi g(v) - h),

    both from the same (old) state. With tau_h = 0, h = Xi g(v) after every step (and at the
    start). Differentiable end to end; batch with `jax.vmap`.

    Args:
        network: a `TwoLayerNetwork` (e.g. `model_b(beta)`).
        v0: the initial feature state, shape (N,).
        memories: Xi, shape (K, N).
        h0: the initial hidden state, shape (K,); default Xi g(v0) (the hidden equilibrium, also
            used whatever `h0` when tau_h = 0).
        dt: the Euler step, 0 < dt <= min(tau_v, tau_h) (tau_h = 0 excepted); larger steps
            overshoot and the energy need not decrease.
        steps: the number of Euler steps.
        external: the external input I to the feature neurons, shape (N,), or None.
        save_every: record the state and energy every this many steps (and at step 0).

    Returns:
        A `jamem.Solution` whose state and trajectory are the pair (v, h) (with times
        `dt * solution.ts`).
    """
    if not isinstance(network, TwoLayerNetwork):
        raise TypeError(f"`network` must be a TwoLayerNetwork (e.g. model_b()), got {type(network).__name__}.")
    v0 = as_float_array(v0, name="v0", ndim=1)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_feature_dims(v0, memories, state_name="v0")
    if h0 is None or network.tau_h == 0:
        h0 = network.hidden_equilibrium(v0, memories)
    else:
        h0 = as_float_array(h0, name="h0", ndim=1)
        if h0.shape[0] != memories.shape[0]:
            raise ValueError(
                f"`h0` has {h0.shape[0]} hidden neurons but `memories` has {memories.shape[0]} rows: they must match."
            )
    if external is not None:
        external = as_float_array(external, name="external", ndim=1)
        if external.shape != v0.shape:
            raise ValueError(f"`external` must have the shape of `v0` {tuple(v0.shape)}, got {tuple(external.shape)}.")
    dt = check_positive(dt, name="dt")
    taus = [network.tau_v] + ([network.tau_h] if network.tau_h > 0 else [])
    if isinstance(dt, float) and dt > min(taus):
        raise ValueError(
            f"`dt` ({dt}) must be at most the smallest nonzero time constant ({min(taus)}) for explicit Euler."
        )
    fast = network.tau_h == 0
    solution = retrieve(
        TwoLayerFlow(network, external),
        v0 if fast else (v0, h0),
        memories,
        solver=EulerFlow(dt),
        steps=steps,
        tol=None,
        saveat=SaveAt(every=check_positive_int(save_every, name="save_every")),
    )
    if not fast:
        return solution
    # the fast-hidden state is v alone: give back (v, h) with h at its equilibrium
    equilibrium = jax.vmap(network.hidden_equilibrium, in_axes=(0, None))
    return eqx.tree_at(
        lambda s: (s.state, s.trajectory),
        solution,
        (
            (solution.state, network.hidden_equilibrium(solution.state, memories)),
            (solution.trajectory, equilibrium(solution.trajectory, memories)),
        ),
    )
