"""A one-hidden-layer ReLU network, the classic baseline that adversarial images fool
(Krotov & Hopfield 2017, arXiv:1701.00939, talk slides). It is the dual (arXiv:1606.01164,
eq. 10) of a DenseAM with n = 2, trained as an ordinary network with softmax cross-entropy."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_key, check_positive_int


class ReLUMLP(eqx.Module):
    """logits = W2 relu(W1 x + b1) + b2."""

    hidden: eqx.nn.Linear
    output: eqx.nn.Linear

    def __init__(self, *, num_visible: int = 784, num_hidden: int = 2000, num_classes: int = 10, key: PRNGKeyArray):
        check_positive_int(num_visible, name="num_visible")
        check_positive_int(num_hidden, name="num_hidden")
        check_positive_int(num_classes, name="num_classes", minimum=2)
        k1, k2 = jax.random.split(check_key(key))
        self.hidden = eqx.nn.Linear(num_visible, num_hidden, key=k1)
        self.output = eqx.nn.Linear(num_hidden, num_classes, key=k2)

    def batch_logits(self, images: Float[Array, "B N"]) -> Float[Array, "B C"]:
        hidden = jax.nn.relu(images @ self.hidden.weight.T + self.hidden.bias[None, :])
        return hidden @ self.output.weight.T + self.output.bias[None, :]

    def __call__(self, image: Float[Array, " N"]) -> Float[Array, " C"]:
        return self.batch_logits(image[None])[0]
