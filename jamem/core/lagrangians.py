"""Lagrangians L(x) whose gradients are the activations, and the Legendre neuron energies.

In the energy-based view of associative memory (Krotov & Hopfield 2020, "Large Associative
Memory Problem in Neurobiology and Machine Learning", arXiv:2008.06996;
Krotov 2021, arXiv:2107.06446) every layer of neurons x has a Lagrangian L(x), a convex
scalar function, and its activations are the gradient

    g(x) = grad L(x).

The layer's contribution to the energy is the Legendre transform of L,

    E_neuron(x) = x . g(x) - L(x),      grad_x E_neuron = Hess L(x) @ x,

and the energy decreases along the dynamics whenever Hess L is positive semi-definite (arXiv:2008.06996). A
Lagrangian may be a sum of per-neuron terms (g is elementwise: ReLU, tanh, sigmoid, ...) or couple
the whole layer (softmax, layer norm, spherical normalisation).

Each Lagrangian is a small final `equinox.Module` holding only its hyperparameters:

- `__call__(x)`: the scalar L(x) for one layer state x of shape (N,) (batch with `jax.vmap`);
- `activation(x)`: g(x) = grad L(x), in closed form (equal to `jax.grad(L)(x)`).

`legendre_energy(lagrangian, x)` gives the neuron energy x . g(x) - L(x).
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import as_float_array, check_degree, check_positive


class AbstractLagrangian(eqx.Module):
    """A convex Lagrangian L(x) -> scalar; its gradient is the activation g(x). Subclasses
    implement `__call__` (and `activation` in closed form where they can)."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " N"]) -> Float[Array, ""]:
        """L(x) for one layer state."""

    def activation(self, x: Float[Array, " N"]) -> Float[Array, " N"]:
        """g(x) = grad L(x) (by `jax.grad` unless a subclass gives the closed form)."""
        return jax.grad(self.__call__)(x)


class Identity(AbstractLagrangian):
    """L(x) = 1/2 |x|^2, g(x) = x: linear (quadratic-Lagrangian) neurons, the visible layer of
    the modern Hopfield network (Krotov & Hopfield 2020 model B, arXiv:2008.06996)."""

    def __call__(self, x):
        return 0.5 * jnp.sum(x**2)

    def activation(self, x):
        return x


class RectifiedPower(AbstractLagrangian):
    """L(x) = (1/n) sum_i max(x_i, 0)^n, g(x) = max(x, 0)^(n-1): rectified-polynomial neurons
    (the duality of Krotov & Hopfield 2016, arXiv:1606.01164, eq. 10: an energy of degree n is a
    network whose activation is the rectified polynomial of degree n - 1). n = 2 is ReLU; n = 1 gives the step function.

    Args:
        degree: n >= 1 (L is convex for every n >= 1).
    """

    degree: int = eqx.field(static=True)

    def __init__(self, degree: int):
        self.degree = check_degree(degree)

    def __call__(self, x):
        return jnp.sum(jax.nn.relu(x) ** self.degree) / self.degree

    def activation(self, x):
        if self.degree == 1:
            # the derivative of max(x, 0) as jax.grad takes it: 0 at x = 0
            return (x > 0).astype(x.dtype)
        return jax.nn.relu(x) ** (self.degree - 1)


class ReLU(AbstractLagrangian):
    """L(x) = 1/2 sum_i max(x_i, 0)^2, g(x) = max(x, 0) (the same as `RectifiedPower(2)`)."""

    def __call__(self, x):
        return 0.5 * jnp.sum(jax.nn.relu(x) ** 2)

    def activation(self, x):
        return jax.nn.relu(x)


class Exponential(AbstractLagrangian):
    """L(x) = (1/beta) sum_i exp(beta x_i), g(x) = exp(beta x).

    Args:
        beta: inverse temperature, > 0.
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, x):
        return jnp.sum(jnp.exp(self.beta * x)) / self.beta

    def activation(self, x):
        return jnp.exp(self.beta * x)


def _log_cosh(z):
    # log cosh z = |z| + log(1 + exp(-2|z|)) - log 2, finite for any |z|
    a = jnp.abs(z)
    return a + jax.nn.softplus(-2.0 * a) - jnp.log(2.0).astype(z.dtype)


class Tanh(AbstractLagrangian):
    """L(x) = (1/beta) sum_i log cosh(beta x_i), g(x) = tanh(beta x) (stable for large |x|).

    Args:
        beta: gain, > 0.
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, x):
        return jnp.sum(_log_cosh(self.beta * x)) / self.beta

    def activation(self, x):
        return jnp.tanh(self.beta * x)


class Sigmoid(AbstractLagrangian):
    """L(x) = (1/beta) sum_i softplus(beta x_i) = (1/beta) sum_i log(1 + exp(beta x_i)),
    g(x) = sigmoid(beta x).

    Args:
        beta: gain, > 0.
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, x):
        return jnp.sum(jax.nn.softplus(self.beta * x)) / self.beta

    def activation(self, x):
        return jax.nn.sigmoid(self.beta * x)


class Softmax(AbstractLagrangian):
    """L(x) = (1/beta) log sum_i exp(beta x_i), g(x) = softmax(beta x): the hidden layer of the
    modern Hopfield network (Krotov & Hopfield 2020 model B, arXiv:2008.06996). Stable log-sum-exp form.

    Args:
        beta: inverse temperature, > 0.
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, x):
        return jax.nn.logsumexp(self.beta * x) / self.beta

    def activation(self, x):
        return jax.nn.softmax(self.beta * x)


class LayerNorm(AbstractLagrangian):
    """The layer-norm Lagrangian of the Energy Transformer (Hoover et al. 2023, arXiv:2302.07253,
    the layer-norm Lagrangian), with a scalar gain gamma and bias delta:

        L(x) = D gamma sqrt(var(x) + eps) + delta sum_i x_i,   var(x) = (1/D) sum_i (x_i - mean x)^2,
        g(x) = gamma (x - mean x) / sqrt(var(x) + eps) + delta,

    D being the number of neurons. L is convex for gamma >= 0.

    Args:
        gamma: gain, > 0.
        delta: bias, any real number.
        eps: regulariser inside the square root, > 0.
    """

    gamma: float = eqx.field(static=True, default=1.0)
    delta: float = eqx.field(static=True, default=0.0)
    eps: float = eqx.field(static=True, default=1e-5)

    def __init__(self, gamma: float = 1.0, delta: float = 0.0, *, eps: float = 1e-5):
        self.gamma = check_positive(gamma, name="gamma")
        self.delta = _check_real(delta, name="delta")
        self.eps = check_positive(eps, name="eps")

    def __call__(self, x):
        dim = x.shape[-1]
        centred = x - jnp.mean(x)
        var = jnp.mean(centred**2)
        return dim * self.gamma * jnp.sqrt(var + self.eps) + self.delta * jnp.sum(x)

    def activation(self, x):
        centred = x - jnp.mean(x)
        return self.gamma * centred / jnp.sqrt(jnp.mean(centred**2) + self.eps) + self.delta


class SphericalNorm(AbstractLagrangian):
    """L(x) = sqrt(|x|^2 + eps), g(x) = x / sqrt(|x|^2 + eps): spherical normalisation
    (Krotov & Hopfield 2020, arXiv:2008.06996, model C, where eps = 0 and g = x / |x|).

    With eps = 0 (the default) g(0) is taken as 0, a subgradient of |x| at the origin, instead of
    the NaN that differentiating |x| there would give.

    Args:
        eps: regulariser, >= 0.
    """

    eps: float = eqx.field(static=True, default=0.0)

    def __init__(self, eps: float = 0.0):
        self.eps = check_positive(eps, name="eps", allow_zero=True)

    def __call__(self, x):
        sq = jnp.sum(x**2) + self.eps
        # double `where`: the gradient at sq = 0 is 0 instead of 0 * inf = NaN
        safe = jnp.where(sq > 0, sq, 1.0)
        return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)

    def activation(self, x):
        sq = jnp.sum(x**2) + self.eps
        safe = jnp.where(sq > 0, sq, 1.0)
        return jnp.where(sq > 0, x / jnp.sqrt(safe), jnp.zeros_like(x))


def _check_real(value, *, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a real number, got {value!r}.") from err
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return value


def legendre_energy(lagrangian, x: Float[Array, " N"]) -> Float[Array, ""]:
    """The neuron energy of a layer, the Legendre transform of its Lagrangian (arXiv:2008.06996, arXiv:2107.06446):

        E_neuron(x) = x . g(x) - L(x),   g = grad L,

    whose gradient is Hess L(x) @ x. For `Identity` it is 1/2 |x|^2; for `Softmax` it is the
    (negative) entropy term of the modern Hopfield energy.

    Args:
        lagrangian: an `AbstractLagrangian`, or any callable L(x) -> scalar (its activation is
            then `jax.grad(L)`).
        x: one layer state, shape (N,).

    Returns:
        The scalar x . g(x) - L(x).
    """
    if isinstance(lagrangian, AbstractLagrangian):
        activation = lagrangian.activation
    elif callable(lagrangian):
        activation = jax.grad(lagrangian)
    else:
        raise TypeError(
            f"`lagrangian` must be an AbstractLagrangian or a callable L(x) -> scalar, got {type(lagrangian).__name__}."
        )
    x = as_float_array(x, name="x", ndim=1)
    return jnp.dot(x, activation(x)) - lagrangian(x)
