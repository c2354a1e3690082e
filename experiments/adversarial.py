"""Adversarial robustness of DenseAM classifiers across n (Krotov & Hopfield 2017; arXiv:1701.00939).

    python experiments/adversarial.py --models results/mnist_paper/compressed --degrees 2,3,8,20,30

Loads the trained classifiers `<models>/mnist_n<n>.eqx` (or `.ckpt`; from
`experiments/mnist_dam.py` or `jamem mnist`), trains the ReLU MLP baseline, then:
- the paper's attack (arXiv:1701.00939, untargeted, until the label flips) on test images each
  generating model classifies correctly; the transfer matrix of misclassification rates (the
  talk slides) as JSON and heatmap;
- PGD robust accuracy against epsilon for every model (on the margin loss: PGD on the training
  loss is partly gradient-masked at high n, see `experiments/gradient_masking.py`);
- original / adversarial / difference images, and rubbish images descended from noise.
Writes `<out>/adversarial.json` and PNGs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import RESULTS, experiment_parser

from jamem import ReLUMLP, data, plots, train
from jamem import adversarial as adv
from jamem.classifier.mnist import attack_target
from jamem.tooling.provenance import save_json


def dense_am_attack_target(path: Path):
    scores, loss, _, history = attack_target(path)

    def confidence(s):  # the output neurons c = tanh(scores)
        return jnp.tanh(s)

    return scores, loss, history.rows[-1]["test_error"], confidence


def cross_entropy(out, label):
    return optax.softmax_cross_entropy_with_integer_labels(out, label)


def target_parser(doc: str) -> argparse.ArgumentParser:
    """The experiment options (`--quick`, `--out`, `--seed`) and those of `load_targets` (models,
    degrees, MLP baseline, data); paths default to the repository's, from any folder."""
    parser = experiment_parser(doc, out=RESULTS / "adversarial")
    parser.add_argument("--models", default=str(RESULTS / "mnist_paper" / "compressed"))
    parser.add_argument("--degrees", default="2,3,8,20,30")
    parser.add_argument("--mlp-hidden", type=int, default=400)
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--data-dir", default=None)
    return parser


def load_targets(args: argparse.Namespace) -> tuple[dict, tuple]:
    """(targets, MNIST test split). targets maps a name to (outputs_fn, loss_fn, clean test error,
    confidence_fn) for each trained DenseAM `<models>/mnist_n<n>.ckpt` found, plus a ReLU MLP
    trained here (fixed seeds); `args` holds the options of `add_target_arguments`."""
    train_data = data.load("mnist", split="train", data_dir=args.data_dir)
    test_data = data.load("mnist", split="test", data_dir=args.data_dir)
    targets = {}
    for degree in [int(d) for d in args.degrees.split(",")]:
        # the committed final model (.eqx) if there is one, else the training checkpoint
        candidates = [Path(args.models) / f"mnist_n{degree}.{suffix}" for suffix in ("eqx", "ckpt")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is not None:
            targets[f"n={degree}"] = dense_am_attack_target(path)
        else:
            print(f"skipping n = {degree}: neither {candidates[0]} nor {candidates[1]}")
    mlp, _ = train.fit_softmax(
        ReLUMLP(num_hidden=args.mlp_hidden, key=jax.random.key(0)),
        train_data,
        epochs=args.mlp_epochs,
        optimizer=optax.adam(1e-3),
        key=jax.random.key(1),
    )
    mlp_error = float(jnp.mean(jnp.argmax(mlp.batch_logits(jnp.asarray(test_data[0])), -1) != test_data[1]))
    targets["ReLU MLP"] = (mlp.batch_logits, cross_entropy, mlp_error, jax.nn.softmax)
    return targets, test_data


def main(argv=None):
    parser = target_parser(__doc__)
    parser.add_argument("--images", type=int, default=200, help="test images attacked per generating model")
    parser.add_argument("--step-size", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rubbish-steps", type=int, default=300)
    parser.add_argument("--rubbish-per-class", type=int, default=5)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.steps, args.rubbish_steps, args.rubbish_per_class, args.mlp_epochs = 8, 50, 20, 1, 1
    out = Path(args.out)
    targets, (test_images, test_labels) = load_targets(args)
    predictors = {name: jax.jit(lambda x, f=f: jnp.argmax(f(x), -1)) for name, (f, *_) in targets.items()}

    pool = jnp.asarray(test_images[: 4 * args.images]), jnp.asarray(test_labels[: 4 * args.images])
    made, attack_stats, examples = {}, {}, {}
    for name, (outputs, loss, *_) in targets.items():
        correct = np.flatnonzero(np.asarray(predictors[name](pool[0]) == pool[1]))[: args.images]
        x, y = pool[0][correct], pool[1][correct]
        result = adv.descend(outputs, x, y, loss_fn=loss, step_size=args.step_size, steps=args.steps)
        ok = np.asarray(result.success)
        made[name] = (result.images[ok], y[ok])
        change = np.abs(np.asarray(result.images - x))[ok]
        attack_stats[name] = {
            "attacked": int(len(correct)),
            "flipped": float(ok.mean()),
            "mean_steps_when_flipped": float(np.asarray(result.steps)[ok].mean()) if ok.any() else None,
            "mean_linf_change": float(change.max(axis=1).mean()) if ok.any() else None,
            "mean_l2_change": float(np.sqrt((change**2).sum(1)).mean()) if ok.any() else None,
        }
        examples[name] = (
            np.asarray(x[ok][:4]),
            np.asarray(result.images[ok][:4]),
            predictors[name](result.images[ok][:4]),
        )
        print(name, attack_stats[name], flush=True)
    matrix = adv.transfer_matrix(made, predictors)

    epsilons = [0.0, 0.05, 0.1, 0.2, 0.3]
    x, y = pool[0][: args.images], pool[1][: args.images]
    robust = {
        name: [
            float(
                jnp.mean(
                    predictors[name](
                        adv.pgd(f, x, y, loss_fn=adv.margin_loss, epsilon=e, steps=40, key=jax.random.key(3))
                    )
                    == y
                )
            )
            for e in epsilons
        ]
        for name, (f, loss, *_) in targets.items()
    }

    rubbish = {}
    for name, (f, loss, *_) in targets.items():
        result, goal = adv.rubbish_images(
            f, loss_fn=loss, num_classes=10, per_class=args.rubbish_per_class, steps=args.rubbish_steps,
            key=jax.random.key(4),
        )  # fmt: skip
        outs = f(result.images)
        confidence = targets[name][3](outs)[jnp.arange(goal.size), goal]
        rubbish[name] = {
            "reached_target": float(jnp.mean(result.success)),
            # DenseAM: the target's output neuron c in (-1, 1); MLP: its softmax probability
            "mean_target_confidence": float(jnp.mean(confidence)),
            "confident_fraction": float(jnp.mean((confidence > 0.9) & result.success)),
            "images": np.asarray(result.images),
        }

    save_json(
        out / "adversarial.json",
        {
            "paper_B3_slides": {"made on n=2": {"n=2": 1.0, "n=8": 0.32}, "made on n=8": {"n=2": 0.57, "n=8": 1.0}},
            "clean_test_error": {name: t[2] for name, t in targets.items()},
            "attack": attack_stats,
            "transfer_matrix": matrix,
            "pgd_epsilons": epsilons,
            # PGD on the training loss is partly gradient-masked at high n (gradient_masking.py)
            "pgd_loss": "margin max_{j != y} o_j - o_y, 40 steps",
            "pgd_robust_accuracy": robust,
            "rubbish": {k: {kk: vv for kk, vv in v.items() if kk != "images"} for k, v in rubbish.items()},
            "settings": vars(args),
        },
    )
    plots.plot_transfer_matrix(matrix, out / "transfer_matrix.png")
    plots.plot_robust_accuracy(epsilons, robust, out / "pgd_robust_accuracy.png")
    plots.plot_adversarial_examples(examples, out / "examples.png")
    plots.plot_rubbish_images(
        {k: v["images"] for k, v in rubbish.items()}, out / "rubbish.png", per_class=args.rubbish_per_class
    )


if __name__ == "__main__":
    main()
