"""Separation functions F of Dense Associative Memory.

The energy of a DenseAM (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2) is

    E(sigma) = - sum_mu F(xi^mu . sigma).

`F(x) = x^2` is the classical Hopfield network; higher powers and rectified powers give the dense
memories of the paper; `F(x) = exp(x)` is Demircigil et al. (2017).

Each separation is a small final `equinox.Module` with three views of F:

- `__call__(x)`: F(x) itself.
- `scaled(x, scale)`: F(x) times a positive constant that depends only on `scale` (for power F,
  F(x / scale) = F(x) / scale^n). Energies compared with the same `scale` keep their order, and
  the values stay finite in float32 for n = 30.
- `gap(plus, minus, scale)`: a number with the sign of sum_mu [F(plus_mu) - F(minus_mu)], the
  quantity the asynchronous update rule needs (A2).

Any plain callable F works too: wrap it with `as_separation`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import check_degree, check_positive


class AbstractSeparation(eqx.Module):
    """A separation function F, applied elementwise."""

    def __call__(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        raise NotImplementedError

    def scaled(self, x: Float[Array, "*shape"], scale) -> Float[Array, "*shape"]:
        """F(x) times a positive constant fixed by `scale` (default: the constant 1)."""
        del scale
        return self(x)

    def gap(self, plus: Float[Array, " K"], minus: Float[Array, " K"], scale) -> Float[Array, ""]:
        """A scalar with the sign of sum_mu F(plus_mu) - F(minus_mu)."""
        return jnp.sum(self.scaled(plus, scale) - self.scaled(minus, scale))


class Power(AbstractSeparation):
    """F(x) = x^n. n = 2 is the classical Hopfield network (Krotov & Hopfield 2016, A1)."""

    degree: int = eqx.field(static=True)

    def __init__(self, degree: int):
        self.degree = check_degree(degree)

    def __call__(self, x):
        return x**self.degree

    def scaled(self, x, scale):
        # Dividing by a power of two is exact, so the rounding is that of F(x) itself.
        return (x / scale) ** self.degree


class RectifiedPower(AbstractSeparation):
    """F(x) = max(x, 0)^n, the rectified polynomial (Krotov & Hopfield 2016, A1)."""

    degree: int = eqx.field(static=True)

    def __init__(self, degree: int):
        self.degree = check_degree(degree)

    def __call__(self, x):
        return jax.nn.relu(x) ** self.degree

    def scaled(self, x, scale):
        return jax.nn.relu(x / scale) ** self.degree


class Exponential(AbstractSeparation):
    """F(x) = exp(beta x) (Demircigil et al. 2017). Stored capacity about 2^(N/2) (I3)."""

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        self.beta = check_positive(beta, name="beta")

    def __call__(self, x):
        return jnp.exp(self.beta * x)

    def scaled(self, x, scale):
        # exp(beta (x - scale)) = F(x) exp(-beta scale); finite whenever |x| <= scale.
        return jnp.exp(self.beta * (x - scale))

    def gap(self, plus, minus, scale):
        del scale
        # Subtracting the current largest argument keeps the leading term at 1 (log domain).
        shift = jax.lax.stop_gradient(jnp.maximum(jnp.max(plus), jnp.max(minus)))
        return jnp.sum(jnp.exp(self.beta * (plus - shift)) - jnp.exp(self.beta * (minus - shift)))


class CustomSeparation(AbstractSeparation):
    """Wraps a user-supplied elementwise callable F (no rescaling: keep its values finite)."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, x):
        return self.fn(x)


def as_separation(separation) -> AbstractSeparation:
    """Return `separation` as an `AbstractSeparation`, wrapping a plain callable F."""
    if isinstance(separation, AbstractSeparation):
        return separation
    if callable(separation):
        return CustomSeparation(separation)
    raise TypeError(
        f"`separation` must be an AbstractSeparation (Power, RectifiedPower, Exponential) or a "
        f"callable F(x), got {type(separation).__name__}."
    )


def overlap_scale(memories: Float[Array, "K N"]) -> Float[Array, ""]:
    """The power of two at or above max_mu sum_i |xi^mu_i|, a bound on |xi^mu . sigma| for a
    +-1 state. Dividing overlaps by it is exact and keeps them in [-1, 1]."""
    bound = jnp.max(jnp.sum(jnp.abs(memories), axis=-1))
    return jnp.exp2(jnp.ceil(jnp.log2(jnp.maximum(bound, 1.0))))
