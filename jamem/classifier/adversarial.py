"""Adversarial inputs for classifiers (Krotov & Hopfield 2017, arXiv:1701.00939), plus the
standard FGSM and PGD baselines.

A model is any function `outputs_fn(images (B, N)) -> (B, C)` whose argmax is the prediction (a
DenseAM classifier's `batch_scores` or its tanh outputs, an MLP's logits), and a loss
`loss_fn(outputs (C,), label) -> scalar` that training minimised. Pixels stay in [-1, 1].

- `descend` (arXiv:1701.00939): gradient steps on the input, weights frozen. Untargeted, the loss of the true
  label goes up; targeted, the loss of the target goes down; each image stops as soon as its label
  flips (or reaches the target) or after `steps`. Steps are normalised by their largest pixel,
  so `step_size` is the most any pixel moves per step.
- `fgsm`, `pgd`: one signed step of size epsilon; projected signed steps inside the L-infinity
  ball of radius epsilon, from a random start.
- `spsa`: a gradient-free L-infinity attack (finite differences along random directions), the
  check that PGD's numbers are not an artefact of gradient masking.
- `rubbish_images`: targeted descent from noise.
- `transfer_matrix`: images made on one model, the fraction misclassified by each model.

Everything is jit-compiled and vmapped over images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._checks import check_key, check_positive, check_positive_int

OutputsFn = Callable[[Float[Array, "B N"]], Float[Array, "B C"]]
LossFn = Callable[[Float[Array, " C"], Int[Array, ""]], Float[Array, ""]]


class AttackResult(NamedTuple):
    images: Float[Array, "B N"]
    success: Bool[Array, " B"]  # label flipped (untargeted) or target reached (targeted)
    steps: Int[Array, " B"]


def _check_images(images, name: str = "images") -> Float[Array, "B N"]:
    images = jnp.asarray(images)
    if images.ndim != 2 or images.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (B > 0, N), got {images.shape}.")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be floating point, got {images.dtype}.")
    return images


def _check_labels(labels, count: int, name: str = "labels") -> Int[Array, " B"]:
    labels = jnp.asarray(labels)
    if labels.shape != (count,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`{name}` must be {count} integers, got shape {labels.shape} and dtype {labels.dtype}.")
    return labels


def _check_epsilon(epsilon) -> float:
    if not epsilon >= 0:
        raise ValueError(f"`epsilon` must be >= 0, got {epsilon}.")
    return float(epsilon)


def margin_loss(outputs: Float[Array, " C"], label: Int[Array, ""]) -> Float[Array, ""]:
    """max_{j != y} o_j - o_y (Carlini & Wagner 2017), positive once the label flips. Its gradient
    has no saturating tanh or softmax in it: on the K = 400 MNIST models, PGD on this margin broke
    far more high-n images than PGD on the training loss (results/adversarial/gradient_masking.json)."""
    others = jnp.where(jax.nn.one_hot(label, outputs.shape[-1]) > 0, -jnp.inf, outputs)
    return jnp.max(others) - outputs[label]


def _single(outputs_fn: OutputsFn, image: Float[Array, " N"]) -> Float[Array, " C"]:
    return outputs_fn(image[None])[0]


def descend(
    outputs_fn: OutputsFn,
    images: Float[Array, "B N"],
    labels: Int[Array, " B"],
    *,
    loss_fn: LossFn,
    targets: Int[Array, " B"] | None = None,
    step_size: float | int = 0.01,
    steps: int = 500,
    stop_on_success: bool = True,
) -> AttackResult:
    """The attack of arXiv:1701.00939: normalised gradient steps on the pixels until the label flips.

    With `stop_on_success=False` every image takes all `steps` (descent to a loss minimum).

    Untargeted (targets None): x <- x + s g / max|g|, g = d loss(f(x), label) / dx.
    Targeted: x <- x - s g / max|g|, g = d loss(f(x), target) / dx, until argmax f(x) = target.
    """
    images = _check_images(images)
    labels = _check_labels(labels, images.shape[0])
    targeted = targets is not None
    goals = _check_labels(targets, images.shape[0], "targets") if targeted else labels
    if not step_size > 0:
        raise ValueError(f"`step_size` must be > 0, got {step_size}.")
    check_positive_int(steps, name="steps")
    return _descend(outputs_fn, loss_fn, images, goals, targeted, float(step_size), int(steps), stop_on_success)


@eqx.filter_jit
def _descend(outputs_fn, loss_fn, images, goals, targeted, step_size, steps, stop_on_success):
    sign = -1.0 if targeted else 1.0

    def done(x, goal):
        prediction = jnp.argmax(_single(outputs_fn, x))
        return prediction == goal if targeted else prediction != goal

    def one(x0, goal):
        grad_fn = jax.grad(lambda x: loss_fn(_single(outputs_fn, x), goal))

        def cond(carry):
            x, step = carry
            return (step < steps) & ~(done(x, goal) & stop_on_success)

        def body(carry):
            x, step = carry
            g = grad_fn(x)
            scale = jnp.max(jnp.abs(g))
            x = jnp.clip(x + sign * step_size * g / jnp.where(scale > 0, scale, 1.0), -1.0, 1.0)
            return x, step + 1

        x, taken = jax.lax.while_loop(cond, body, (x0, jnp.int32(0)))
        return x, done(x, goal), taken

    return AttackResult(*jax.vmap(one)(images, goals))


def fgsm(
    outputs_fn: OutputsFn,
    images: Float[Array, "B N"],
    labels: Int[Array, " B"],
    *,
    loss_fn: LossFn,
    epsilon: float | int,
) -> Float[Array, "B N"]:
    """Fast gradient sign method: x + epsilon sign(d loss / dx), clipped to [-1, 1]."""
    images = _check_images(images)
    labels = _check_labels(labels, images.shape[0])
    return _fgsm(outputs_fn, loss_fn, images, labels, _check_epsilon(epsilon))


@eqx.filter_jit
def _fgsm(outputs_fn, loss_fn, images, labels, epsilon):
    grads = jax.vmap(jax.grad(lambda x, y: loss_fn(_single(outputs_fn, x), y)))(images, labels)
    return jnp.clip(images + epsilon * jnp.sign(grads), -1.0, 1.0)


def pgd(
    outputs_fn: OutputsFn,
    images: Float[Array, "B N"],
    labels: Int[Array, " B"],
    *,
    loss_fn: LossFn,
    epsilon: float | int,
    step_size: float | int | None = None,
    steps: int = 40,
    key: PRNGKeyArray,
) -> Float[Array, "B N"]:
    """Projected gradient descent (Madry et al. 2018) in the L-infinity ball of radius epsilon,
    from a uniform random start; step size defaults to 2.5 epsilon / steps."""
    images = _check_images(images)
    labels = _check_labels(labels, images.shape[0])
    epsilon = _check_epsilon(epsilon)
    check_positive_int(steps, name="steps")
    step_size = 2.5 * epsilon / steps if step_size is None else check_positive(step_size, name="step_size")
    return _pgd(outputs_fn, loss_fn, images, labels, epsilon, step_size, steps, check_key(key))


@eqx.filter_jit
def _pgd(outputs_fn, loss_fn, images, labels, epsilon, step_size, steps, key):
    grad_fn = jax.vmap(jax.grad(lambda x, y: loss_fn(_single(outputs_fn, x), y)))

    def project(x):
        return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), -1.0, 1.0)

    start = project(images + jax.random.uniform(key, images.shape, minval=-epsilon, maxval=epsilon))

    def step(x, _):
        return project(x + step_size * jnp.sign(grad_fn(x, labels))), None

    return jax.lax.scan(step, start, None, length=steps)[0]


def spsa(
    outputs_fn: OutputsFn,
    images: Float[Array, "B N"],
    labels: Int[Array, " B"],
    *,
    epsilon: float | int,
    key: PRNGKeyArray,
    steps: int = 100,
    samples: int = 64,
    perturbation: float | int = 0.01,
    step_size: float | int | None = None,
) -> AttackResult:
    """A gradient-free L-infinity attack (SPSA, Uesato et al. 2018, arXiv:1802.05666): it only
    evaluates `outputs_fn`, so it is not fooled by gradients that vanish or mislead (gradient
    masking, e.g. saturated tanh outputs at high n). Robust accuracy under SPSA well below that
    under `pgd` means PGD was masked.

    Each step estimates the gradient of the margin max_{j != y} o_j - o_y from `samples` random
    +-1 directions v, as mean[(m(x + d v) - m(x - d v)) / (2 d) v] with d = `perturbation`, then
    takes a signed step (default 2.5 epsilon / steps) projected onto the ball and [-1, 1]. An
    image counts as broken at the first step its prediction is wrong; that image is returned.
    """
    images = _check_images(images)
    labels = _check_labels(labels, images.shape[0])
    epsilon = _check_epsilon(epsilon)
    check_positive_int(steps, name="steps")
    check_positive_int(samples, name="samples")
    perturbation = check_positive(perturbation, name="perturbation")
    step_size = 2.5 * epsilon / steps if step_size is None else check_positive(step_size, name="step_size")
    return _spsa(outputs_fn, images, labels, epsilon, step_size, steps, samples, float(perturbation), check_key(key))


@eqx.filter_jit
def _spsa(outputs_fn, images, labels, epsilon, step_size, steps, samples, perturbation, key):
    batch, dim = images.shape

    def margins(x, repeat):  # x: (B * repeat, N), each image's rows consecutive
        return jax.vmap(margin_loss)(outputs_fn(x), jnp.repeat(labels, repeat))

    def project(x):
        return jnp.clip(jnp.clip(x, images - epsilon, images + epsilon), -1.0, 1.0)

    def step(carry, k):
        x, best, success, taken = carry
        v = jax.random.rademacher(k, (batch, samples, dim), dtype=x.dtype)
        probes = jnp.concatenate([x[:, None] + perturbation * v, x[:, None] - perturbation * v], axis=1)
        m = margins(probes.reshape(-1, dim), 2 * samples).reshape(batch, 2 * samples)
        slope = (m[:, :samples] - m[:, samples:]) / (2 * perturbation)
        grad = jnp.einsum("bs,bsn->bn", slope, v) / samples
        x = project(x + step_size * jnp.sign(grad))
        broken = margins(x, 1) > 0
        new = broken & ~success
        return (x, jnp.where(new[:, None], x, best), success | broken, taken + ~success), None

    init = (images, images, jnp.zeros(batch, bool), jnp.zeros(batch, jnp.int32))
    (x, best, success, taken), _ = jax.lax.scan(step, init, jax.random.split(key, steps))
    return AttackResult(images=jnp.where(success[:, None], best, x), success=success, steps=taken)


def rubbish_images(
    outputs_fn: OutputsFn,
    *,
    loss_fn: LossFn,
    num_classes: int,
    per_class: int = 1,
    dim: int = 784,
    step_size: float | int = 0.01,
    steps: int = 300,
    noise_scale: float | int = 0.5,
    key: PRNGKeyArray,
) -> tuple[AttackResult, Int[Array, " B"]]:
    """Targeted descent from noise N(0, noise_scale^2) clipped to [-1, 1], toward every class, for
    the full `steps` (not stopping at the flip), so the end points approach minima of the loss
    (arXiv:1701.00939: at large n those minima should not be confidently classified rubbish)."""
    check_positive_int(num_classes, name="num_classes", minimum=2)
    check_positive_int(per_class, name="per_class")
    targets = jnp.repeat(jnp.arange(num_classes), per_class)
    noise = jnp.clip(noise_scale * jax.random.normal(check_key(key), (targets.size, dim)), -1.0, 1.0)
    # the "label" of noise is irrelevant for a targeted run; any class other than the target
    labels = (targets + 1) % num_classes
    result = descend(
        outputs_fn, noise, labels, loss_fn=loss_fn, targets=targets, step_size=step_size, steps=steps,
        stop_on_success=False,
    )  # fmt: skip
    return result, targets


def transfer_matrix(
    adversarial: dict[str, tuple[Float[Array, "B N"], Int[Array, " B"]]],
    predictors: dict[str, Callable[[Float[Array, "B N"]], Int[Array, " B"]]],
) -> dict[str, dict[str, float]]:
    """`matrix[made_on][evaluated_on]` = fraction of the images made on one model that another
    model misclassifies (prediction != true label)."""
    if not adversarial or not predictors:
        raise ValueError("`adversarial` and `predictors` must be non-empty.")
    matrix = {}
    for source, (images, labels) in adversarial.items():
        images = _check_images(images, f"adversarial[{source!r}] images")
        labels = _check_labels(labels, images.shape[0], f"adversarial[{source!r}] labels")
        matrix[source] = {name: float(jnp.mean(predict(images) != labels)) for name, predict in predictors.items()}
    return matrix
