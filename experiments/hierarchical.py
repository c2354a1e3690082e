"""Pattern completion of masked MNIST digits with a hierarchical associative memory
(Krotov 2021, arXiv:2107.06446; `jamem.hierarchical`).

Network (default `--arch conv`): visible pixels (784, identity Lagrangian, so g = pixel value)
-conv 5x5 stride 2-> 16 x 12 x 12 feature maps (tanh Lagrangian) -dense-> 100 hidden units
(softmax Lagrangian), one energy for the whole network; `--arch dense` replaces the convolution by
a dense layer of 256 tanh units. The upper half of each digit is clamped, the lower half starts at
0 and the network settles by explicit Euler on the energy dynamics (`hierarchical.settle`). The
synapses and biases are trained with Adam by backpropagation through the unrolled settling, the
loss being the squared error of the completed (lower-half) pixels on training digits.

Measured on held-out test digits: the masked-pixel MSE of the completion against the mean
training image's lower half (a baseline that ignores the visible half), and whether the energy is
non-increasing along each test trajectory. Writes results/hierarchical_completion.json and
results/hierarchical_completion.png (original / masked / completed). Usage:

    python experiments/hierarchical.py                 # about 9 minutes on 2 busy CPU cores
    python experiments/hierarchical.py --quick
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import experiment_parser, optax_step, result_stem

from jamem import data
from jamem import hierarchical as hm
from jamem import lagrangians as lg
from jamem.tooling.provenance import save_json


def build(arch: str, *, key, beta: float, visible_bias):
    k1, k2 = jax.random.split(key)
    if arch == "conv":
        first = hm.ConvSynapse.init((1, 28, 28), 16, 5, key=k1, stride=2, scale=0.05)
    else:
        first = hm.DenseSynapse.init(784, 256, key=k1, scale=0.02)
    second = hm.DenseSynapse.init(first.out_size, 100, key=k2, scale=0.05)
    layers = [
        hm.Layer(784, lg.Identity()),
        hm.Layer(first.out_size, lg.Tanh()),
        hm.Layer(100, lg.Softmax(beta)),
    ]
    biases = [visible_bias, jnp.zeros(first.out_size), jnp.zeros(100)]
    return hm.HierarchicalNetwork(layers, [first, second], biases=biases)


def complete(net, images, observed, *, dt, steps, save_every=None):
    """Clamp the observed pixels, start the rest (and every hidden layer) at 0, and settle."""

    def one(image):
        states0 = (jnp.where(observed, image, 0.0), *(jnp.zeros(n) for n in net.sizes[1:]))
        return hm.settle(net, states0, mask=(observed, None, None), dt=dt, steps=steps, save_every=save_every)

    return jax.vmap(one)(images)


def main(argv=None):
    p = experiment_parser(__doc__)
    p.add_argument("--arch", choices=("conv", "dense"), default="conv")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=16, help="Euler steps of the settling")
    p.add_argument("--dt", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature of the top softmax layer")
    p.add_argument(
        "--time-budget", type=float, default=420.0, help="no new epoch once this many seconds of training have passed"
    )
    p.add_argument("--data-dir", default=None, help="folder with mnist/ IDX files (default JAMEM_DATA_DIR)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs = 1000, 200, 1

    (train_x, _), (test_x, _) = (data.load("mnist", split=s, data_dir=args.data_dir) for s in ("train", "test"))
    train_x = jnp.asarray(train_x[: args.train_size])
    test_x = jnp.asarray(test_x[: args.test_size])
    observed = jnp.arange(784) < 14 * 28  # the upper half is seen, the lower half is hidden
    hidden = ~observed

    mean_image = jnp.mean(train_x, axis=0)
    # the visible bias starts at the mean image: the untrained network completes with it
    net = build(args.arch, key=jax.random.key(args.seed), beta=args.beta, visible_bias=mean_image)
    params, static = eqx.partition(net, eqx.is_array)
    optimiser = optax.adam(args.learning_rate)
    opt_state = optimiser.init(params)

    def masked_mse(params, images):
        out = complete(eqx.combine(params, static), images, observed, dt=args.dt, steps=args.steps)
        return jnp.mean((out.state[0][:, hidden] - images[:, hidden]) ** 2)

    train_step = optax_step(masked_mse, optimiser)

    evaluate = jax.jit(masked_mse)
    baseline = float(jnp.mean((test_x[:, hidden] - mean_image[hidden]) ** 2))
    history = [dict(epoch=0, test_mse=float(evaluate(params, test_x)))]
    print(f"mean-image baseline test MSE {baseline:.4f}; untrained network {history[0]['test_mse']:.4f}", flush=True)

    rng = np.random.default_rng(args.seed)
    start = time.time()
    num_batches = args.train_size // args.batch_size
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(args.train_size)
        losses = []
        for b in range(num_batches):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            params, opt_state, loss = train_step(params, opt_state, train_x[idx])
            losses.append(float(loss))
        test_mse = float(evaluate(params, test_x))
        history.append(dict(epoch=epoch, train_mse=float(np.mean(losses)), test_mse=test_mse))
        elapsed = time.time() - start
        print(f"epoch {epoch}: train {np.mean(losses):.4f} test {test_mse:.4f} ({elapsed:.0f} s)", flush=True)
        if elapsed > args.time_budget:
            print("time budget reached", flush=True)
            break
    train_seconds = time.time() - start

    net = eqx.combine(params, static)
    out = jax.jit(lambda x: complete(net, x, observed, dt=args.dt, steps=args.steps, save_every=1))(test_x)
    completed = np.asarray(out.state[0])
    errors = (completed[:, np.asarray(hidden)] - np.asarray(test_x)[:, np.asarray(hidden)]) ** 2
    energies = np.asarray(out.trajectory_energy, np.float64)
    rises = np.diff(energies, axis=1)
    tolerance = 1e-5 * np.abs(energies).max(axis=1, keepdims=True)
    monotone = np.all(rises <= tolerance, axis=1)
    clipped = np.clip(completed, -1.0, 1.0)
    clipped_mse = float(np.mean((clipped[:, np.asarray(hidden)] - np.asarray(test_x)[:, np.asarray(hidden)]) ** 2))
    result = dict(
        config=vars(args),
        architecture=dict(
            layers=[dict(size=layer.size, lagrangian=type(layer.lagrangian).__name__) for layer in net.layers],
            synapses=[type(s).__name__ for s in net.synapses],
        ),
        masked_pixels="lower half (392 pixels) hidden, upper half clamped",
        test_masked_mse=float(errors.mean()),
        test_masked_mse_clipped=clipped_mse,
        test_masked_mse_std_over_images=float(errors.mean(axis=1).std()),
        mean_image_baseline_mse=baseline,
        improvement_over_baseline=1.0 - float(errors.mean()) / baseline,
        fraction_of_images_beating_baseline=float(
            np.mean(
                errors.mean(axis=1)
                < ((np.asarray(test_x) - np.asarray(mean_image))[:, np.asarray(hidden)] ** 2).mean(axis=1)
            )
        ),
        energy_non_increasing_fraction=float(monotone.mean()),
        largest_energy_rise=float(rises.max()),
        mean_energy_start_end=[float(energies[:, 0].mean()), float(energies[:, -1].mean())],
        train_seconds=train_seconds,
        history=history,
    )
    stem = result_stem(args, "hierarchical_completion")
    save_json(stem.with_suffix(".json"), result, argv=argv)
    print(
        f"test masked MSE {result['test_masked_mse']:.4f} vs mean-image baseline {baseline:.4f}; "
        f"energy non-increasing on {100 * monotone.mean():.1f}% of test trajectories",
        flush=True,
    )
    plot(np.asarray(test_x[:10]), np.asarray(observed), clipped[:10], stem.with_suffix(".png"))


def plot(originals, observed, completed, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masked = np.where(observed, originals, -1.0)
    rows = [("original", originals), ("masked", masked), ("completed", completed)]
    fig, axes = plt.subplots(3, len(originals), figsize=(1.2 * len(originals), 4))
    for r, (name, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image.reshape(28, 28), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name)
    fig.suptitle("Hierarchical associative memory: completing the lower half of test digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
