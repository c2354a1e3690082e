"""Diffusion seen as associative memory (Ambrogioni 2023, arXiv:2309.17290; Hoover et al. 2023,
"Memory in Plain Sight", arXiv:2309.16750).

Smoothing the stored images xi^1, ..., xi^K with Gaussian noise of scale sigma gives the density
p_sigma(x) = (1/K) sum_mu N(x; xi^mu, sigma^2 I), and

    log p_sigma(x) = - E_sigma(x) / sigma^2 + const,
    E_sigma(x) = - sigma^2 log sum_mu exp( - |x - xi^mu|^2 / (2 sigma^2) ),

the Gaussian-kernel DenseAM energy at beta = 1 / sigma^2 (`GaussianKernelEnergy`). Its gradient is
x - D_sigma(x), where

    D_sigma(x) = sum_mu softmax_mu( - |x - xi^mu|^2 / (2 sigma^2) ) xi^mu          (`denoise`)

is the ideal denoiser (Tweedie: D_sigma = x + sigma^2 grad log p_sigma), the function a diffusion
model trained to optimality on these K images learns. So one gradient step of size 1 on the memory
energy is one denoising, and the deterministic sampler of a variance-exploding diffusion, the
probability-flow ODE with sigma(t) = t (Karras et al. 2022, arXiv:2206.00364),

    dx/dsigma = (x - D_sigma(x)) / sigma = grad E_sigma(x) / sigma,

taken in Euler steps sigma -> r sigma, is

    x <- x - (1 - r) grad E_sigma(x),   sigma <- r sigma                      (`ProbabilityFlow`):

gradient descent on a DenseAM energy whose temperature sigma^2 falls geometrically, an annealed
retrieval. Started from x ~ N(0, sigma_max^2 I) and run to sigma -> 0 it ends on one of the stored
images, each with probability close to 1/K (`generate`; exactly 1/K for the exact flow from
p_sigma_max): a diffusion model with the ideal denoiser only memorises, its attractors are the
memories. Generating new images needs a denoiser that cannot
represent D_sigma exactly (Pham et al. 2025, arXiv:2505.21777).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, ScalarLike

from .._checks import (
    IntLike,
    as_float_array,
    at_least_float32,
    check_feature_dims,
    check_magnitude,
    check_positive,
    check_positive_int,
    is_concrete,
)
from ..core.dynamics import AbstractMap, Iterate, retrieve
from ..core.energies import KERNEL_BETA_RANGE

Vector = Float[Array | np.ndarray, " N"]
Memories = Float[Array | np.ndarray, "K N"]


def score(x: Vector, memories: Memories, *, sigma: ScalarLike) -> Float[Array, " N"]:
    """grad log p_sigma(x) = - grad E_sigma(x) / sigma^2 = (D_sigma(x) - x) / sigma^2, in float32 at
    least whatever the dtype of x (at sigma = 1e-3 it is ~1e6 per unit of distance, past float16)."""
    wide, memories, _ = _checked_pair(x, memories)
    sigma = jnp.asarray(_noise_level(sigma, "sigma"), wide.dtype)
    value = -_energy_gradient(wide, memories, sigma) / sigma**2
    # |D(x) - x| / sigma^2 can pass float32's range (x 1e9 from the memories at sigma 1e-15): refuse
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(
            f"the score (D(x) - x) / sigma^2 overflows {value.dtype} at this `sigma` and `x` (x too far from the "
            "memories for so small a noise level); use a larger sigma or float64."
        )
    return value


def denoise(x: Vector, memories: Memories, *, sigma: ScalarLike) -> Float[Array, " N"]:
    """D_sigma(x) = x - grad E_sigma(x) = sum_mu softmax_mu(-|x - xi^mu|^2 / (2 sigma^2)) xi^mu: the ideal
    denoiser, one modern-Hopfield step of size 1 on the Gaussian-kernel energy at beta = 1 / sigma^2."""
    wide, memories, dtype = _checked_pair(x, memories)
    return _denoised(wide, memories, jnp.asarray(_noise_level(sigma, "sigma"), wide.dtype)).astype(dtype)


# sigma^2 and 1 / sigma^2 must stay finite and normal in float32 (beyond, beta is 0 or inf and the
# softmax NaN): the noise levels of the Gaussian-kernel energy's beta range, sigma = beta^(-1/2)
SIGMA_RANGE = (KERNEL_BETA_RANGE[1] ** -0.5, KERNEL_BETA_RANGE[0] ** -0.5)


def _noise_level(sigma, name: str):
    """A scalar noise level inside SIGMA_RANGE (traced values are trusted)."""
    if np.ndim(sigma) != 0:
        raise ValueError(f"`{name}` must be a scalar noise level, got shape {np.shape(sigma)}.")
    if not is_concrete(sigma):
        return sigma
    sigma = check_positive(sigma, name=name)
    if not SIGMA_RANGE[0] <= sigma <= SIGMA_RANGE[1]:
        raise ValueError(f"`{name}` must lie in [{SIGMA_RANGE[0]:g}, {SIGMA_RANGE[1]:g}], got {sigma!r}.")
    return sigma


def _schedule_level(sigma, name: str) -> float:
    """A noise level that fixes the schedule: a concrete number, since the step count depends on it."""
    if not is_concrete(sigma):
        raise TypeError(f"`{name}` fixes the noise schedule, so it must be a concrete number, not a traced value.")
    return _noise_level(sigma, name)


def _checked_pair(x, memories, *, name: str = "x"):
    """(x, memories) checked and cast to float32 at least (float16 overflows |x - xi|^2 at 784 pixels
    and sigma 80, and 1/sigma^2), and the float dtype of x (which denoised points take back)."""
    x = as_float_array(x, name=name, ndim=1)
    memories = as_float_array(memories, name="memories", ndim=2)
    check_feature_dims(x, memories, state_name=name)
    check_magnitude(x, name=name)
    check_magnitude(memories, name="memories")
    wide = at_least_float32(x.dtype)
    return x.astype(wide), memories.astype(wide), x.dtype


def _denoised(x, memories, sigma):
    """sum_mu softmax_mu(-|x - xi^mu|^2 / (2 sigma^2)) xi^mu, a convex combination of the memories.

    It equals x - grad E_sigma(x), one gradient step of size 1 on `GaussianKernelEnergy(1/sigma^2)`
    (tested), but is not computed as that difference, which far from the memories (|x| ~ 1e6)
    cancels to a point off the memories."""
    relative = _relative_squared_distances(x, memories)
    return jax.nn.softmax(-0.5 * (relative - jnp.min(relative)) / sigma**2) @ memories


def _relative_squared_distances(x, memories):
    """|x - xi^mu|^2 - |x - r|^2 = sum_i (xi^mu_i - r_i)(xi^mu_i + r_i - 2 x_i) for every mu, r the
    memory nearest x. The softmax needs these differences to within a fraction of sigma^2: taken
    from |x - xi|^2 directly, whose rounding grows with the distance, they were lost far from the
    memories (x = 1e8 against memories 1 apart); this form keeps them, near and far."""
    reference = memories[jnp.argmin(jnp.sum((memories - x[None, :]) ** 2, axis=-1))]
    return jnp.sum((memories - reference[None, :]) * (memories + reference[None, :] - 2 * x[None, :]), axis=-1)


def _energy_gradient(x, memories, sigma):
    """grad E_sigma(x) = x - D_sigma(x)."""
    return x - _denoised(x, memories, sigma)


class ProbabilityFlow(AbstractMap):
    """One Euler step of the probability-flow ODE dx/dsigma = grad E_sigma(x) / sigma from sigma to
    sigma' = max(ratio sigma, sigma_min) (arXiv:2206.00364 with sigma(t) = t; the memory reading of
    arXiv:2309.16750):

        x <- x - (1 - sigma'/sigma) grad E_sigma(x) = x + (sigma' - sigma) (x - D_sigma(x)) / sigma.

    The state is the pair (x, sigma), x of shape (N,) and sigma a scalar; `params` are the memories
    (K, N). At sigma_min the step is 0, so `retrieve(..., tol=0)` stops there. `generate` runs it.
    The step is computed in float32 at least, whatever the state's dtype.

    Args:
        ratio: r in (0, 1), the factor by which sigma falls per step (a concrete number).
        sigma_min: the smallest noise level, > 0 (a concrete number).
    """

    ratio: float = eqx.field(static=True)
    sigma_min: float = eqx.field(static=True)

    def __init__(self, ratio: ScalarLike, *, sigma_min: ScalarLike):
        if not is_concrete(ratio):
            raise TypeError(
                "`ratio` is a hyperparameter of the flow: it must be a concrete number, not a traced value."
            )
        ratio = check_positive(ratio, name="ratio")
        if not np.float32(ratio) < 1:  # sigma is float32 at least: 1 - 1e-9 would round to 1 and never fall
            raise ValueError(f"`ratio` must lie in (0, 1) in float32 (sigma falls each step), got {ratio}.")
        self.ratio = ratio
        self.sigma_min = _schedule_level(sigma_min, "sigma_min")

    def check_state(self, x0) -> None:
        if not (isinstance(x0, tuple) and len(x0) == 2):
            raise ValueError(f"`x0` must be the tuple (x, sigma) of a ProbabilityFlow, got {type(x0).__name__}.")
        x, sigma = x0
        if x.ndim != 1 or sigma.ndim != 0:
            raise ValueError(
                f"`x0` must be (x of shape (N,), a scalar sigma), got shapes {tuple(x.shape)} and {tuple(sigma.shape)}."
            )
        _noise_level(sigma, "x0's sigma")
        check_magnitude(x, name="x0")
        if is_concrete(sigma) and not float(sigma) >= float(self._floor(sigma.dtype)):
            raise ValueError(f"`x0`'s sigma must be at least sigma_min = {self.sigma_min}, got {float(sigma)}.")

    def _floor(self, dtype):
        """sigma_min as `dtype` holds it: where the flow stops, and the least start check_state allows
        (0.7 rounds to 0.69999998 in float32; a start there is at sigma_min, not below it)."""
        return jnp.asarray(self.sigma_min, dtype)

    def check_params(self, params) -> None:
        if not hasattr(params, "ndim") or params.ndim != 2:
            got = getattr(params, "shape", type(params).__name__)
            raise ValueError(f"`params` (the memories) must have shape (K, N), got {got}.")
        check_magnitude(params, name="params")

    def check_compatible(self, x0, params) -> None:
        check_feature_dims(x0[0], params, memories_name="params")

    def next_state(self, state, params):
        x, sigma = state
        wide = at_least_float32(x.dtype)
        level = sigma.astype(wide)
        # stopping at _floor exactly (float16 would otherwise round each new level back above it);
        # the min keeps a start just below the unrounded sigma_min from stepping up, i.e. backwards
        lower = jnp.minimum(level, jnp.maximum(self.ratio * level, self._floor(sigma.dtype).astype(wide)))
        step = (1 - lower / level) * _energy_gradient(x.astype(wide), params.astype(wide), level)
        return (x.astype(wide) - step).astype(x.dtype), lower.astype(sigma.dtype)


def generate(
    noise: Vector,
    memories: Memories,
    *,
    sigma_max: ScalarLike = 80.0,
    sigma_min: ScalarLike = 0.002,
    steps: IntLike = 100,
    denoise_last: bool = True,
) -> Float[Array, " N"]:
    """A sample of the diffusion model whose denoiser is the memory's (`denoise`): from
    x = sigma_max * noise, `steps` `ProbabilityFlow` steps with sigma falling geometrically to
    sigma_min (`jamem.retrieve` with `Iterate()`), then, with `denoise_last`, the final denoising
    x <- D_sigma_min(x) (the last step to sigma = 0). Batch with `jax.vmap` over `noise`. Computed
    in float32 at least; the sample has the dtype of `noise`.

    With sigma_max well above the spread of the memories and enough steps the sample is a stored
    memory, each drawn with probability close to 1/K (the ideal denoiser memorises;
    arXiv:2309.17290). It is 1/K exactly only for the exact flow started from p_sigma_max itself,
    not from N(0, sigma_max^2 I) with Euler steps.

    Args:
        noise: a standard-normal vector (N,), e.g. `jax.random.normal(key, (N,))`.
        memories: the stored images (K, N), the training set of the diffusion model.
        sigma_max: the noise level at the start (EDM's default for images in [-1, 1],
            arXiv:2206.00364); a concrete number.
        sigma_min: the noise level at the end (ibid.); a concrete number.
        steps: Euler steps from sigma_max to sigma_min.
        denoise_last: finish with D_sigma_min(x).
    """
    wide, memories, dtype = _checked_pair(noise, memories, name="noise")
    sigma_max = _schedule_level(sigma_max, "sigma_max")
    sigma_min = _schedule_level(sigma_min, "sigma_min")
    if not sigma_min < sigma_max:
        raise ValueError(f"`sigma_min` must be below `sigma_max`, got {sigma_min} and {sigma_max}.")
    steps = check_positive_int(steps, name="steps")
    if not isinstance(denoise_last, (bool, np.bool_)):
        raise TypeError(f"`denoise_last` must be True or False, got {denoise_last!r}.")
    flow = ProbabilityFlow((sigma_min / sigma_max) ** (1.0 / steps), sigma_min=sigma_min)
    start = (sigma_max * wide, jnp.asarray(sigma_max, wide.dtype))
    x, sigma = retrieve(flow, start, memories, solver=Iterate(), steps=steps, tol=None).state
    return (_denoised(x, memories, sigma) if denoise_last else x).astype(dtype)


def nearest_memory(x: Vector, memories: Memories) -> tuple[Int[Array, ""], Float[Array, ""]]:
    """(mu, |x - xi^mu|) for the stored memory closest to x."""
    x, memories, _ = _checked_pair(x, memories)
    index = jnp.argmin(_relative_squared_distances(x, memories))
    return index, jnp.linalg.norm(x - memories[index])
