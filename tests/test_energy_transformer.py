import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jamem import lagrangians as lg
from jamem.networks.energy_transformer import (
    EnergyTransformer,
    MaskedPatchET,
    layer_norm_lagrangian,
    masked_patch_mse,
    patchify,
    random_mask,
    unpatchify,
)

DIM = 8


def _block(seed=0, **kwargs):
    kwargs = dict(num_heads=2, head_dim=4, num_memories=6) | kwargs
    return EnergyTransformer(DIM, key=jax.random.key(seed), **kwargs)


def _model(seed=0, **kwargs):
    kwargs = dict(image_size=8, patch_size=4, dim=DIM, steps=3, num_heads=2, head_dim=4, num_memories=6) | kwargs
    return MaskedPatchET(key=jax.random.key(seed), **kwargs)


def _tokens(seed, num=5):
    return 2.0 * jax.random.normal(jax.random.key(seed), (num, DIM))


def _images(seed, num, side=8):
    return jax.random.uniform(jax.random.key(seed), (num, side * side), minval=-1.0, maxval=1.0)


def _with_learned_delta(block, seed):
    # a non-zero layer-norm bias, as after training
    return eqx.tree_at(lambda b: b.delta, block, 0.3 * jax.random.normal(jax.random.key(seed), (DIM,)))


@pytest.mark.parametrize(("hopfield", "exclude_self"), [("relu", False), ("softmax", True)])
def test_energy_never_increases_along_the_dynamics(hopfield, exclude_self):
    """E(g(x_t)) is non-increasing for small alpha (the continuous flow has dE/dt <= 0, arXiv:2302.07253),
    while ascending the same gradient raises it: the check can fail."""
    block = _with_learned_delta(_block(1, hopfield=hopfield, exclude_self=exclude_self), 2)
    xs = jax.vmap(lambda k: 2.0 * jax.random.normal(k, (5, DIM)))(jax.random.split(jax.random.key(3), 8))
    run = jax.jit(jax.vmap(lambda x: block(x, steps=20, step_size=0.01)))
    final, energies = run(xs)
    energies = np.asarray(energies, np.float64)
    assert energies.shape == (8, 21)
    rises = np.diff(energies, axis=1)
    assert np.all(rises <= 1e-5 * np.abs(energies[:, :-1]) + 1e-5), rises.max()
    assert np.all(energies[:, -1] < energies[:, 0] - 1e-2)  # it actually moves
    np.testing.assert_allclose(energies[:, -1], jax.vmap(block.energy)(final), rtol=1e-5)

    ascend = jax.vmap(lambda x: block.energy(x + 0.01 * jax.grad(block.energy_of_normed)(block.layer_norm(x))))
    assert np.all(np.asarray(ascend(xs)) > energies[:, 0])


def test_layer_norm_is_the_gradient_of_its_lagrangian():
    block = _with_learned_delta(_block(0), 4)
    x = _tokens(5)
    by_grad = jax.vmap(jax.grad(lambda t: layer_norm_lagrangian(t, delta=block.delta)))(x)
    np.testing.assert_allclose(block.layer_norm(x), by_grad, rtol=1e-4, atol=1e-5)
    # the library's scalar-bias Lagrangian, and the textbook layer norm
    plain = _block(0)
    np.testing.assert_allclose(plain.layer_norm(x), jax.vmap(lg.LayerNorm().activation)(x), atol=1e-6)
    xn = np.asarray(x, np.float64)
    textbook = (xn - xn.mean(1, keepdims=True)) / np.sqrt(xn.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(plain.layer_norm(x), textbook, rtol=1e-4, atol=1e-5)


def _attention_grad_by_hand(block, g, *, exclude_self):
    """dE_att/dg_A = sum_h W_K^h^T (-sum_C A_hAC Q_hC) + W_Q^h^T (-sum_B A_hBA K_hB), with
    A_hBC = softmax over B of beta K_hB . Q_hC."""
    g = np.asarray(g, np.float64)
    beta = 1.0 / np.sqrt(block.key_weights.shape[1])
    grad = np.zeros_like(g)
    for wk, wq in zip(np.asarray(block.key_weights, np.float64), np.asarray(block.query_weights, np.float64)):
        keys, queries = g @ wk.T, g @ wq.T
        scores = beta * keys @ queries.T  # [B, C]
        if exclude_self:
            np.fill_diagonal(scores, -np.inf)
        attn = np.exp(scores - scores.max(axis=0, keepdims=True))
        attn /= attn.sum(axis=0, keepdims=True)
        grad += (-attn @ queries) @ wk + (-attn.T @ keys) @ wq
    return grad


@pytest.mark.parametrize("exclude_self", [False, True])
def test_attention_gradient_matches_the_hand_derived_form(exclude_self):
    block = _block(6, exclude_self=exclude_self)
    g = block.layer_norm(_tokens(7))
    auto = jax.grad(block.attention_energy)(g)
    np.testing.assert_allclose(auto, _attention_grad_by_hand(block, g, exclude_self=exclude_self), rtol=1e-4, atol=1e-4)
    # including or excluding the self-pairs is a different energy
    other = _attention_grad_by_hand(block, g, exclude_self=not exclude_self)
    assert not np.allclose(auto, other, atol=1e-3)


def test_hopfield_energies_by_hand():
    g32 = _tokens(8)
    g = np.asarray(g32, np.float64)
    relu = _block(9)
    xi = np.asarray(relu.memories, np.float64)
    overlaps = g @ xi.T
    np.testing.assert_allclose(relu.hopfield_energy(g32), -0.5 * np.sum(np.maximum(overlaps, 0) ** 2), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(relu.hopfield_energy)(g32),
        -np.maximum(overlaps, 0) @ xi,
        rtol=1e-4,
        atol=1e-5,
    )
    soft = _block(9, hopfield="softmax", hopfield_beta=2.0)
    lse = np.log(np.exp(2.0 * overlaps).sum(1))
    np.testing.assert_allclose(soft.hopfield_energy(g32), -lse.sum() / 2.0, rtol=1e-5)


def test_jit_equals_eager_and_vmap_equals_a_loop():
    model = _model(10, steps=2)
    images = _images(11, 4)
    masks = jax.vmap(lambda k: random_mask(k, model.num_patches, 2))(jax.random.split(jax.random.key(12), 4))
    jitted = eqx.filter_jit(lambda mod, im, m: mod(im, m))
    batched = eqx.filter_jit(lambda mod, ims, ms: jax.vmap(mod)(ims, ms))(model, images, masks)
    rec, energies = model(images[0], masks[0])  # eager
    assert rec.shape == (64,) and energies.shape == (3,)
    rec_jit, energies_jit = jitted(model, images[0], masks[0])
    np.testing.assert_allclose(rec_jit, rec, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(energies_jit, energies, rtol=1e-5)
    for i in range(images.shape[0]):
        rec_i, energies_i = jitted(model, images[i], masks[i])
        np.testing.assert_allclose(batched[0][i], rec_i, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched[1][i], energies_i, rtol=1e-5)
    assert not np.allclose(batched[0][0], batched[0][1], atol=1e-3)  # the images differ
    # a (S, S) image is the same as its flat form
    np.testing.assert_allclose(jitted(model, images[0].reshape(8, 8), masks[0])[0], rec, atol=1e-5)


def test_masked_patches_are_replaced_by_the_mask_token():
    model = _model(13)
    image = _images(14, 1)[0]
    mask = jnp.array([True, False, False, True])
    tokens = model.tokens(image, mask)
    np.testing.assert_allclose(tokens[mask], model.mask_token[None, :] + model.positions[mask], atol=1e-6)
    patches = patchify(image, patch_size=4, image_size=8)
    embedded = patches @ model.embed.weight.T + model.embed.bias[None, :] + model.positions
    np.testing.assert_allclose(tokens[~mask], embedded[~mask], atol=1e-5)
    # what lies under the masked patches cannot reach the output; a visible patch does
    scrambled = unpatchify(jnp.where(mask[:, None], 5.0 * patches[::-1], patches), image_size=8)
    np.testing.assert_allclose(model(scrambled, mask)[0], model(image, mask)[0], atol=1e-6)
    assert not np.allclose(model(scrambled, ~mask)[0], model(image, ~mask)[0], atol=1e-3)


def test_patchify_layout_and_round_trip():
    image = jnp.arange(64.0)
    patches = patchify(image, patch_size=4, image_size=8)
    assert patches.shape == (4, 16)
    grid = np.arange(64.0).reshape(8, 8)
    np.testing.assert_array_equal(patches[0], grid[:4, :4].ravel())
    np.testing.assert_array_equal(patches[1], grid[:4, 4:].ravel())  # row-major over patches
    np.testing.assert_array_equal(patches[2], grid[4:, :4].ravel())
    np.testing.assert_array_equal(unpatchify(patches, image_size=8), image)
    mask = random_mask(jax.random.key(0), 16, 5)
    assert mask.dtype == jnp.bool_ and int(mask.sum()) == 5


def test_masked_patch_mse_counts_only_masked_patches():
    image = jnp.zeros((2, 64))
    patches = jnp.arange(4.0)[:, None] * jnp.ones((4, 16))  # patch t has every pixel equal to t
    recon = jnp.stack([unpatchify(patches, image_size=8)] * 2)
    mask = jnp.array([[True, False, True, False], [False, False, False, True]])
    expected = (0.0**2 + 2.0**2 + 3.0**2) / 3
    np.testing.assert_allclose(masked_patch_mse(recon, image, mask, patch_size=4), expected, rtol=1e-6)


def test_a_few_training_steps_reduce_the_masked_loss():
    """The model is trainable end to end (gradients through the lax.scan of jax.grad steps)."""
    model = _model(15, steps=1)
    images = jnp.tile(_images(16, 4), (2, 1))
    masks = jax.vmap(lambda k: random_mask(k, 4, 2))(jax.random.split(jax.random.key(17), 8))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    def loss_fn(model):
        return masked_patch_mse(jax.vmap(model)(images, masks)[0], images, masks, patch_size=4)

    @eqx.filter_jit
    def step(model, state):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = optimizer.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    losses = []
    for _ in range(20):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by `patch_size`"):
        MaskedPatchET(image_size=28, patch_size=5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="divisible"):
        patchify(jnp.zeros(784), patch_size=6)
    model = _model(0)
    mask = jnp.zeros((4,), bool)
    with pytest.raises(ValueError, match=r"`image` must have shape \(64,\) or \(8, 8\)"):
        model(jnp.zeros(63), mask)
    with pytest.raises(ValueError, match="`image` must have shape"):
        model(jnp.zeros((8, 7)), mask)
    with pytest.raises((ValueError, TypeError), match="`image` must have 1 or 2 dimension|parameter 'image'"):
        model(jnp.zeros((1, 8, 8)), mask)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        model(jnp.zeros(64), jnp.zeros((5,), bool))
    with pytest.raises(TypeError, match="mask"):  # jaxtyping's check when it runs, else ours
        model(jnp.zeros(64), jnp.zeros((4,)))
    block = _block(0)
    with pytest.raises(ValueError, match=r"`x` must have shape \(T, 8\)"):
        block(jnp.zeros((5, 7)))
    with pytest.raises((ValueError, TypeError), match="`x` must have 2|parameter 'x'"):
        block(jnp.zeros(8))
    with pytest.raises(ValueError, match="`step_size`"):
        block(jnp.zeros((5, 8)), step_size=0.0)
    with pytest.raises(ValueError, match="`x` contains NaN"):
        block(jnp.full((5, 8), jnp.nan))
    with pytest.raises(ValueError, match="`hopfield` must be one of"):
        _block(0, hopfield="tanh")
    with pytest.raises(ValueError, match="`exclude_self=True` needs at least 2 tokens"):
        _block(0, exclude_self=True)(jnp.ones((1, 8)))
    with pytest.raises(ValueError, match="`num_masked`"):
        random_mask(jax.random.key(0), 4, 5)
