"""MNIST epoch time: jamem's training epoch against a faithful NumPy form of the original algorithm
(Krotov & Hopfield 2016, arXiv:1606.01164, App. A: the minibatch tiled once per class), in one run.

    python benchmarks/mnist_epoch.py                 # K = 2000, n = 3, minibatch 1000, 60k images
    python benchmarks/mnist_epoch.py --quick         # K = 400, 10k images

Both sides run the same update (the power loss with m = 3, momentum, per-memory max-normalisation,
clip) on the same data; before timing, their gradients are checked to agree. jamem's epoch is
also set against its floor, the bare matmuls of the epoch's shapes timed in the same run, with a
breakdown of the rest (`epoch_breakdown`, also used by benchmarks/accelerator.py). Each side runs
`--repeats` epochs after a warm-up and the minimum is reported. On CPU the class gaps run in
jamem's compiled kernel (jamem/classifier/native.py); the epoch is also timed with XLA's fusion of
them instead (`epoch_with_xla_class_gaps`). Writes results/bench_mnist_epoch.json.
"""

from __future__ import annotations

import argparse
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jamem import DenseAMClassifier, data, train
from jamem.classifier import native
from jamem.classifier.model import rectified_power_gaps
from jamem.classifier.optim import dense_am_optimizer
from jamem.tooling.provenance import save_json


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


def best_seconds(fn, *args, repeats: int) -> tuple[float, list[float]]:
    """(min, all) wall seconds of `repeats` calls after one warm-up call (which compiles)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return min(times), times


def epoch_breakdown(images, labels, test_images, *, num_memories: int, repeats: int, degree: int = 3) -> dict:
    """Where an epoch's time goes (min of `repeats` after a warm-up, same shapes as training).

    Each stage runs as one jit-compiled scan over the epoch's 60 minibatches, so launch and loop
    costs count as in the epoch: the two bare matmuls per minibatch (the floor: forward
    (B, N) x (N, K) and the memories' gradient (K, B) x (B, N)); the forward pass (matmul and class
    gaps); forward and backward; and the whole epoch (with the shuffle, the minibatch gather and
    the optimiser of arXiv:1606.01164, App. A); plus one evaluation of the test set, which `fit` runs after every epoch.
    """
    batch, temperature = 1000, jnp.float32(300.0 if degree < 10 else 600.0)
    model = DenseAMClassifier(num_memories=num_memories, degree=degree, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    optimizer = dense_am_optimizer(0.04, momentum=0.9)
    opt_state = optimizer.init(params)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    steps = x.shape[0] // batch
    xs, ys = x[: steps * batch].reshape(steps, batch, -1), y[: steps * batch].reshape(steps, batch)
    visible = model.memories[:, : x.shape[1]]

    def over_minibatches(body):
        return jax.jit(lambda *a: jax.lax.scan(lambda acc, xy: (acc + body(*a, *xy), None), 0.0, (xs, ys))[0])

    matmuls = over_minibatches(lambda v, xb, yb: jnp.sum((xb @ v.T).T @ xb))
    forward = over_minibatches(
        lambda p, xb, yb: jnp.sum(eqx.combine(p, static).batch_scores(xb, temperature=temperature))
    )

    def loss(p, xb, yb):
        return train.batch_loss(eqx.combine(p, static), xb, yb, temperature=temperature, loss_power=3)[0]

    backward = over_minibatches(lambda p, xb, yb: jnp.sum(jax.grad(loss)(p, xb, yb).memories))

    # the class-gap kernels alone, on the inputs they get in training (no matmul in the loop)
    base_in, shift_in = model.gap_inputs(xs[0], temperature=temperature)
    gaps = functools.partial(rectified_power_gaps, degree=degree)
    # `acc * 0` ties each pass to the last, so XLA cannot hoist the loop-invariant kernel out of the loop
    repeat = lambda body: jax.jit(
        lambda b, s: jax.lax.fori_loop(0, steps, lambda i, acc: acc + body(b + acc * 0.0, s), 0.0)
    )
    gaps_forward = repeat(lambda b, s: jnp.sum(gaps(b, s)))
    gaps_backward = repeat(lambda b, s: _sum_tree(jax.grad(lambda b, s: jnp.sum(jnp.tanh(gaps(b, s))), (0, 1))(b, s)))
    kwargs = dict(temperature=temperature, optimizer=optimizer, batch_size=batch, loss_power=3)
    epoch = lambda: train.train_epoch(model, opt_state, x, y, key=jax.random.key(1), **kwargs)
    evaluate = lambda: train.predict(model, jnp.asarray(test_images), temperature=temperature)

    seconds = {}
    seconds["matmul_floor"], _ = best_seconds(matmuls, visible, repeats=repeats)
    seconds["forward"], _ = best_seconds(forward, params, repeats=repeats)
    seconds["forward_and_backward"], _ = best_seconds(backward, params, repeats=repeats)
    seconds["epoch"], epoch_each = best_seconds(epoch, repeats=repeats)
    seconds["test_evaluation"], _ = best_seconds(evaluate, repeats=repeats)
    seconds["class_gaps_forward_alone"], _ = best_seconds(gaps_forward, base_in, shift_in, repeats=repeats)
    seconds["class_gaps_forward_and_backward_alone"], _ = best_seconds(
        gaps_backward, base_in, shift_in, repeats=repeats
    )
    kernel = jax.default_backend() == "cpu" and native.native_kernels_enabled()
    if kernel:  # the same epoch with XLA's fusion of the class gaps, for the kernel's gain
        native.set_native_kernels(False)
        try:
            seconds["epoch_with_xla_class_gaps"], _ = best_seconds(epoch, repeats=repeats)
            seconds["class_gaps_forward_and_backward_alone_xla"], _ = best_seconds(
                repeat(lambda b, s: _sum_tree(jax.grad(lambda b, s: jnp.sum(jnp.tanh(gaps(b, s))), (0, 1))(b, s))),
                base_in,
                shift_in,
                repeats=repeats,
            )
        finally:
            native.set_native_kernels(True)
    flops = steps * 2 * (2 * batch * x.shape[1] * num_memories)
    half = seconds["matmul_floor"] / 2  # the two matmuls have the same flop count
    return {
        "setting": dict(num_memories=num_memories, degree=degree, images=steps * batch, minibatch=batch),
        "class_gaps": "compiled CPU kernel (jamem/classifier/class_gaps.cc)" if kernel else "XLA fusion",
        "seconds": seconds,
        "epoch_seconds_each": epoch_each,
        "epoch_over_matmul_floor": seconds["epoch"] / seconds["matmul_floor"],
        "epoch_with_xla_class_gaps_over_matmul_floor": (
            seconds["epoch_with_xla_class_gaps"] / seconds["matmul_floor"] if kernel else None
        ),
        "matmul_gflops_per_second": flops / seconds["matmul_floor"] / 1e9,
        "breakdown_seconds": {
            "matmuls": seconds["matmul_floor"],
            "class_gaps_forward": seconds["forward"] - half,
            "class_gaps_backward": seconds["forward_and_backward"] - seconds["forward"] - half,
            "optimizer_shuffle_gather": seconds["epoch"] - seconds["forward_and_backward"],
            "test_evaluation_per_epoch_in_fit": seconds["test_evaluation"],
        },
        # the epoch's cost if the class-gap kernels overlapped with nothing (the epoch itself does a
        # little better); 1.3x would need the kernels at about 0.3 of the matmuls
        "matmuls_plus_gap_kernels_alone_over_floor": (
            seconds["matmul_floor"] + seconds["class_gaps_forward_and_backward_alone"]
        )
        / seconds["matmul_floor"],
    }


def _sum_tree(tree):
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/bench_mnist_epoch.json")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed on each side")
    parser.add_argument("--degrees", default="3,30", help="jamem breakdown for these n (the NumPy side runs n = 3)")
    args = parser.parse_args(argv)
    k, count = (400, 10000) if args.quick else (2000, 60000)
    degree, power, temperature, lr, momentum, batch = 3, 3, 300.0, 0.04, 0.9, 1000
    images, labels = data.load("mnist", data_dir=args.data_dir)
    test_images, _ = data.load("mnist", split="test", data_dir=args.data_dir)
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

    breakdowns = {}
    for n in [int(d) for d in args.degrees.split(",")]:
        breakdowns[f"n={n}"] = epoch_breakdown(
            images, labels, test_images, num_memories=k, repeats=args.repeats, degree=n
        )
        print(f"n = {n}: {breakdowns[f'n={n}']}", flush=True)
    jamem_seconds = breakdowns["n=3"]["seconds"]["epoch"] if "n=3" in breakdowns else None

    numpy_times = []
    for repeat in range(args.repeats):
        order = np.random.default_rng(repeat).permutation(count)
        tic = time.perf_counter()
        numpy_epoch(
            xi.copy(), np.zeros_like(xi), images, labels, order, degree=degree, temperature=temperature, power=power,
            lr=lr, momentum=momentum, batch_size=batch,
        )  # fmt: skip
        numpy_times.append(time.perf_counter() - tic)
    numpy_seconds = float(np.min(numpy_times))
    print(f"numpy (batch tiled per class): {numpy_times} s per epoch")
    save_json(
        args.out,
        {
            "setting": dict(num_memories=k, images=count, minibatch=batch, loss_power=power),
            "relative_gradient_difference": gradient_error,
            "repeats": args.repeats,
            "timing": "min of the repeats after a warm-up, each stage a jit-compiled scan over the minibatches",
            "jamem": breakdowns,
            "numpy_seconds_per_epoch": numpy_seconds,
            "numpy_epoch_seconds_each": numpy_times,
            "speedup_over_numpy_n3": None if jamem_seconds is None else numpy_seconds / jamem_seconds,
        },
    )


if __name__ == "__main__":
    main()
