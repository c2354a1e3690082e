import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jamem import hierarchical as hm
from jamem import lagrangians as lg
from jamem import two_layer as tl


def _conv_net(key):
    """image 1x6x6 (identity) -conv 3x3-> 2x4x4 (tanh) -dense-> 5 (softmax)."""
    k1, k2, k3 = jax.random.split(key, 3)
    conv = hm.ConvSynapse.init((1, 6, 6), 2, 3, key=k1, scale=0.5)
    dense = hm.DenseSynapse.init(conv.out_size, 5, key=k2, scale=0.5)
    layers = [hm.Layer(36, lg.Identity()), hm.Layer(32, lg.Tanh(), tau=0.5), hm.Layer(5, lg.Softmax(2.0), tau=0.2)]
    biases = [jnp.zeros(36), 0.1 * jax.random.normal(k3, (32,)), jnp.zeros(5)]
    return hm.HierarchicalNetwork(layers, [conv, dense], biases=biases)


def test_two_dense_layers_are_the_two_layer_network():
    """Identity features + softmax hidden joined by Xi is model B (arXiv:2008.06996): same energy, same trajectory."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    xi = jax.random.normal(k1, (6, 9)) / 3.0
    v0, h0 = jax.random.normal(k2, (9,)), jax.random.normal(k3, (6,))
    net = hm.HierarchicalNetwork(
        [hm.Layer(9, lg.Identity(), tau=1.0), hm.Layer(6, lg.Softmax(1.5), tau=0.4)], [hm.DenseSynapse(xi)]
    )
    two = tl.model_b(1.5, tau_v=1.0, tau_h=0.4)
    np.testing.assert_allclose(net.energy((v0, h0)), two.energy(v0, h0, xi), rtol=1e-5)
    run_h = jax.jit(lambda v0, h0: hm.settle(net, (v0, h0), dt=0.1, steps=30, save_every=10))
    run_t = jax.jit(lambda v0, h0: tl.simulate(two, v0, xi, h0=h0, dt=0.1, steps=30, save_every=10))
    a, b = run_h(v0, h0), run_t(v0, h0)
    np.testing.assert_allclose(a.state[0], b.state[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.state[1], b.state[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.trajectory_energy, b.trajectory_energy, rtol=1e-5, atol=1e-6)


def test_conv_network_energy_descends_clamps_and_batches():
    """arXiv:2107.06446: dE/dt <= 0 along the dynamics of a conv + dense network (jit + vmap over a batch),
    with the top half of the image clamped; the feedback of a conv synapse is its transpose."""
    net = _conv_net(jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (2, 36))
    mask = jnp.arange(36) < 18

    @jax.jit
    @jax.vmap
    def run(image):
        states0 = (image, jnp.zeros(32), jnp.zeros(5))
        return hm.settle(net, states0, mask=(mask, None, None), dt=0.1, steps=100, save_every=5)

    out = run(images)
    e = np.asarray(out.trajectory_energy, np.float64)
    assert e.shape == (2, 21)
    assert np.all(np.diff(e, axis=1) <= 1e-5 * np.abs(e).max()), np.diff(e, axis=1).max()
    assert np.all(e[:, -1] < e[:, 0] - 1e-2)
    np.testing.assert_array_equal(out.state[0][:, :18], images[:, :18])  # clamped
    assert np.abs(np.asarray(out.state[0][:, 18:] - images[:, 18:])).min() > 0  # free neurons moved

    # the convolution is a linear map: as a dense matrix it gives the same energy and dynamics
    conv = net.synapses[0]
    matrix = jax.jit(jax.jacfwd(conv.forward))(jnp.zeros(36))
    dense_net = hm.HierarchicalNetwork(net.layers, [hm.DenseSynapse(matrix), net.synapses[1]], biases=net.biases)
    states = (images[0], jax.random.normal(jax.random.key(3), (32,)), jax.random.normal(jax.random.key(4), (5,)))
    both = jax.jit(lambda s: [(n.energy(s), n.velocity(s)) for n in (net, dense_net)])
    (e_conv, v_conv), (e_dense, v_dense) = both(states)
    np.testing.assert_allclose(e_conv, e_dense, rtol=1e-5)
    for a, b in zip(v_conv, v_dense):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    key = jax.random.key(0)
    layers = [hm.Layer(4, lg.Identity()), hm.Layer(3, lg.ReLU())]
    with pytest.raises(ValueError, match="`size`"):
        hm.Layer(0, lg.ReLU())
    with pytest.raises(TypeError, match="`lagrangian`"):
        hm.Layer(3, jnp.tanh)
    with pytest.raises(ValueError, match="synapse 0"):
        hm.HierarchicalNetwork(layers, [hm.DenseSynapse.init(4, 5, key=key)])
    with pytest.raises(ValueError, match="synapses"):
        hm.HierarchicalNetwork(layers, [])
    with pytest.raises(ValueError, match="`edges`"):
        hm.HierarchicalNetwork(layers, [hm.DenseSynapse.init(4, 3, key=key)], edges=[(0, 0)])
    with pytest.raises(ValueError, match="`kernel`"):
        hm.ConvSynapse(jnp.ones((2, 3, 3, 3)), (1, 6, 6))
    with pytest.raises(ValueError, match="does not fit"):
        hm.ConvSynapse(jnp.ones((2, 1, 7, 7)), (1, 6, 6))
    with pytest.raises(ValueError, match="`padding`"):
        hm.ConvSynapse(jnp.ones((2, 1, 3, 3)), (1, 6, 6), padding="FULL")
    net = hm.HierarchicalNetwork(layers, [hm.DenseSynapse.init(4, 3, key=key)])
    with pytest.raises(ValueError, match="`states`"):
        hm.settle(net, (jnp.zeros(4), jnp.zeros(4)))
    with pytest.raises(TypeError, match="states0"):
        hm.settle(net, jnp.zeros(7))
    with pytest.raises(ValueError, match="`mask`"):
        hm.settle(net, net.zeros(), mask=(jnp.ones(3, bool), None))
    with pytest.raises(ValueError, match="`dt`"):
        hm.settle(net, net.zeros(), dt=2.0)
    with pytest.raises(ValueError, match="every"):
        hm.settle(net, net.zeros(), steps=10, save_every=4)


def test_network_runs_through_core_retrieve_until_it_settles():
    """The network is an energy of the tuple of layer states: `settle` is `jamem.retrieve` on it,
    and with a `tol` the core loop stops at a fixed point of the dynamics (velocity about 0)."""
    import jamem as jm

    net = _conv_net(jax.random.key(3))
    states0 = (jax.random.normal(jax.random.key(4), (36,)), jnp.zeros(32), jnp.zeros(5))
    via_settle = hm.settle(net, states0, dt=0.1, steps=40)
    via_retrieve = jm.retrieve(net, states0, solver=jm.EulerFlow(0.1), steps=40)
    for a, b in zip(via_settle.state, via_retrieve.state):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    settled = jm.retrieve(net, states0, solver=jm.EulerFlow(0.1), steps=5000, tol=1e-6)
    assert bool(settled.converged) and int(settled.num_steps) < 5000
    speed = jnp.concatenate(net.velocity(settled.state))
    assert float(jnp.max(jnp.abs(speed))) < 1e-4
    assert float(settled.energy) < float(net(states0))
    with pytest.raises(ValueError, match="states"):
        net((jnp.zeros(10),))
