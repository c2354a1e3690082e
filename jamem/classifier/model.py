"""The DenseAM classifier of Krotov & Hopfield 2016 (arXiv:1606.01164, eq. 9, App. A).

N = 784 visible neurons are clamped to the pixels (in [-1, 1]); N_c = 10 classification neurons
start at -eps (eps = 1 in the paper); K memories span all N + N_c neurons; F is the rectified
polynomial of degree n. One update step of the classification neurons gives

    c_alpha = tanh( beta * sum_mu [ F(xi^mu . V_alpha) - F(xi^mu . U) ] ),

U = (v, all classes -eps), V_alpha = U with class alpha set to +eps. Since
xi^mu . V_alpha = xi^mu . U + 2 eps xi^mu_alpha, the batch is never copied per class (the original
code tiles it 10 times). With beta = 1 / T^n the sum is evaluated as ((.)/T)^n, finite in float32
for n = 30.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_degree, check_key, check_positive, check_positive_int
from ..core.lagrangians import RectifiedPower
from . import native

ScalarLike = float | int | Float[Array, ""]


class DenseAMClassifier(eqx.Module):
    """K memories over `num_visible + num_classes` neurons, rectified F of degree n (arXiv:1606.01164, eq. 9).

    Acts on one image (shape (num_visible,)); batch with `jax.vmap`.
    """

    memories: Float[Array, "K D"]
    degree: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        num_memories: int = 2000,
        num_visible: int = 784,
        num_classes: int = 10,
        degree: int = 3,
        init_mean: float = -0.3,
        init_std: float = 0.3,
        key: PRNGKeyArray,
    ):
        check_positive_int(num_memories, name="num_memories")
        check_positive_int(num_visible, name="num_visible")
        self.num_classes = check_positive_int(num_classes, name="num_classes", minimum=2)
        self.degree = check_degree(degree)
        check_positive(init_std, name="init_std")
        shape = (num_memories, num_visible + num_classes)
        # App. A of arXiv:1606.01164: xi ~ Normal(-0.3, 0.3), kept in [-1, 1]; drawn in float32 so that a
        # key gives the same memories with jax_enable_x64 (cast them to train in float64)
        normal = jax.random.normal(check_key(key), shape, jnp.float32)
        self.memories = jnp.clip(init_mean + init_std * normal, -1.0, 1.0).astype(jnp.float32)

    @property
    def num_visible(self) -> int:
        return self.memories.shape[1] - self.num_classes

    def split_memories(self) -> tuple[Float[Array, "K N"], Float[Array, "K C"]]:
        """The memories' visible part (K, N) and class part (K, C)."""
        return self.memories[:, : self.num_visible], self.memories[:, self.num_visible :]

    def scores(
        self, image: Float[Array, " N"], *, temperature: ScalarLike, eps: ScalarLike = 1.0
    ) -> Float[Array, " C"]:
        """beta * sum_mu [F(xi . V_alpha) - F(xi . U)] with beta = 1 / T^n (before tanh)."""
        return self.batch_scores(image[None], temperature=temperature, eps=eps)[0]

    def batch_scores(
        self, images: Float[Array, "B N"], *, temperature: ScalarLike, eps: ScalarLike = 1.0
    ) -> Float[Array, "B C"]:
        """`scores` for a batch: one (B, N + C) x (N + C, K) matmul, then the (B, C, K) class gaps
        (`rectified_power_gaps`, with a hand-written gradient)."""
        return rectified_power_gaps(*self.gap_inputs(images, temperature=temperature, eps=eps), self.degree)

    def gap_inputs(
        self, images: Float[Array, "B N"], *, temperature: ScalarLike, eps: ScalarLike = 1.0
    ) -> tuple[Float[Array, "B K"], Float[Array, "C K"]]:
        """(base, shift) of `rectified_power_gaps`: xi . U / T for every image and memory, and the
        2 eps xi_alpha / T that setting class alpha on adds to it."""
        # One matmul of U = (v, -eps for every class) with all D neurons of the memories: no copy of
        # their visible part, and their gradient comes out of one (K, B) x (B, D) matmul whole.
        # 1/T scales the product, not U: for a memory exactly at silence (x.U + 2 eps xi_alpha = 0,
        # as `prototypes.silent_memories` finds it at T = 1) whose class entry is a power of two,
        # such as one clipped at 1, x.U / T and the shift 2 eps xi_alpha / T then round alike, and
        # it stays exactly silent, with exactly zero gradient, at every T.
        if images.ndim != 2 or images.shape[1] != self.num_visible:
            raise ValueError(f"`images` must have shape (B, {self.num_visible}), got {images.shape}.")
        dtype = jnp.result_type(images, self.memories)  # integer pixels count as the memories' floats
        classes_off = jnp.full((images.shape[0], self.num_classes), -eps, dtype=dtype)
        clamped_state = jnp.concatenate([images.astype(dtype), classes_off], axis=-1)
        base = (clamped_state @ self.memories.T) / temperature
        return base, (2 * eps / temperature) * self.split_memories()[1].T

    def __call__(
        self, image: Float[Array, " N"], *, temperature: ScalarLike, eps: ScalarLike = 1.0
    ) -> Float[Array, " C"]:
        """The outputs c in (-1, 1)^C; the prediction is their argmax."""
        return jnp.tanh(self.scores(image, temperature=temperature, eps=eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rectified_power_gaps(base: Float[Array, "B K"], shift: Float[Array, "C K"], degree: int) -> Float[Array, "B C"]:
    """sum_k [relu(base_bk + shift_ck)^n - relu(base_bk)^n], the class gaps of eq. 9 (n = degree).

    Each term is differenced before the sum so that large n keeps its precision in float32. On one
    CPU device, float32 runs the fused kernel of `jamem.classifier.native` (forward and gradient).
    """
    if _use_native_kernel(base, shift, degree):
        return _native_kernels(degree)[0](base, shift)
    if not _on_cpu() or base.shape[1] % 2:
        return _gap_sums(base, shift, degree)
    # On CPU, XLA (jax 0.10, YNNPACK fusions) otherwise fuses the (B, C, K) reduction into the
    # matmul that produced `base`, and an optimization barrier no longer stops it: the pair ran
    # 1.5x slower than apart (33.6 against 21.8 ms for B = 1000, K = 2000 on 2 cores). A loop over
    # the two halves of the memories keeps the matmul outside the reduction; splitting K, not the
    # batch, leaves a batch sharded over devices where it is.
    half = base.shape[1] // 2  # not -1: an empty batch has no size to infer it from
    halves = (
        base.reshape(base.shape[0], 2, half).swapaxes(0, 1),
        shift.reshape(shift.shape[0], 2, half).swapaxes(0, 1),
    )
    return jnp.sum(jax.lax.map(lambda half: _gap_sums(*half, degree), halves), axis=0)


def _gap_sums(base, shift, degree):
    off = jax.nn.relu(base) ** degree
    return jnp.sum(jax.nn.relu(base[:, None, :] + shift[None]) ** degree - off[:, None, :], axis=-1)


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _use_native_kernel(base, shift, degree) -> bool:
    # one device only: XLA's partitioner cannot split a custom call over a sharded batch; and an
    # integer degree, which the kernel takes as an int64 attribute
    float32 = base.dtype == jnp.float32 and shift.dtype == jnp.float32
    integer = isinstance(degree, (int, np.integer)) and not isinstance(degree, bool) and degree >= 1
    return _on_cpu() and float32 and integer and jax.device_count() == 1 and native.native_kernels_enabled()


def rectified_power_derivative(x: Float[Array, "*shape"], degree: int) -> Float[Array, "*shape"]:
    """f(x) = d/dx max(x, 0)^n = n max(x, 0)^(n-1) (1[x > 0] at n = 1): n times the activation of
    the rectified-power Lagrangian (`jamem.core.lagrangians.RectifiedPower`), the duality of
    arXiv:1606.01164, eq. 10."""
    return degree * RectifiedPower(degree).activation(x)


def _gaps_forward(base, shift, degree):
    return rectified_power_gaps(base, shift, degree), (base, shift)


def _gaps_backward(degree, residuals, cotangent):
    base, shift = residuals
    if _use_native_kernel(base, shift, degree):
        return _native_gaps_backward(base, shift, cotangent.astype(jnp.float32), degree)
    return _xla_gaps_backward(degree, base, shift, cotangent)


def _xla_gaps_backward(degree, base, shift, cotangent):
    d_base = -jnp.sum(cotangent, axis=-1)[:, None] * rectified_power_derivative(base, degree)

    def weighted_derivative(class_cotangent, class_shift):
        return class_cotangent[:, None] * rectified_power_derivative(base + class_shift[None, :], degree)

    # The backward pass has two reductions (over classes and over the batch) of one (C, B, K)
    # product; XLA's CPU backend makes a slow fusion of the pair, so on CPU a scan over the
    # classes does one (B, K) slab at a time. On accelerators the loop's per-iteration launch and
    # sync cost dominates instead, so the classes are one vmapped expression there.
    if not _on_cpu():
        weighted = jax.vmap(weighted_derivative)(cotangent.T, shift)
        return d_base + jnp.sum(weighted, axis=0), jnp.sum(weighted, axis=1)

    def one_class(d_base, class_cotangent_and_shift):
        weighted = weighted_derivative(*class_cotangent_and_shift)
        return d_base + weighted, jnp.sum(weighted, axis=0)

    d_base, d_shift = jax.lax.scan(one_class, d_base, (cotangent.T, shift))
    return d_base, d_shift


rectified_power_gaps.defvjp(_gaps_forward, _gaps_backward)


# The compiled backward has no derivative of its own: a gradient of the gradient (an input-gradient
# penalty, say) differentiates the XLA form of the same backward instead.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _native_gaps_backward(base, shift, cotangent, degree):
    return _native_kernels(degree)[1](base, shift, cotangent)


def _native_backward_forward(base, shift, cotangent, degree):
    return _native_gaps_backward(base, shift, cotangent, degree), (base, shift, cotangent)


def _native_backward_backward(degree, residuals, cotangents):
    _, vjp = jax.vjp(lambda b, s, g: _xla_gaps_backward(degree, b, s, g), *residuals)
    return vjp(tuple(cotangents))


_native_gaps_backward.defvjp(_native_backward_forward, _native_backward_backward)


@functools.cache
def _native_kernels(degree: int):
    """The compiled forward and backward of `degree`, with batching rules for `jax.vmap`.

    vmap over images (one attack per image, say) adds an axis to `base` and not to the shared
    `shift`: the rows of every copy then go to one kernel call, as one batch, instead of one call
    per copy. The shift's gradient must stay one per copy there; it comes from the XLA form, which
    jit drops when nothing uses it (an input gradient). A vmapped `shift` (a batch of models) runs
    one call per model."""

    @jax.custom_batching.custom_vmap
    def forward(base, shift):
        return native.class_gaps_forward(base, shift, degree)

    @forward.def_vmap
    def _forward_rule(axis_size, in_batched, base, shift):
        if in_batched[1]:
            base = base if in_batched[0] else jnp.broadcast_to(base, (axis_size, *base.shape))
            return jax.lax.map(lambda pair: forward(*pair), (base, shift)), True
        gaps = forward(base.reshape(-1, base.shape[-1]), shift)
        return gaps.reshape(*base.shape[:-1], shift.shape[0]), True

    @jax.custom_batching.custom_vmap
    def backward(base, shift, cotangent):
        return native.class_gaps_backward(base, shift, cotangent, degree)

    @backward.def_vmap
    def _backward_rule(axis_size, in_batched, base, shift, cotangent):
        base, cotangent = (
            x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, batched in zip((base, cotangent), (in_batched[0], in_batched[2]))
        )
        if in_batched[1]:
            return jax.lax.map(lambda args: backward(*args), (base, shift, cotangent)), (True, True)
        d_base, _ = backward(base.reshape(-1, base.shape[-1]), shift, cotangent.reshape(-1, cotangent.shape[-1]))
        d_shift = jax.vmap(lambda b, g: _xla_gaps_backward(degree, b, shift, g)[1])(base, cotangent)
        return (d_base.reshape(base.shape), d_shift), (True, True)

    return forward, backward


def dual_outputs(model: DenseAMClassifier, image: Float[Array, " N"]) -> Float[Array, " C"]:
    """The dual one-hidden-layer network (eq. 10; arXiv:1606.01164, eq. 10): c_alpha = tanh( sum_mu xi^mu_alpha
    f(xi^mu_v . v) ), f = F' = n relu(x)^(n-1). It is the eps -> 0 limit of the classifier with
    classes started at -eps and beta = 1 / (2 eps)."""
    visible, classes = model.split_memories()
    hidden = rectified_power_derivative(visible @ image, model.degree)
    return jnp.tanh(hidden @ classes)


def power_loss(outputs: Float[Array, " C"], label, *, power: int = 2) -> Float[Array, ""]:
    """C = sum_alpha (c_alpha - t_alpha)^(2m), targets t = +1 for the label, -1 otherwise (arXiv:1606.01164, App. A)."""
    m = check_positive_int(power, name="power")
    targets = 2.0 * jax.nn.one_hot(label, outputs.shape[-1]) - 1.0
    return jnp.sum((outputs - targets) ** (2 * m))


def log_power_loss(scores: Float[Array, " C"], label, *, power: int = 2) -> Float[Array, ""]:
    """log of `power_loss(tanh(scores), label)`, computed from the scores without underflow.

    |c - t| is 1 - tanh(s) = 2 sigmoid(-2s) for t = +1 and 1 + tanh(s) = 2 sigmoid(2s) for t = -1,
    so log C = logsumexp_alpha 2m log|c_alpha - t_alpha|. Its gradient points where the loss's does,
    but stays representable when tanh saturates in float32 (where the loss's own gradient is 0):
    input-gradient attacks on a confident DenseAM need it.
    """
    m = check_positive_int(power, name="power")
    signs = 2.0 * jax.nn.one_hot(label, scores.shape[-1]) - 1.0  # t
    log_gaps = jnp.log(2.0) + jax.nn.log_sigmoid(-2.0 * signs * scores)
    return jax.nn.logsumexp(2 * m * log_gaps)
