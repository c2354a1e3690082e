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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .model import DenseAMClassifier


def classes_per_memory(model: DenseAMClassifier, *, threshold: float = 0.0) -> Int[Array, " K"]:
    """How many classes each memory votes for: #{alpha : xi^mu_alpha > threshold}."""
    _, classes = model.split_memories()
    return jnp.sum(classes > threshold, axis=-1)


@jax.jit
def _ratios(model: DenseAMClassifier, images: Float[Array, "B N"], temperature) -> Float[Array, " B"]:
    visible, classes = model.split_memories()
    base = (images @ visible.T - jnp.sum(classes, axis=-1)[None, :]) / temperature  # (B, K)
    winner = jnp.argmax(model.batch_scores(images, temperature=temperature), axis=-1)
    shift = 2 * classes[:, winner].T / temperature  # (B, K): the winning class's entry per memory
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
