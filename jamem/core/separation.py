"""Separation functions F of Dense Associative Memory.

The energy of a DenseAM (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2) is

    E(sigma) = - sum_mu F(xi^mu . sigma).

`F(x) = x^2` is the classical Hopfield network; higher powers and rectified powers give the dense
memories of the paper; `F(x) = exp(x)` is Demircigil et al. (2017).

Each separation is a small final `equinox.Module` with these views of F:

- `__call__(x)`: F(x) itself.
- `scaled(x, reference)`: F(x) divided by a positive constant fixed by `reference` (for power F,
  (x / reference)^n = F(x) / reference^n), so that values compared with one reference keep their
  order and the largest stays near 1 in float32 whatever n.
- `reference(plus, minus, where)`: the reference for one comparison, from its own arguments.
- `log_abs(x)`: (sign F(x), log |F(x)|), for energies in log form.

`gap_sign(separation, plus, minus)` gives the sign of sum_mu [F(plus_mu) - F(minus_mu)], the
decision of the binary update rules (arXiv:1606.01164, eq. 3), exactly as in real arithmetic
wherever float rounding cannot tie two different sums: see its docstring.

Any plain callable F works too: wrap it with `as_separation`.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._checks import check_degree, check_positive


class AbstractSeparation(eqx.Module):
    """A separation function F, applied elementwise. Subclasses implement `__call__`; the other
    views have defaults (no rescaling) that are exact where F stays finite."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """F(x), elementwise."""

    def scaled(self, x: Float[Array, "*shape"], reference) -> Float[Array, "*shape"]:
        """F(x) divided by a positive constant fixed by `reference` (default: F(x) itself)."""
        del reference
        return self(x)

    def reference(self, plus: Float[Array, " K"], minus: Float[Array, " K"], where: Bool[Array, " K"]):
        """The reference for `scaled` that brings the largest F(plus_mu), F(minus_mu) (mu where
        `where`) to about 1 (default: unused)."""
        del plus, minus, where
        return 1.0

    def log_abs(self, x: Float[Array, "*shape"]) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
        """(sign F(x), log |F(x)|), -inf where F(x) = 0."""
        value = self(x)
        return jnp.sign(value), jnp.log(jnp.abs(value))

    @property
    def rounding_steps(self) -> int:
        """Roundings in one `scaled` value (its float error is at most this many ulps)."""
        return 4

    @property
    def scaled_is_bounded(self) -> bool:
        """Whether |`scaled`| <= 1 at a reference from `reference` or `memories_reference`."""
        return False

    def memories_reference(self, memories: Float[Array, "K N"]):
        """A reference for `scaled` that holds for every +-1 state (None: none exists)."""
        del memories
        return None

    @property
    def integer_power(self) -> tuple[int, bool] | None:
        """(n, rectified) where F(x) = x^n or max(x, 0)^n: F of an integer is then an integer, and a
        near tie float32 cannot settle is settled in exact integer arithmetic (None: it is refused)."""
        return None

    def exactly_summable(self, values: Float[Array, " K"], where: Bool[Array, " K"]) -> Bool[Array, ""]:
        """Whether `scaled` of `values` (where `where`) and any signed sum of them are exact in
        float32, so a computed 0 is a true tie (default: never known)."""
        del values, where
        return jnp.asarray(False)

    def separates_overlaps(self, dtype) -> bool:
        """Whether `scaled` of two +-1 overlaps that differ (by 2 or more) differ by more than the
        16 ulps of `dtype` within which the binary rules count two terms as equal (default: yes)."""
        del dtype
        return True


def _power_reference(values, where, degree: int):
    """The reference of a power F: the largest |argument| where `where` (1 if none is positive),
    rounded up to a power of two while 2^-degree stays well inside the dtype's normal range, so
    that the division is exact and integer overlaps give exact terms (ties then cancel as in exact
    arithmetic)."""
    largest = jnp.max(jnp.where(where, values, 0.0), initial=0.0)
    largest = jnp.where(largest > 0, largest, 1.0)
    exact_division = degree <= -jnp.finfo(values.dtype).minexp * 3 // 4  # 94 in float32
    return jnp.exp2(jnp.ceil(jnp.log2(largest))) if exact_division else largest


class _AbstractPowerSeparation(AbstractSeparation):
    """What x^n and max(x, 0)^n share: the degree, their rounding, and a bound for every state."""

    degree: int = eqx.field(static=True)

    def __init__(self, degree: int):
        self.degree = check_degree(degree)

    @property
    def rounding_steps(self) -> int:
        return 2 * self.degree.bit_length() + 2  # the division and repeated squaring

    @property
    def scaled_is_bounded(self) -> bool:
        return True

    def memories_reference(self, memories):
        # A bound for every state saves a pass per comparison; past n = 10 the terms of random
        # states fall below float32's range at it (x^n with x / bound ~ 0.03), so each comparison
        # takes its own largest term instead.
        return overlap_scale(memories) if self.degree <= 10 else None

    @property
    def integer_power(self):
        return self.degree, isinstance(self, RectifiedPower)

    def exactly_summable(self, values, where):
        # integers whose n-th powers sum below 2^24 (float32's significand): every term and every
        # partial sum is then an exact integer (the reference is a power of two: scaling keeps it)
        values = jnp.abs(jnp.where(where, values, 0.0))
        largest = jnp.maximum(jnp.max(values, initial=0.0), 1.0)
        log_sum = self.degree * jnp.log2(largest) + jnp.log2(jnp.sum((values / largest) ** self.degree))
        fits = log_sum < jnp.finfo(values.dtype).nmant
        return fits & jnp.all(values == jnp.round(values))


class Power(_AbstractPowerSeparation):
    """F(x) = x^n. n = 2 is the classical Hopfield network (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2)."""

    def __call__(self, x):
        return x**self.degree

    def scaled(self, x, reference):
        return (x / reference) ** self.degree

    def reference(self, plus, minus, where):
        return _power_reference(jnp.maximum(jnp.abs(plus), jnp.abs(minus)), where, self.degree)

    def log_abs(self, x):
        sign = jnp.sign(x) if self.degree % 2 else jnp.ones_like(x)
        return sign, self.degree * jnp.log(jnp.abs(x))


class RectifiedPower(_AbstractPowerSeparation):
    """F(x) = max(x, 0)^n, the rectified polynomial (Krotov & Hopfield 2016, arXiv:1606.01164, eq. 2)."""

    def __call__(self, x):
        return jax.nn.relu(x) ** self.degree

    def scaled(self, x, reference):
        return jax.nn.relu(x / reference) ** self.degree

    def reference(self, plus, minus, where):
        return _power_reference(jnp.maximum(plus, minus), where, self.degree)

    def log_abs(self, x):
        return jnp.ones_like(x), self.degree * jnp.log(jax.nn.relu(x))


class Exponential(AbstractSeparation):
    """F(x) = exp(beta x) (Demircigil et al. 2017). Stored capacity about 2^(N/2) (arXiv:1702.01929).

    Args:
        beta: inverse temperature, within float32's normal range [1.2e-38, 3.4e38] (outside it
            beta itself rounds to 0 or inf there).
    """

    beta: float = eqx.field(static=True, default=1.0)

    def __init__(self, beta: float = 1.0):
        beta = check_positive(beta, name="beta")
        info = np.finfo(np.float32)
        if isinstance(beta, float) and not float(info.tiny) <= beta <= float(info.max):
            raise ValueError(
                f"`beta` must lie in float32's normal range [{info.tiny:.3g}, {info.max:.3g}], got {beta!r}: "
                "beyond it beta rounds to 0 or inf in float32."
            )
        self.beta = beta

    def __call__(self, x):
        return jnp.exp(self.beta * x)

    def scaled(self, x, reference):
        # exp(beta (x - reference)) = F(x) exp(-beta reference)
        return jnp.exp(self.beta * (x - reference))

    def reference(self, plus, minus, where):
        return jnp.max(jnp.where(where, jnp.maximum(plus, minus), -jnp.inf), initial=-jnp.inf).clip(min=-1e30)

    @property
    def scaled_is_bounded(self) -> bool:
        return True

    def log_abs(self, x):
        return jnp.ones_like(x), self.beta * x

    def separates_overlaps(self, dtype) -> bool:
        # overlaps r and r + 2 give terms in the ratio exp(2 beta); keep it 4x above 16 ulps
        return 2 * self.beta > 64 * float(jnp.finfo(dtype).eps)


class CustomSeparation(AbstractSeparation):
    """Wraps a user-supplied elementwise callable F (no rescaling: keep its values finite)."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, x):
        return self.fn(x)


def _scaled_terms(separation, plus, minus, reference):
    """F(plus)/c, F(minus)/c and their difference."""
    high, low = separation.scaled(plus, reference), separation.scaled(minus, reference)
    return high, low, high - low


def gap_sign(
    separation: AbstractSeparation,
    plus: Float[Array, " K"],
    minus: Float[Array, " K"],
    *,
    reference=None,
) -> Float[Array, ""]:
    """sign( sum_mu F(plus_mu) - F(minus_mu) ) in {-1, 0, +1}: the decision of the binary rules.

    First the terms are summed at `reference` (a bound fixed for the whole retrieval, e.g.
    `memories_reference`; None: the largest term of this comparison), with a float32 error
    bound: where the sum is further from 0 than the bound, its sign is the sign exact arithmetic
    gives. Otherwise (a near tie, or terms that underflow at that reference: with F = x^30 and
    overlaps of a few tens, unscaled terms overflow float32 and terms scaled by a fixed bound
    underflow to 0) the terms are compared level by level at the scale of the largest remaining
    term: terms of equal size and opposite sign cancel exactly, and where the largest terms all
    cancel (two memories tied in overlap, say) the rest are compared again at their own scale. So a
    decision that rests on terms 10^-60 times smaller than the cancelled ones is still taken as
    exact arithmetic takes it. A level whose largest terms do not cancel decides by the sign of its
    sum where that sum is further from 0 than its rounding error, or exact (integers whose n-th
    powers sum below 2^24). What is left, a near tie beyond float32's exact integers (say
    21^3 + 257^3 = 167^3 + 231^3), is settled in exact integer arithmetic on the host where F is an
    integer power of integer arguments (+-1 memories and states), and refused with an error
    otherwise. Two terms closer than 16 ulps count as equal (distinct +-1 overlaps are far apart).

    Example: the two largest terms cancel exactly, and the rest (10^-43 times smaller at n = 30)
    decides, as integer arithmetic does:

        >>> import jax.numpy as jnp, jamem as jm
        >>> from jamem.core.separation import gap_sign
        >>> plus, minus = jnp.array([40.0, 42.0, 2.0]), jnp.array([42.0, 40.0, 0.0])
        >>> float(gap_sign(jm.Power(30), plus, minus))
        1.0
    """
    everything = jnp.ones(plus.shape, bool)
    if reference is None:
        reference = separation.reference(plus, minus, everything)
    high, low, terms = _scaled_terms(separation, plus, minus, reference)
    total, certain = _accurate_total(separation, terms, jnp.abs(high) + jnp.abs(low), jnp.sum, plus.dtype)

    def terms_at(remaining):
        high, low, terms = _scaled_terms(separation, plus, minus, separation.reference(plus, minus, remaining))
        exact = separation.exactly_summable(plus, remaining) & separation.exactly_summable(minus, remaining)
        return jnp.where(remaining, terms, 0.0), jnp.where(remaining, jnp.abs(high) + jnp.abs(low), 0.0), exact

    # a memory with plus = minus adds exactly 0
    sign = _decide_by_levels(separation, terms_at, plus != minus, certain, jnp.sign(total), plus.dtype)

    def as_signed_sum():  # sum F(plus) - F(minus) as sum w F(v), built only if a tie needs it
        return jnp.concatenate([plus, minus]), jnp.concatenate([jnp.ones_like(plus), -jnp.ones_like(minus)])[:, None]

    return _settle_undecided(separation, as_signed_sum, sign[None])[0]


def signed_sums_sign(
    separation: AbstractSeparation, values: Float[Array, " K"], signs: Float[Array, "K M"]
) -> Float[Array, " M"]:
    """sign( sum_mu s_mu,m F(v_mu) ) in {-1, 0, +1} for every column m of `signs` (entries -1, 0, +1).

    The field of a sequence memory (`jamem.networks.sequence`): with v the overlaps of the state
    with the memories and column i of `signs` bit i of their successors. Decided as `gap_sign`
    decides: an accurate sum (here two matmuls shared by all columns) at the scale of the largest
    term, with a float32 error bound; columns within the bound (or whose terms underflow) are
    compared level by level, and a near tie float32 cannot settle is settled in integer arithmetic
    (integer powers of integer overlaps) or refused: the sign is the one exact arithmetic gives.
    """
    everything = jnp.ones(values.shape, bool)
    scaled = separation.scaled(values, separation.reference(values, values, everything))  # (K,)

    # with s = +-1 the split of s F into coarse and fine parts is s times the split of F: two matvecs
    # (HIGHEST: an accelerator's default f32 matmul may round its inputs to TF32, losing the exactness)
    def total_of(parts):
        return jnp.matmul(parts, signs, precision=jax.lax.Precision.HIGHEST)

    total, certain = _accurate_total(separation, scaled, jnp.abs(scaled), total_of, values.dtype)
    certain = jnp.broadcast_to(certain, total.shape)

    def column(column_signs, column_certain, column_total):
        def terms_at(remaining):
            scaled = jnp.where(
                remaining, separation.scaled(values, separation.reference(values, values, remaining)), 0.0
            )
            return column_signs * scaled, jnp.abs(scaled), separation.exactly_summable(values, remaining)

        active = column_signs != 0
        return _decide_by_levels(separation, terms_at, active, column_certain, jnp.sign(column_total), values.dtype)

    sign = jax.vmap(column, in_axes=(1, 0, 0))(signs, certain, total)
    return _settle_undecided(separation, lambda: (values, signs), sign)


def _accurate_total(separation, terms, magnitudes, total_of, dtype):
    """sum_mu terms_mu (`total_of(parts)` sums parts of the terms, here or after a +-1 matmul) and
    whether its sign is certain.

    An accurate sum (Rump, Ogita & Oishi 2008, extraction): with |terms| <= 2 (`scaled` is at
    most 1 at a valid reference), the parts rounded to multiples of ulp(grid) sum exactly, so the
    summation error is second order and the bound below does not grow with K. The rounding is a
    power-of-two scaling and `round` (both exact), not (grid + terms) - grid, which would need a
    barrier against XLA's simplifier and so a second pass over the terms. `magnitudes`: |F(.)|
    of everything that went into the terms, for their own rounding error.
    """
    eps = float(jnp.finfo(dtype).eps)
    count = terms.shape[0]
    grid = 2.0 ** (int(np.ceil(np.log2(count + 2))) + 1)
    unit = grid * eps
    coarse = jnp.round(terms * (1 / unit)) * unit
    total = total_of(coarse) + total_of(terms - coarse)
    # each term's own rounding (a few ulps per operation), the fine parts' sum, terms flushed to 0
    error = eps * (4 * separation.rounding_steps + 8) * jnp.sum(magnitudes)
    error = error + 4 * count * eps * eps * grid + 4 * count * float(jnp.finfo(dtype).tiny)
    certain = jnp.abs(total) > error  # False for inf / NaN too
    if not separation.scaled_is_bounded:
        certain = certain & (jnp.max(jnp.abs(terms)) <= 2)
    return total, certain


UNDECIDED = 2.0  # what _decide_by_levels returns for a sum float32 cannot sign


def _decide_by_levels(separation, terms_at, active, certain, sign, dtype):
    """The sign where `certain`; otherwise compare the terms level by level. `terms_at(remaining)`:
    (the terms of the memories still `remaining` at the scale of their largest, 0 elsewhere; the
    magnitudes of what went into them; whether the level's sums are exact). A level whose largest
    terms do not cancel decides by the sign of its sum, when that sum is further from 0 than its
    rounding error, or exact; otherwise the result is `UNDECIDED`. Largest terms that cancel are a
    true tie only where F `separates_overlaps`; otherwise, and where the terms are not finite, the
    result is `UNDECIDED` too."""
    eps = float(jnp.finfo(dtype).eps)
    count = active.shape[0]
    ties_are_exact = separation.separates_overlaps(dtype)

    def level(carry):
        remaining = carry[0]
        terms, magnitudes, exact = terms_at(remaining)
        size = jnp.abs(terms)
        top = jnp.max(size)
        # Equal terms are equal up to a few ulps, not bitwise: XLA may contract F(plus) - F(minus)
        # into a fused multiply-add differently for different memories. For +-1 memories two
        # different terms differ by far more (a factor ((r+1)/r)^(n-1) between overlaps r, r+1).
        at_top = remaining & (size >= top * (1 - 16 * eps))
        net = jnp.sum(jnp.where(at_top, jnp.sign(terms), 0.0))
        total = jnp.sum(terms)
        # each term's own rounding plus a recursive sum's (K - 1) ulps: a plain bound, as levels are rare
        error = eps * (4 * separation.rounding_steps + 8 + count) * jnp.sum(magnitudes) + count * float(
            jnp.finfo(dtype).tiny
        )
        known = exact | (jnp.abs(total) > error)
        # the largest terms decide unless they cancel exactly; then compare the rest afresh (a NaN
        # top, from an overflow, groups nothing: it must end the loop, undecided)
        unknown = ~jnp.isfinite(top) | ((net == 0) & (top > 0) & (not ties_are_exact))
        decided = (net != 0) | (top == 0) | ~jnp.any(remaining & ~at_top) | unknown
        sign = jnp.where(net != 0, jnp.where(known, jnp.sign(total), UNDECIDED), 0.0)
        return remaining & ~at_top, decided, jnp.where(unknown, UNDECIDED, sign)

    _, _, sign = jax.lax.while_loop(lambda carry: ~carry[1], level, (active, certain, sign))
    return sign


def _settle_undecided(separation, signed_sum, sign):
    """Settle the entries of `sign` (shape (M,)) that are UNDECIDED: sign(sum_mu w_mu,m F(v_mu)),
    with (v, w) = `signed_sum()`, in exact integer arithmetic on the host where F is an integer
    power of integers, else an error.

    A while loop, not a cond: under vmap a cond runs both branches, so the host would be called for
    every decision; the loop's body (and `signed_sum`) runs only when some entry is undecided
    (rarely: a near tie beyond float32's exact integers, e.g. 21^3 + 257^3 = 167^3 + 231^3).
    """
    power = separation.integer_power
    if power is not None:

        def exact(carry):
            shape = jax.ShapeDtypeStruct(carry[0].shape, carry[0].dtype)
            settle = functools.partial(_exact_signs, degree=power[0], rectified=power[1])
            settled = jax.pure_callback(settle, shape, *signed_sum(), carry[0], vmap_method="broadcast_all")
            return settled, jnp.asarray(True)

        sign, _ = jax.lax.while_loop(lambda carry: ~carry[1], exact, (sign, ~jnp.any(sign == UNDECIDED)))
    return eqx.error_if(
        sign,
        sign == UNDECIDED,
        f"a near tie float32 cannot decide: two different sums of F = {separation} agree to within rounding "
        "(or F's terms for different overlaps do, as exp(beta x) does for a tiny beta), and F is not an "
        "integer power of integer arguments, so exact arithmetic cannot settle it",
    )


def _exact_signs(values, weights, sign, *, degree, rectified):
    """Host side of `_settle_undecided`: values (..., K), weights (..., K, M), sign (..., M)."""
    values, weights, sign = np.asarray(values), np.asarray(weights), np.array(sign)
    for index in zip(*np.nonzero(sign == UNDECIDED)):
        v, w = values[index[:-1]], weights[index[:-1]][:, index[-1]]
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            continue  # stays UNDECIDED: refused
        terms = [max(int(z), 0) if rectified else int(z) for z in v]
        total = sum(int(c) * z**degree for c, z in zip(w, terms) if c != 0)
        sign[index] = (total > 0) - (total < 0)
    return sign


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
