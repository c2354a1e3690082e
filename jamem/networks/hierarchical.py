"""Hierarchical associative memory (Krotov 2021, "Hierarchical Associative Memory",
arXiv:2107.06446): any number of layers of neurons joined by dense or
convolutional synapses, with one energy for the whole network.

Layer l has a state x_l (a flat vector of N_l neurons; a convolutional synapse reads it as an
image of shape (C, H, W)), a Lagrangian L_l and activations g_l = grad L_l(x_l). Each synapse s
joins a lower layer a(s) to an upper layer b(s) with a linear map W_s (a matrix, or a convolution;
the feedback weights are the transpose of the feed-forward ones). The energy is

    E = sum_l [ x_l . g_l - L_l(x_l) ]  -  sum_s g_b(s) . W_s g_a(s)  -  sum_l b_l . g_l,

neuron (Legendre) energies minus synapse energies, b_l being biases. The dynamics are

    tau_l dx_l/dt = - dE/dg_l = sum_{s: b(s)=l} W_s g_a(s) + sum_{s: a(s)=l} W_s^T g_b(s) + b_l - x_l,

the feedback terms W_s^T coming from `jax.grad` of the synapse energies, and

    dE/dt = - sum_l tau_l (dx_l/dt) . Hess L_l (dx_l/dt) <= 0

for convex Lagrangians. The network is a `jamem` energy of the tuple of layer states, and `settle`
integrates the dynamics through the core `jamem.retrieve` (solver `EulerFlow`), keeping observed
neurons clamped (a boolean mask per layer): pattern completion. With two layers, one
dense synapse Xi, identity features and a softmax hidden layer this is model B of Krotov &
Hopfield 2020 (`jamem.two_layer`).
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._checks import as_float_array, check_key, check_positive, check_positive_int
from ..core.dynamics import EulerFlow, SaveAt, Solution, retrieve
from ..core.energies import AbstractEnergy
from ..core.lagrangians import AbstractLagrangian


class Layer(eqx.Module):
    """One layer of neurons: its size, Lagrangian and time constant.

    Args:
        size: the number of neurons N_l (a state is a flat vector of this length).
        lagrangian: L_l, an `AbstractLagrangian` (e.g. `lagrangians.ReLU()`).
        tau: the time constant, > 0.
    """

    size: int = eqx.field(static=True)
    lagrangian: AbstractLagrangian
    tau: float = eqx.field(static=True, default=1.0)

    def __init__(self, size: int, lagrangian, *, tau: float = 1.0):
        size = check_positive_int(size, name="size")
        if not isinstance(lagrangian, AbstractLagrangian):
            raise TypeError(
                f"`lagrangian` must be a jamem.lagrangians.AbstractLagrangian, got {type(lagrangian).__name__}."
            )
        self.size = size
        self.lagrangian = lagrangian
        self.tau = check_positive(tau, name="tau")


class AbstractSynapse(eqx.Module):
    """A linear map W from a lower layer's activations to an upper layer's input; its energy is
    - g_upper . W g_lower."""

    in_size: eqx.AbstractVar[int]
    out_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def forward(self, g_in: Float[Array, " _n"]) -> Float[Array, " _m"]:
        """W g_in, a flat vector of `out_size`."""

    def energy(self, g_in: Float[Array, " _n"], g_out: Float[Array, " _m"]) -> Float[Array, ""]:
        """The synapse energy - g_out . W g_in."""
        return -jnp.dot(g_out, self.forward(g_in))


class DenseSynapse(AbstractSynapse):
    """All-to-all synapses: W g_in with a (out_size, in_size) matrix.

    Args:
        weight: the matrix W, shape (out_size, in_size).
    """

    weight: Float[Array, "M N"]
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, weight):
        weight = as_float_array(weight, name="weight", ndim=2)
        self.weight = weight
        self.out_size, self.in_size = (int(s) for s in weight.shape)

    @classmethod
    def init(cls, in_size: int, out_size: int, *, key: PRNGKeyArray, scale: float | None = None) -> DenseSynapse:
        """Gaussian weights with standard deviation `scale` (default 1 / sqrt(in_size))."""
        in_size = check_positive_int(in_size, name="in_size")
        out_size = check_positive_int(out_size, name="out_size")
        scale = 1.0 / math.sqrt(in_size) if scale is None else check_positive(scale, name="scale")
        return cls(scale * jax.random.normal(check_key(key), (out_size, in_size)))

    def forward(self, g_in):
        return self.weight @ g_in


class ConvSynapse(AbstractSynapse):
    """Convolutional synapses (shared weights, local receptive fields): the lower layer is read
    as an image of shape `in_shape` = (C_in, H, W) and W g_in is its convolution
    (`jax.lax.conv_general_dilated`, NCHW / OIHW) with a (C_out, C_in, kh, kw) kernel, flattened.
    The feedback to the lower layer, the transposed convolution, comes from `jax.grad`.

    Args:
        kernel: shape (C_out, C_in, kh, kw).
        in_shape: (C_in, H, W) of the lower layer.
        stride: (sh, sw) or one int.
        padding: "VALID" or "SAME".
    """

    kernel: Float[Array, "O I kh kw"]
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    out_shape: tuple[int, int, int] = eqx.field(static=True)
    stride: tuple[int, int] = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, kernel, in_shape, *, stride=1, padding: str = "VALID"):
        kernel = as_float_array(kernel, name="kernel", ndim=4)
        in_shape = _int_tuple(in_shape, name="in_shape", length=3, what="(channels, height, width)")
        if kernel.shape[1] != in_shape[0]:
            raise ValueError(
                f"`kernel` has {kernel.shape[1]} input channels but `in_shape` has {in_shape[0]}: they must match."
            )
        stride = _int_tuple(stride, name="stride", length=2, what="(sh, sw) or one int")
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"`padding` must be 'VALID' or 'SAME', got {padding!r}.")
        self.kernel = kernel
        self.in_shape = in_shape
        self.stride = stride
        self.padding = padding
        out = jax.eval_shape(
            lambda image: _conv(image, kernel, stride, padding), jax.ShapeDtypeStruct(in_shape, kernel.dtype)
        ).shape
        if min(out) < 1:
            raise ValueError(f"the kernel {tuple(kernel.shape[2:])} does not fit in the image {in_shape[1:]}.")
        self.out_shape = tuple(int(s) for s in out)
        self.in_size = math.prod(in_shape)
        self.out_size = math.prod(self.out_shape)

    @classmethod
    def init(
        cls,
        in_shape,
        out_channels: int,
        kernel_size: int,
        *,
        key: PRNGKeyArray,
        stride=1,
        padding: str = "VALID",
        scale: float | None = None,
    ) -> ConvSynapse:
        """Gaussian kernel with standard deviation `scale` (default 1 / sqrt(fan-in))."""
        in_shape = _int_tuple(in_shape, name="in_shape", length=3, what="(channels, height, width)")
        out_channels = check_positive_int(out_channels, name="out_channels")
        kernel_size = check_positive_int(kernel_size, name="kernel_size")
        fan_in = in_shape[0] * kernel_size**2
        scale = 1.0 / math.sqrt(fan_in) if scale is None else check_positive(scale, name="scale")
        kernel = scale * jax.random.normal(check_key(key), (out_channels, in_shape[0], kernel_size, kernel_size))
        return cls(kernel, in_shape, stride=stride, padding=padding)

    def forward(self, g_in):
        return _conv(g_in.reshape(self.in_shape), self.kernel, self.stride, self.padding).reshape(-1)


def _int_tuple(values, *, name: str, length: int, what: str, minimum: int = 1) -> tuple[int, ...]:
    """`values` as a tuple of `length` integers >= minimum (one integer stands for all of them);
    4.0 is read as 4, 4.7 refused, not truncated."""
    if isinstance(values, numbers.Number):
        values = (values,) * length
    try:
        values = tuple(values)
    except TypeError as err:
        raise TypeError(f"`{name}` must be {what}, got {values!r}.") from err
    if len(values) != length:
        raise ValueError(f"`{name}` must be {what}: {length} integers, got {values!r}.")
    return tuple(check_positive_int(v, name=f"{name}[{i}]", minimum=minimum) for i, v in enumerate(values))


def _conv(image, kernel, stride, padding):
    # default dimension numbers: NCHW input, OIHW kernel
    return jax.lax.conv_general_dilated(image[None], kernel, window_strides=stride, padding=padding)[0]


class HierarchicalNetwork(AbstractEnergy):
    """Layers joined by synapses, with one energy (arXiv:2107.06446). Acts on one network state, a tuple of
    flat layer states (x_0, ..., x_{L-1}); batch with `jax.vmap`. It is a `jamem` energy of that
    tuple (its parameters are its own fields, `params` is unused), and its velocity is the neuron
    dynamics - dE/dg / tau, so `jamem.retrieve(network, states, solver=jamem.EulerFlow(dt))` runs
    it.

    Args:
        layers: the `Layer`s, lowest (visible) first.
        synapses: `DenseSynapse`s / `ConvSynapse`s.
        edges: (lower, upper) layer indices for each synapse; default joins layer i to i + 1 with
            synapse i (a chain).
        biases: one (N_l,) bias per layer, default zeros.
    """

    layers: tuple[Layer, ...]
    synapses: tuple[AbstractSynapse, ...]
    biases: tuple[Float[Array, " _n"], ...]
    edges: tuple[tuple[int, int], ...] = eqx.field(static=True)

    def __init__(self, layers, synapses, *, edges=None, biases=None):
        layers, synapses = tuple(layers), tuple(synapses)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("`layers` must be a non-empty sequence of `Layer`s.")
        if not all(isinstance(s, AbstractSynapse) for s in synapses):
            raise TypeError("`synapses` must be a sequence of DenseSynapse / ConvSynapse.")
        if edges is None:
            if len(synapses) != len(layers) - 1:
                raise ValueError(
                    f"with no `edges`, a chain of {len(layers)} layers needs {len(layers) - 1} synapses, "
                    f"got {len(synapses)}."
                )
            edges = tuple((i, i + 1) for i in range(len(synapses)))
        edges = tuple(
            _int_tuple(edge, name=f"edges[{i}]", length=2, what="a (lower, upper) pair of layer indices", minimum=0)
            for i, edge in enumerate(edges)
        )
        if len(edges) != len(synapses):
            raise ValueError(f"`edges` ({len(edges)}) must give one (lower, upper) pair per synapse ({len(synapses)}).")
        for i, ((a, b), syn) in enumerate(zip(edges, synapses)):
            if not (0 <= a < len(layers) and 0 <= b < len(layers)) or a == b:
                raise ValueError(f"`edges`[{i}] = {(a, b)} must join two different layers among {len(layers)}.")
            if syn.in_size != layers[a].size or syn.out_size != layers[b].size:
                raise ValueError(
                    f"synapse {i} maps {syn.in_size} -> {syn.out_size} neurons but joins layer {a} "
                    f"({layers[a].size} neurons) to layer {b} ({layers[b].size} neurons)."
                )
        if biases is None:
            biases = tuple(jnp.zeros(layer.size) for layer in layers)
        else:
            biases = tuple(as_float_array(b, name="biases", ndim=1) for b in biases)
            if [b.shape[0] for b in biases] != [layer.size for layer in layers]:
                raise ValueError("`biases` must hold one vector per layer, of the layer's size.")
        self.layers, self.synapses, self.edges, self.biases = layers, synapses, edges, biases

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(layer.size for layer in self.layers)

    def activations(self, states: Sequence[Float[Array, " _n"]]) -> tuple[Float[Array, " _n"], ...]:
        """g_l = grad L_l(x_l) for every layer."""
        return tuple(layer.lagrangian.activation(x) for layer, x in zip(self.layers, states))

    def interaction_energy(self, activations: Sequence[Float[Array, " _n"]]) -> Float[Array, ""]:
        """- sum_s g_b(s) . W_s g_a(s) - sum_l b_l . g_l, a function of the activations only."""
        total = sum(syn.energy(activations[a], activations[b]) for syn, (a, b) in zip(self.synapses, self.edges))
        return total - sum(jnp.dot(b, g) for b, g in zip(self.biases, activations))

    def energy(self, states: Sequence[Float[Array, " _n"]]) -> Float[Array, ""]:
        """E = sum_l [x_l . g_l - L_l(x_l)] - sum_s g_b(s) . W_s g_a(s) - sum_l b_l . g_l (arXiv:2107.06446)."""
        self._check_states(states)
        gs = self.activations(states)
        neurons = sum(jnp.dot(x, g) - layer.lagrangian(x) for layer, x, g in zip(self.layers, states, gs))
        return neurons + self.interaction_energy(gs)

    def __call__(self, states, params=None) -> Float[Array, ""]:
        """The energy of the network state (`params` is unused: the weights are fields)."""
        del params
        return self.energy(states)

    def velocity(self, states, params=None) -> tuple[Float[Array, " _n"], ...]:
        """dx_l/dt = (-dE/dg_l) / tau_l = (input_l - x_l) / tau_l, input_l = -d(interaction)/dg_l."""
        del params
        self._check_states(states)
        inputs = jax.grad(self.interaction_energy)(self.activations(states))
        return tuple((-i - x) / layer.tau for layer, i, x in zip(self.layers, inputs, states))

    def _check_states(self, states):
        if len(states) != len(self.layers) or any(x.shape != (n,) for x, n in zip(states, self.sizes)):
            got = [tuple(getattr(x, "shape", ())) for x in states]
            raise ValueError(f"`states` must be one flat vector per layer of sizes {self.sizes}, got shapes {got}.")

    def zeros(self) -> tuple[Float[Array, " _n"], ...]:
        """The all-zero network state."""
        return tuple(jnp.zeros(n) for n in self.sizes)


def settle(
    network: HierarchicalNetwork,
    states0: Sequence[Float[Array, " _n"]],
    *,
    mask: Sequence[Bool[Array, " _n"] | None] | None = None,
    dt: float = 0.1,
    steps: int = 100,
    save_every: int | None = None,
    save_states: bool = False,
) -> Solution:
    """Run the network dynamics (arXiv:2107.06446) with explicit Euler,

        x_l <- x_l + (dt / tau_l) (input_l - x_l),

    all layers from the same (old) state, clamped neurons (mask True) held at their values in
    `states0`: `jamem.retrieve(network, tuple(states0), solver=EulerFlow(dt), steps=steps,
    mask=..., saveat=SaveAt(every=save_every, states=save_states))`, a `lax.scan`:
    differentiable end to end (train through it); batch with `jax.vmap`.

    Args:
        network: a `HierarchicalNetwork`.
        states0: the initial state of each layer (a sequence of flat vectors).
        mask: per layer a boolean vector (True = clamped) or None (nothing clamped), or None.
        dt: the Euler step, 0 < dt <= the smallest tau (the energy need not decrease otherwise).
        steps: the number of steps.
        save_every: record the energy at step 0 and every this many steps (default: only the
            ends).
        save_states: also record the states at those times.

    Returns:
        A `jamem.Solution` whose state is the tuple of layer states.
    """
    if not isinstance(network, HierarchicalNetwork):
        raise TypeError(f"`network` must be a HierarchicalNetwork, got {type(network).__name__}.")
    if isinstance(states0, jax.Array) or not isinstance(states0, Sequence):
        raise TypeError("`states0` must be a sequence (tuple or list) with one flat state per layer.")
    states0 = tuple(as_float_array(x, name="states0", ndim=1) for x in states0)
    network._check_states(states0)
    if mask is None:
        mask = (None,) * len(states0)
    if len(mask) != len(states0):
        raise ValueError(f"`mask` must give one entry per layer ({len(states0)}), got {len(mask)}.")
    clamps = []
    for i, (m, x) in enumerate(zip(mask, states0)):
        m = jnp.zeros(x.shape, bool) if m is None else jnp.asarray(m)
        if m.dtype != jnp.bool_ or m.shape != x.shape:
            raise ValueError(f"`mask`[{i}] must be a boolean vector of shape {x.shape}, got {m.dtype}{m.shape}.")
        clamps.append(m)
    dt = check_positive(dt, name="dt")
    tau_min = min(layer.tau for layer in network.layers)
    if isinstance(dt, float) and dt > tau_min:
        raise ValueError(f"`dt` ({dt}) must be at most the smallest time constant ({tau_min}) for explicit Euler.")
    steps = check_positive_int(steps, name="steps")
    save_every = steps if save_every is None else check_positive_int(save_every, name="save_every")
    return retrieve(
        network,
        states0,
        solver=EulerFlow(dt),
        steps=steps,
        mask=tuple(clamps),
        saveat=SaveAt(every=save_every, states=save_states),
    )
