"""Feature-to-prototype statistics of a trained DenseAM classifier (Krotov & Hopfield 2016,
arXiv:1606.01164, Figs. 2, 4).

At small n most memories vote for several classes and many memories add up to a decision
(features); at large n a memory votes for one class and one memory dominates each decision
(prototypes). Two statistics measure this:

- `classes_per_memory`: for memory mu, the number of classes alpha with xi^mu_alpha > threshold,
  the classes whose output neuron the memory pushes towards +1;
- `second_contribution_ratio`: for each image, with d_mu = F(xi^mu . V_alpha) - F(xi^mu . U)
  for the predicted class alpha, the second-largest d_mu over the largest. Values near 1 mean
  several memories share the decision; the paper counts images where it stays below 0.9.

A third says how many memories take part at all:

- `silent_memories`: memories that add nothing to any class on any of the given images
  (F(xi^mu . V_alpha) = F(xi^mu . U) = 0 for every alpha). On the training set such a memory gets
  an exactly zero gradient, so nothing trains it any more, while the per-memory normalised
  momentum of App. A keeps moving it in its last direction until the velocity underflows; its
  class weights are left wherever that takes them. Counting votes over the memories that do take
  part (`one_class_share(model, among=~silent)`) separates the trained ones from these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._checks import check_positive, check_positive_int
from .model import DenseAMClassifier, rectified_power_gaps


def classes_per_memory(model: DenseAMClassifier, *, threshold: float = 0.0) -> Int[Array, " K"]:
    """How many classes each memory votes for: #{alpha : xi^mu_alpha > threshold}."""
    _, classes = model.split_memories()
    return jnp.sum(classes > threshold, axis=-1)


def one_class_share(
    model: DenseAMClassifier, *, among: Bool[Array, " K"] | None = None, threshold: float = 0.0
) -> float | None:
    """The fraction of memories that vote for exactly one class (`classes_per_memory` == 1), over all
    memories or over those `among` selects (e.g. ~`silent_memories(...)`); None if it selects none."""
    single = np.asarray(classes_per_memory(model, threshold=threshold)) == 1
    if among is None:
        return float(np.mean(single))  # in float64, as the recorded results were
    among = np.asarray(among)
    if among.shape != single.shape or among.dtype != np.bool_:
        raise ValueError(f"`among` must be a boolean mask of shape {single.shape}, got {among.dtype}{among.shape}.")
    count = int(np.sum(among))
    return int(np.sum(single & among)) / count if count else None


def silent_memories(
    model: DenseAMClassifier, images: Float[Array, "P N"], *, eps: float = 1.0, chunk_size: int = 1000
) -> Bool[Array, " K"]:
    """Per memory: whether it contributes to no class on any image.

    With the classes started at -eps, memory mu is silent on image v when
    xi^mu . U + 2 eps max(0, max_alpha xi^mu_alpha) <= 0 (U = (v, all classes -eps)): then both
    F(xi^mu . V_alpha) and F(xi^mu . U) are 0 for every alpha, whatever the temperature.
    """
    images = jnp.asarray(images)
    if images.ndim != 2 or images.shape[1] != model.num_visible:
        raise ValueError(f"`images` must have shape (P, {model.num_visible}), got {images.shape}.")
    if images.shape[0] == 0:
        raise ValueError("`images` is empty: a memory's silence needs at least one image.")
    check_positive(eps, name="eps")
    chunk_size = check_positive_int(chunk_size, name="chunk_size")
    loudest = jnp.max(
        jnp.stack([_loudest(model, images[i : i + chunk_size], eps) for i in range(0, images.shape[0], chunk_size)]),
        axis=0,
    )
    return loudest <= 0


@jax.jit
def _loudest(model: DenseAMClassifier, images: Float[Array, "B N"], eps) -> Float[Array, " K"]:
    """max over the images of xi^mu . U + 2 eps max(0, max_alpha xi^mu_alpha), per memory."""
    base, shift = model.gap_inputs(images, temperature=1.0, eps=eps)
    return jnp.max(base, axis=0) + jnp.maximum(jnp.max(shift, axis=0), 0.0)


@jax.jit
def _ratios(model: DenseAMClassifier, images: Float[Array, "B N"], temperature) -> Float[Array, " B"]:
    base, shifts = model.gap_inputs(images, temperature=temperature)  # (B, K), (C, K)
    winner = jnp.argmax(rectified_power_gaps(base, shifts, model.degree), axis=-1)  # the scores' argmax
    shift = shifts[winner]  # (B, K): the winning class's entry per memory
    n = model.degree
    contributions = jax.nn.relu(base + shift) ** n - jax.nn.relu(base) ** n
    top2 = jax.lax.top_k(contributions, 2)[0]
    return jnp.where(top2[:, 0] > 0, top2[:, 1] / jnp.where(top2[:, 0] > 0, top2[:, 0], 1.0), 1.0)


def second_contribution_ratio(
    model: DenseAMClassifier, images: Float[Array, "P N"], *, temperature: float, chunk_size: int = 1000
) -> Float[Array, " P"]:
    """Per image: second-largest memory contribution to the predicted class over the largest.

    The ratio does not depend on `temperature` except through float32 range: use the T the
    model was trained at (n = 30 needs a few hundred).
    """
    images = jnp.asarray(images)
    if images.ndim != 2 or images.shape[1] != model.num_visible:
        raise ValueError(f"`images` must have shape (P, {model.num_visible}), got {images.shape}.")
    parts = [_ratios(model, images[i : i + chunk_size], temperature) for i in range(0, images.shape[0], chunk_size)]
    return jnp.concatenate(parts)
