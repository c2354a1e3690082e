"""MNIST epoch time: jamem's training epoch against a faithful NumPy form of the original algorithm
(Krotov & Hopfield 2016, App. A: the minibatch tiled once per class, A8 note), in one run.

    python benchmarks/mnist_epoch.py                 # K = 2000, n = 3, minibatch 1000, 60k images
    python benchmarks/mnist_epoch.py --quick         # K = 400, 10k images

Both sides run the same update (A10 loss with m = 3, A11 momentum, per-memory max-normalisation,
clip) on the same data; before timing, their gradients are checked to agree. jamem's epoch is
timed after one compile epoch; each side runs `--repeats` epochs and the means are compared.
Writes results/bench_mnist_epoch.json.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jamem import data, train
from jamem.models import DenseAMClassifier
from jamem.optim import dense_am_optimizer
from jamem.provenance import save_json


def numpy_gradient(xi, images, labels, *, degree, temperature, power):
    """dC/dxi of the original code: V_alpha for every class built by tiling the batch C times."""
    batch, num_visible = images.shape
    num_classes = xi.shape[1] - num_visible
    u = np.concatenate([images, -np.ones((batch, num_classes), np.float32)], axis=1)
    tiled = np.tile(u, (num_classes, 1))  # (C B, D): row alpha * B + b is V_alpha of image b
    for alpha in range(num_classes):
        tiled[alpha * batch : (alpha + 1) * batch, num_visible + alpha] = 1.0
    beta = temperature**-degree
    on, off = tiled @ xi.T, u @ xi.T  # (C B, K), (B, K)
    f_on, f_off = np.maximum(on, 0), np.maximum(off, 0)
    scores = (f_on**degree).sum(1).reshape(num_classes, batch).T - (f_off**degree).sum(1)[:, None]
    c = np.tanh(beta * scores)
    targets = 2 * np.eye(num_classes, dtype=np.float32)[labels] - 1
    d_scores = 2 * power * (c - targets) ** (2 * power - 1) * (1 - c**2) * beta  # (B, C)
    d_on = d_scores.T.reshape(-1, 1) * degree * f_on ** (degree - 1)  # (C B, K)
    d_off = d_scores.sum(1, keepdims=True) * degree * f_off ** (degree - 1)
    return d_on.T @ tiled - d_off.T @ u


def numpy_epoch(xi, velocity, images, labels, order, *, degree, temperature, power, lr, momentum, batch_size):
    for start in range(0, order.size - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        grad = numpy_gradient(xi, images[idx], labels[idx], degree=degree, temperature=temperature, power=power)
        velocity = momentum * velocity - grad
        xi = np.clip(xi + lr * velocity / np.abs(velocity).max(axis=1, keepdims=True), -1, 1)
    return xi, velocity


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/bench_mnist_epoch.json")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed on each side (means are compared)")
    args = parser.parse_args(argv)
    k, count = (400, 10000) if args.quick else (2000, 60000)
    degree, power, temperature, lr, momentum, batch = 3, 3, 300.0, 0.04, 0.9, 1000
    images, labels = data.load("mnist", data_dir=args.data_dir)
    images, labels = images[:count], labels[:count]
    model = DenseAMClassifier(num_memories=k, degree=degree, key=jax.random.key(0))
    xi = np.asarray(model.memories)

    # the two gradients agree (same loss, same algorithm)
    params, static = eqx.partition(model, eqx.is_array)
    check = slice(0, 200)
    ours = jax.grad(
        lambda p: train.batch_loss(
            eqx.combine(p, static), images[check], labels[check], temperature=temperature, loss_power=power
        )[0]
    )(params).memories
    theirs = numpy_gradient(xi, images[check], labels[check], degree=degree, temperature=temperature, power=power)
    gradient_error = float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))
    assert gradient_error < 1e-3, gradient_error

    optimizer = dense_am_optimizer(lr, momentum=momentum)
    kwargs = dict(temperature=jnp.float32(temperature), optimizer=optimizer, batch_size=batch, loss_power=power)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    opt_state = optimizer.init(params)
    tic = time.perf_counter()
    jax.block_until_ready(train.train_epoch(model, opt_state, x, y, key=jax.random.key(1), **kwargs))
    compile_and_first = time.perf_counter() - tic
    jamem_times = []
    for repeat in range(args.repeats):
        tic = time.perf_counter()
        jax.block_until_ready(train.train_epoch(model, opt_state, x, y, key=jax.random.key(2 + repeat), **kwargs))
        jamem_times.append(time.perf_counter() - tic)
    jamem_seconds = float(np.mean(jamem_times))
    print(f"jamem: {jamem_times} s per epoch (first epoch with compile {compile_and_first:.2f} s)", flush=True)

    numpy_times = []
    for repeat in range(args.repeats):
        order = np.random.default_rng(repeat).permutation(count)
        tic = time.perf_counter()
        numpy_epoch(
            xi.copy(), np.zeros_like(xi), images, labels, order, degree=degree, temperature=temperature, power=power,
            lr=lr, momentum=momentum, batch_size=batch,
        )  # fmt: skip
        numpy_times.append(time.perf_counter() - tic)
    numpy_seconds = float(np.mean(numpy_times))
    ratio = numpy_seconds / jamem_seconds
    print(f"numpy (batch tiled per class): {numpy_times} s per epoch; ratio of means {ratio:.1f}x")
    save_json(
        args.out,
        {
            "setting": dict(num_memories=k, degree=degree, images=count, minibatch=batch, loss_power=power),
            "relative_gradient_difference": gradient_error,
            "repeats": args.repeats,
            "jamem_seconds_per_epoch": jamem_seconds,
            "jamem_epoch_seconds_each": jamem_times,
            "jamem_first_epoch_with_compile_seconds": compile_and_first,
            "numpy_seconds_per_epoch": numpy_seconds,
            "numpy_epoch_seconds_each": numpy_times,
            "speedup": numpy_seconds / jamem_seconds,
            "speedup_range": [min(numpy_times) / max(jamem_times), max(numpy_times) / min(jamem_times)],
        },
    )


if __name__ == "__main__":
    main()
