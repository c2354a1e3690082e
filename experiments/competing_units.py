"""Unsupervised learning by competing hidden units (Krotov & Hopfield 2019, arXiv:1806.10181) on MNIST.

K hidden units learn from the 60k training images without labels under the local competing rule
(`jamem.classifier.competing`: the strongest unit moves toward the image, the k-th strongest
away from it, each step scaled so its largest entry is the learning rate, which decays linearly
to 0). Then a linear top layer on the frozen features (relu(I) / max relu(I))^n is trained with
softmax cross-entropy and Adam, and the test error at its last epoch is reported, next to the same
top layer on the untrained (random) units. The paper: p = 3, k = 7, Delta = 0.4, K = 2000,
n = 4.5, about 1.5% test error (its top layer: tanh outputs and a power loss).

Writes results/competing_units.json (settings, per-epoch history of both stages, errors),
results/competing_units.png (the first 100 units as 28x28 images, and the error curves) and the
resumable checkpoint of the unsupervised stage. Usage:

    python experiments/competing_units.py            # K = 2000, 200 + 100 epochs
    python experiments/competing_units.py --quick    # K = 50, 4000 images, 5 + 3 epochs, eps0 0.05: seconds
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import experiment_parser, result_stem

from jamem import train
from jamem.classifier import competing
from jamem.tooling import data
from jamem.tooling.plots import save_figure
from jamem.tooling.provenance import save_json


def main(argv=None):
    parser = experiment_parser(__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--power", type=float, default=3.0, help="p of the Lp metric")
    parser.add_argument("--rank", type=int, default=7, help="k: the k-th strongest unit is pushed away")
    parser.add_argument("--anti-hebbian", type=float, default=0.4, help="Delta")
    parser.add_argument("--epochs", type=int, default=200, help="unsupervised epochs")
    parser.add_argument("--learning-rate", type=float, default=0.02, help="eps0, decayed linearly to 0")
    parser.add_argument("--degree", type=float, default=4.5, help="n of the features relu(I)^n")
    parser.add_argument("--top-epochs", type=int, default=100)
    parser.add_argument("--top-learning-rate", type=float, default=3e-3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.units, args.epochs, args.top_epochs, args.learning_rate = 50, 5, 3, 0.05
    stem = result_stem(args, "competing_units")
    (x_train, y_train), (x_test, y_test) = (
        data.load("mnist", split=split, data_dir=args.data_dir) for split in ("train", "test")
    )
    x_train, x_test = (np.asarray(x_train) + 1) / 2, (np.asarray(x_test) + 1) / 2  # the paper's [0, 1] pixels
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:4000], y_train[:4000], x_test[:2000], y_test[:2000]
    key_units, key_rule, key_top, key_fit = jax.random.split(jax.random.key(args.seed), 4)
    untrained = competing.CompetingUnits(num_units=args.units, power=args.power, key=key_units)
    tic = time.time()
    learned, rule_history = competing.train_competing_units(
        untrained, x_train, epochs=args.epochs, learning_rate=args.learning_rate, rank=args.rank,
        anti_hebbian=args.anti_hebbian, key=key_rule, checkpoint_path=stem.with_suffix(".ckpt"),
        progress=not args.no_progress,
    )  # fmt: skip
    rule_seconds = time.time() - tic
    results = {}
    predict = jax.jit(lambda m, x: jnp.argmax(m.batch_logits(x), axis=-1))
    for name, units in (("learned", learned), ("untrained", untrained)):
        model = competing.PowerFeatureClassifier(units, degree=args.degree, key=key_top)
        tic = time.time()
        model, losses = train.fit_softmax(
            model, (x_train, y_train), epochs=args.top_epochs, optimizer=optax.adam(args.top_learning_rate),
            key=key_fit, progress=not args.no_progress,
        )  # fmt: skip
        test_predictions = np.concatenate([predict(model, x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
        train_predictions = np.concatenate(
            [predict(model, x_train[i : i + 1000]) for i in range(0, len(x_train), 1000)]
        )
        results[name] = dict(
            final_test_error=float(np.mean(test_predictions != y_test)),
            final_train_error=float(np.mean(train_predictions != y_train)),
            top_layer_losses=losses,
            top_layer_seconds=time.time() - tic,
        )
        print(f"{name} units: test error {100 * results[name]['final_test_error']:.2f}%", flush=True)
    record = dict(
        settings=dict(
            units=args.units, power=args.power, rank=args.rank, anti_hebbian=args.anti_hebbian, epochs=args.epochs,
            learning_rate=args.learning_rate, degree=args.degree, top_epochs=args.top_epochs,
            top_learning_rate=args.top_learning_rate, train_images=len(x_train), test_images=len(x_test),
            seed=args.seed,
        ),
        paper=dict(power=3, rank=7, anti_hebbian=0.4, units=2000, degree=4.5, test_error_about=0.015),
        rule_history=rule_history,
        rule_seconds=rule_seconds,
        units_within_1pct_of_unit_p_norm=float(jnp.mean(jnp.abs(learned.p_norms() - 1) < 0.01)),
        **results,
    )  # fmt: skip
    save_json(stem.with_suffix(".json"), record)
    _plot(learned, record, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')}")


def _plot(units, record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 5))
    grid = fig.add_gridspec(10, 20)
    weights = np.asarray(units.weights)[:100]
    for i, w in enumerate(weights):
        ax = fig.add_subplot(grid[i // 10, i % 10])
        scale = np.max(np.abs(w)) or 1.0
        ax.imshow(w.reshape(28, 28), cmap="bwr", vmin=-scale, vmax=scale)
        ax.axis("off")
    ax = fig.add_subplot(grid[1:9, 12:])
    for name in ("learned", "untrained"):
        ax.semilogy(
            record[name]["top_layer_losses"], label=f"{name} units: test {100 * record[name]['final_test_error']:.2f}%"
        )
    ax.set_xlabel("top-layer epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.legend()
    s = record["settings"]
    fig.suptitle(
        f"Competing hidden units: K = {s['units']}, p = {s['power']}, k = {s['rank']}, Delta = {s['anti_hebbian']}"
    )
    save_figure(fig, path)


if __name__ == "__main__":
    main()
