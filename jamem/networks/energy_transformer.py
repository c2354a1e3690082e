"""The Energy Transformer (Hoover et al. NeurIPS 2023, "Energy Transformer", arXiv:2302.07253;
the layer-norm Lagrangian, the block energy and the masked-patch experiment).

Tokens x (T x D) are layer-normed, g = LayerNorm(x), the layer norm being the gradient of the
Lagrangian L(x) = D gamma sqrt(var(x) + eps) + delta . x of each token (arXiv:2302.07253). The block has one
scalar energy of the normed tokens (arXiv:2302.07253),

    E(g) = E_att(g) + E_hn(g),
    E_att = -(1/beta) sum_h sum_C log sum_B exp(beta K_hB . Q_hC),   K_hB = W_K^h g_B,
                                                                     Q_hC = W_Q^h g_C,
    E_hn  = -1/2 sum_B sum_mu ReLU(xi^mu . g_B)^2       (or the softmax form
            -(1/beta_hn) sum_B log sum_mu exp(beta_hn xi^mu . g_B)),

with beta = 1/sqrt(head dim), and the tokens evolve by

    x <- x - alpha dE/dg

for a fixed number of steps. Because dg/dx = Hess L is positive semi-definite, the continuous
version of this flow never increases E (dE/dt = -dE/dg . Hess L . dE/dg <= 0); with a small
step alpha the discrete steps inherit that.

`EnergyTransformer` is the block (one example; batch with `jax.vmap`), `MaskedPatchET` the
masked-patch image model of the paper's image experiments: patch embedding, learned position embeddings, a learned mask
token in place of the masked patches, the block, and a linear decoder back to pixels.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._checks import as_float_array, at_least_float32, check_bool, check_key, check_positive, check_positive_int
from ..core.dynamics import EulerFlow, SaveAt, retrieve
from ..core.energies import AbstractEnergy
from ..core.lagrangians import LayerNorm, RectifiedPower, Softmax

HOPFIELD_KINDS = ("relu", "softmax")


def layer_norm_lagrangian(
    x: Float[Array, " D"], *, gamma: float = 1.0, delta: Float[Array, " D"] | None = None, eps: float = 1e-5
) -> Float[Array, ""]:
    """L(x) = D gamma sqrt(var(x) + eps) + delta . x, the Energy Transformer's token Lagrangian
    (arXiv:2302.07253), with a vector bias delta (zero when None), of one token x (D,). Its gradient is
    `EnergyTransformer.layer_norm`."""
    if jnp.ndim(x) != 1:
        raise ValueError(f"`x` must be one token of shape (D,), got shape {tuple(jnp.shape(x))}; map over tokens.")
    if delta is not None and jnp.shape(delta) != jnp.shape(x):
        raise ValueError(f"`delta` must have the shape of `x` {tuple(jnp.shape(x))}, got {tuple(jnp.shape(delta))}.")
    scalar = LayerNorm(gamma, eps=eps)(x)
    return scalar if delta is None else scalar + jnp.dot(delta, x)


class EnergyTransformer(eqx.Module):
    """One Energy Transformer block acting on T tokens of dimension D (arXiv:2302.07253).

    Attributes:
        key_weights, query_weights: W_K, W_Q, shape (heads, head_dim, D).
        memories: the Hopfield memories xi, shape (num_memories, D).
        delta: the layer-norm bias (a vector; the gain gamma is a fixed positive scalar so that
            the layer norm stays the gradient of a convex Lagrangian).

    Args:
        dim: D, the token dimension.
        num_heads: number of attention heads.
        head_dim: Y, the key/query dimension of each head (beta = 1/sqrt(Y)).
        num_memories: number of Hopfield memories (hidden neurons).
        hopfield: "relu" (E_hn = -1/2 sum ReLU(xi . g)^2, arXiv:2302.07253) or "softmax"
            (E_hn = -(1/beta_hn) sum_B log sum_mu exp(beta_hn xi^mu . g_B)).
        hopfield_beta: beta_hn of the softmax variant (unused for "relu").
        exclude_self: if True the attention sum runs over B != C (the paper's eq. 3); the default
            sums over every B, the paper's form.
        gamma: the layer norm's gain (> 0).
        eps: the layer norm's regulariser.
        key: PRNG key for the weights (keyword only).
    """

    key_weights: Float[Array, "H Y D"]
    query_weights: Float[Array, "H Y D"]
    memories: Float[Array, "M D"]
    delta: Float[Array, " D"]
    hopfield: str = eqx.field(static=True)
    hopfield_beta: float = eqx.field(static=True)
    exclude_self: bool = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 4,
        head_dim: int = 16,
        num_memories: int = 128,
        hopfield: str = "relu",
        hopfield_beta: float = 1.0,
        exclude_self: bool = False,
        gamma: float = 1.0,
        eps: float = 1e-5,
        key: PRNGKeyArray,
    ):
        dim = check_positive_int(dim, name="dim", minimum=2)
        num_heads = check_positive_int(num_heads, name="num_heads")
        head_dim = check_positive_int(head_dim, name="head_dim")
        num_memories = check_positive_int(num_memories, name="num_memories")
        if hopfield not in HOPFIELD_KINDS:
            raise ValueError(f"`hopfield` must be one of {HOPFIELD_KINDS}, got {hopfield!r}.")
        self.hopfield = hopfield
        self.hopfield_beta = check_positive(hopfield_beta, name="hopfield_beta")
        self.exclude_self = check_bool(exclude_self, name="exclude_self")
        self.gamma = check_positive(gamma, name="gamma")
        self.eps = check_positive(eps, name="eps")
        k1, k2, k3 = jax.random.split(check_key(key), 3)
        # g has unit variance per token: these scales keep K.Q and xi.g of order one at the start
        self.key_weights = jax.random.normal(k1, (num_heads, head_dim, dim)) / math.sqrt(dim)
        self.query_weights = jax.random.normal(k2, (num_heads, head_dim, dim)) / math.sqrt(dim)
        self.memories = jax.random.normal(k3, (num_memories, dim)) / math.sqrt(dim)
        self.delta = jnp.zeros((dim,))

    @property
    def dim(self) -> int:
        return self.memories.shape[1]

    @property
    def beta(self) -> float:
        """The attention inverse temperature, 1/sqrt(head dim) (arXiv:2302.07253)."""
        return 1.0 / math.sqrt(self.key_weights.shape[1])

    def layer_norm(self, x: Float[Array, "T D"]) -> Float[Array, "T D"]:
        """g_B = gamma (x_B - mean x_B) / sqrt(var(x_B) + eps) + delta for every token B: the
        gradient of `layer_norm_lagrangian` (arXiv:2302.07253)."""
        self._check_tokens(x)
        return jax.vmap(LayerNorm(self.gamma, eps=self.eps).activation)(x) + self.delta[None, :]

    def _check_tokens(self, x, *, name: str = "x"):
        """Tokens (T, D) of this block's D (shapes only: also under jit); `exclude_self` needs T >= 2,
        or a lone token attends to nothing and its energy is +inf."""
        shape = tuple(jnp.shape(x))
        if len(shape) != 2 or shape[1] != self.dim:
            raise ValueError(f"`{name}` must have shape (T, {self.dim}) (tokens of dimension D), got {shape}.")
        if self.exclude_self and shape[0] < 2:
            raise ValueError(f"`exclude_self=True` needs at least 2 tokens, got `{name}` of shape {shape}.")
        return x

    def attention_energy(self, g: Float[Array, "T D"]) -> Float[Array, ""]:
        """E_att = -(1/beta) sum_h sum_C log sum_B exp(beta K_hB . Q_hC) (arXiv:2302.07253): minus the softmax
        Lagrangian of each query's scores over the keys."""
        keys = jnp.einsum("hyd,bd->hby", self.key_weights, g)
        queries = jnp.einsum("hyd,cd->hcy", self.query_weights, g)
        scores = jnp.einsum("hby,hcy->hcb", keys, queries)  # [h, C, B]
        if self.exclude_self:
            num = g.shape[0]
            scores = jnp.where(jnp.eye(num, dtype=bool)[None], -jnp.inf, scores)
        lagrangian = Softmax(self.beta)
        return -jnp.sum(jax.vmap(jax.vmap(lagrangian))(scores))

    def hopfield_energy(self, g: Float[Array, "T D"]) -> Float[Array, ""]:
        """E_hn = -1/2 sum_B sum_mu ReLU(xi^mu . g_B)^2 (arXiv:2302.07253), or its softmax variant: minus the
        hidden Lagrangian (rectified power of degree 2, or softmax) of each token's overlaps."""
        overlaps = g @ self.memories.T  # [B, mu]
        lagrangian = RectifiedPower(2) if self.hopfield == "relu" else Softmax(self.hopfield_beta)
        return -jnp.sum(jax.vmap(lagrangian)(overlaps))

    def energy_of_normed(self, g: Float[Array, "T D"]) -> Float[Array, ""]:
        """E(g) = E_att(g) + E_hn(g) as a function of the normed tokens."""
        self._check_tokens(g, name="g")
        return self.attention_energy(g) + self.hopfield_energy(g)

    def energy(self, x: Float[Array, "T D"]) -> Float[Array, ""]:
        """E(LayerNorm(x)), the energy of the token state x."""
        return self.energy_of_normed(self.layer_norm(x))

    def __call__(
        self, x: Float[Array, "T D"], *, steps: int = 12, step_size: float = 0.1
    ) -> tuple[Float[Array, "T D"], Float[Array, " S"]]:
        """Run the dynamics x <- x - alpha dE/dg (dE/dg by `jax.grad`) for `steps` steps.

        Args:
            x: the tokens, shape (T, D).
            steps: number of updates (>= 1): `jamem.retrieve` of `TokenFlow(self)` with
                `EulerFlow(step_size)`, a `lax.scan`.
            step_size: alpha, > 0.

        Returns:
            (final tokens x_steps, energies E(g(x_t)) for t = 0..steps, shape (steps + 1,)).
        """
        steps = check_positive_int(steps, name="steps")
        step_size = check_positive(step_size, name="step_size")
        x = self._check_tokens(as_float_array(x, name="x", ndim=2))
        solution = retrieve(
            TokenFlow(self), x, solver=EulerFlow(step_size), steps=steps, tol=None, saveat=SaveAt(every=1, states=False)
        )
        return solution.state, solution.trajectory_energy


class TokenFlow(AbstractEnergy):
    """An Energy Transformer block as a `jamem` energy of its tokens x: E(LayerNorm(x)), with the
    velocity - dE/dg (arXiv:2302.07253), so an `EulerFlow(alpha)` step is x <- x - alpha dE/dg."""

    block: EnergyTransformer

    def __call__(self, state, params=None):
        del params
        return self.block.energy(state)

    def value_and_velocity(self, state, params=None):
        del params
        value, grad_g = jax.value_and_grad(self.block.energy_of_normed)(self.block.layer_norm(state))
        return value, -grad_g

    def velocity(self, state, params=None):
        return self.value_and_velocity(state)[1]


def _check_patch_geometry(image_size, patch_size) -> tuple[int, int]:
    image_size = check_positive_int(image_size, name="image_size")
    patch_size = check_positive_int(patch_size, name="patch_size")
    if image_size % patch_size:
        raise ValueError(
            f"`image_size` ({image_size}) must be divisible by `patch_size` ({patch_size}); "
            f"e.g. 28 x 28 images take patch_size 4, 7, 14 or 28."
        )
    return image_size, patch_size


def _as_square_image(image, image_size: int, *, name: str = "image"):
    image = as_float_array(image, name=name, ndim=(1, 2))
    if image.shape not in ((image_size * image_size,), (image_size, image_size)):
        raise ValueError(
            f"`{name}` must have shape ({image_size * image_size},) or ({image_size}, {image_size}), "
            f"got {tuple(image.shape)}."
        )
    return image.reshape(image_size, image_size)


def patchify(image: Float[Array, ...], *, patch_size: int, image_size: int = 28) -> Float[Array, "T P"]:
    """Cut a square single-channel image, flat (S*S,) or (S, S), into non-overlapping
    patch_size x patch_size patches in row-major order: shape (T, patch_size^2),
    T = (S / patch_size)^2."""
    image_size, patch_size = _check_patch_geometry(image_size, patch_size)
    image = _as_square_image(image, image_size)
    n = image_size // patch_size
    blocks = image.reshape(n, patch_size, n, patch_size).transpose(0, 2, 1, 3)
    return blocks.reshape(n * n, patch_size * patch_size)


def unpatchify(patches: Float[Array, "T P"], *, image_size: int = 28) -> Float[Array, " N"]:
    """The inverse of `patchify`: patches (T, p^2) back to a flat image (S*S,)."""
    patches = as_float_array(patches, name="patches", ndim=2)
    num, area = patches.shape
    patch_size = math.isqrt(area)
    n = math.isqrt(num)
    if patch_size * patch_size != area or n * n != num or n * patch_size != image_size:
        raise ValueError(
            f"`patches` of shape {tuple(patches.shape)} do not tile a {image_size} x {image_size} image "
            f"(need T = (S/p)^2 patches of p^2 pixels)."
        )
    blocks = patches.reshape(n, n, patch_size, patch_size).transpose(0, 2, 1, 3)
    return blocks.reshape(image_size * image_size)


def random_mask(key: PRNGKeyArray, num_patches: int, num_masked: int) -> Bool[Array, " T"]:
    """A boolean mask over `num_patches` patches with exactly `num_masked` True entries, chosen
    uniformly at random."""
    num_patches = check_positive_int(num_patches, name="num_patches")
    num_masked = check_positive_int(num_masked, name="num_masked", minimum=0)
    if num_masked > num_patches:
        raise ValueError(f"`num_masked` ({num_masked}) must be <= `num_patches` ({num_patches}).")
    order = jax.random.permutation(check_key(key), num_patches)
    return jnp.zeros((num_patches,), bool).at[order[:num_masked]].set(True)


class MaskedPatchET(eqx.Module):
    """Masked-patch image model with an Energy Transformer core (arXiv:2302.07253).

    image -> patches (T, p^2) -> linear embedding to D + position embeddings; masked patches are
    replaced by the learned mask token (plus their position embedding) -> `steps` steps of the
    Energy Transformer dynamics -> layer norm -> linear decoder to p^2 pixels per patch.

    Args:
        image_size: side S of the square single-channel images (28 for MNIST).
        patch_size: side p of the patches; must divide S (7 gives 16 tokens, 4 gives 49).
        dim: token dimension D.
        steps: number of ET updates (arXiv:2302.07253: 12).
        step_size: alpha of each update (arXiv:2302.07253: 0.1).
        **block_kwargs: `num_heads`, `head_dim`, `num_memories`, `hopfield`, ... of
            `EnergyTransformer`.
        key: PRNG key (keyword only).
    """

    embed: eqx.nn.Linear
    positions: Float[Array, "T D"]
    mask_token: Float[Array, " D"]
    block: EnergyTransformer
    decode: eqx.nn.Linear
    image_size: int = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    step_size: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        image_size: int = 28,
        patch_size: int = 7,
        dim: int = 64,
        steps: int = 12,
        step_size: float = 0.1,
        key: PRNGKeyArray,
        **block_kwargs,
    ):
        self.image_size, self.patch_size = _check_patch_geometry(image_size, patch_size)
        self.steps = check_positive_int(steps, name="steps")
        self.step_size = check_positive(step_size, name="step_size")
        dim = check_positive_int(dim, name="dim", minimum=2)
        k1, k2, k3, k4, k5 = jax.random.split(check_key(key), 5)
        area = self.patch_size**2
        self.embed = eqx.nn.Linear(area, dim, key=k1)
        self.positions = 0.02 * jax.random.normal(k2, (self.num_patches, dim))
        self.mask_token = 0.02 * jax.random.normal(k3, (dim,))
        self.block = EnergyTransformer(dim, key=k4, **block_kwargs)
        self.decode = eqx.nn.Linear(dim, area, key=k5)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def tokens(self, image: Float[Array, ...], mask: Bool[Array, " T"]) -> Float[Array, "T D"]:
        """The initial tokens: embedded patches, masked ones replaced by the mask token, plus the
        position embeddings."""
        patches = patchify(image, patch_size=self.patch_size, image_size=self.image_size)
        mask = self._check_mask(mask)
        embedded = patches @ self.embed.weight.T + self.embed.bias[None, :]
        embedded = jnp.where(mask[:, None], self.mask_token[None, :], embedded)
        return embedded + self.positions

    def __call__(
        self, image: Float[Array, ...], mask: Bool[Array, " T"]
    ) -> tuple[Float[Array, " N"], Float[Array, " S"]]:
        """Reconstruct one image.

        Args:
            image: flat (S*S,) or (S, S) pixels.
            mask: boolean (T,), True where the patch is hidden from the model.

        Returns:
            (reconstructed flat image (S*S,), the energy at each of the steps + 1 states).
        """
        final, energies = self.block(self.tokens(image, mask), steps=self.steps, step_size=self.step_size)
        g = self.block.layer_norm(final)
        patches = g @ self.decode.weight.T + self.decode.bias[None, :]
        return unpatchify(patches, image_size=self.image_size), energies

    def _check_mask(self, mask):
        if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
            raise TypeError(
                f"`mask` must be a boolean array of shape ({self.num_patches},), got {type(mask).__name__}."
            )
        if mask.dtype != jnp.bool_:
            raise TypeError(f"`mask` must be boolean (True = masked patch), got dtype {mask.dtype}.")
        if mask.shape != (self.num_patches,):
            raise ValueError(f"`mask` must have shape ({self.num_patches},) (one entry per patch), got {mask.shape}.")
        return mask


def masked_patch_mse(
    reconstruction: Float[Array, "*B N"], image: Float[Array, "*B N"], mask: Bool[Array, "*B T"], *, patch_size: int
) -> Float[Array, ""]:
    """Mean squared pixel error over the masked patches only (the paper's training loss for masked patches), for one
    flat image (N,) = (S*S,) or a batch (*B, N) of them, with one boolean `mask` entry per patch (*B, T),
    T = (S / patch_size)^2. Computed in at least float32 (half-precision squares overflow)."""
    reconstruction = as_float_array(reconstruction, name="reconstruction")
    image = as_float_array(image, name="image")
    if reconstruction.shape != image.shape:
        raise ValueError(
            f"`reconstruction` and `image` must have the same shape, got {tuple(reconstruction.shape)} "
            f"and {tuple(image.shape)}."
        )
    side = math.isqrt(image.shape[-1])
    if side * side != image.shape[-1]:
        raise ValueError(
            f"`image` must be flat square images (*B, S*S), got shape {tuple(image.shape)}: {image.shape[-1]} "
            "is not a square (pass an (S, S) image as image.reshape(-1))."
        )
    side, patch_size = _check_patch_geometry(side, patch_size)
    num_patches = (side // patch_size) ** 2
    if not hasattr(mask, "dtype") or mask.dtype != jnp.bool_:
        raise TypeError(f"`mask` must be a boolean array (True = masked patch), got {getattr(mask, 'dtype', mask)!r}.")
    if mask.shape != image.shape[:-1] + (num_patches,):
        raise ValueError(
            f"`mask` must have shape {image.shape[:-1] + (num_patches,)} (one entry per patch of each image), "
            f"got {tuple(mask.shape)}."
        )
    dtype = at_least_float32(image.dtype)
    cut = lambda im: patchify(im, patch_size=patch_size, image_size=side)
    flat_rec = reconstruction.reshape(-1, image.shape[-1]).astype(dtype)
    flat_img = image.reshape(-1, image.shape[-1]).astype(dtype)
    err = jnp.mean((jax.vmap(cut)(flat_rec) - jax.vmap(cut)(flat_img)) ** 2, axis=-1)  # [B, T]
    weights = mask.reshape(err.shape).astype(err.dtype)
    return jnp.sum(err * weights) / jnp.maximum(jnp.sum(weights), 1.0)
