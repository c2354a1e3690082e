"""One attack's cost on the K = 2000 MNIST models, with jamem's CPU class-gap kernel and with XLA's
fusion of the class gaps, in one run.

The attacks of `jamem.classifier.adversarial` (arXiv:1701.00939) take per-image input gradients
vmapped over the images. Under `jax.vmap` the kernel's batching rule hands it every image's row in
one call (jamem/classifier/model.py, `_native_kernels`); this times projected gradient descent
(`adversarial.pgd`, margin loss, as experiments/adversarial.py runs it) on `--images` test images
with both forms of the class gaps, and checks that both give the same adversarial images.

    python benchmarks/attack_step.py --data-dir ../shared/data
    python benchmarks/attack_step.py --quick      # 20 images, 2 steps, n = 3: a smoke test

Writes results/bench_attack_step.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
from mnist_epoch import best_seconds  # this folder is on sys.path when run as a script

from jamem import data
from jamem.classifier import adversarial, native
from jamem.classifier.mnist import attack_target
from jamem.tooling.provenance import save_json

MODELS = Path(__file__).resolve().parents[1] / "results" / "mnist_paper" / "compressed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default=str(MODELS))
    parser.add_argument("--degrees", default=None, help="default 3,30 (--quick: 3)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20, help="PGD steps per attack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench_attack_step.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.steps, args.repeats = 20, 2, 1
    args.degrees = args.degrees or ("3" if args.quick else "3,30")
    kernel = native.native_kernels_enabled()
    images, labels = data.load("mnist", split="test", data_dir=args.data_dir)
    images, labels = jnp.asarray(images[: args.images]), jnp.asarray(labels[: args.images])

    rows = {}
    for degree in [int(d) for d in args.degrees.split(",")]:
        scores, _, _, _ = attack_target(Path(args.models) / f"mnist_n{degree}.eqx")

        def attack(scores=scores):
            return adversarial.pgd(
                scores, images, labels, loss_fn=adversarial.margin_loss, epsilon=0.1, steps=args.steps,
                key=jax.random.key(0),
            )  # fmt: skip

        seconds, differing = {"kernel": None}, None
        try:
            if kernel:
                with_kernel = attack()
                seconds["kernel"], _ = best_seconds(attack, repeats=args.repeats)
            native.set_native_kernels(False)
            with_xla = attack()
            seconds["xla_fusion"], _ = best_seconds(attack, repeats=args.repeats)
        finally:
            native.set_native_kernels(kernel)
        if kernel:  # a sign step can flip where a gradient entry is ~0 and the two forms round apart
            differing = float(jnp.mean(jnp.any(jnp.abs(with_kernel - with_xla) > 1e-4, axis=-1)))
        rows[f"n={degree}"] = {
            "seconds_per_attack": seconds,
            "kernel_over_xla": seconds["kernel"] / seconds["xla_fusion"] if kernel else None,
            "share_of_adversarial_images_that_differ": differing,
        }
        print(f"n = {degree}: {rows[f'n={degree}']}", flush=True)
    save_json(
        args.out,
        {
            "setting": dict(images=args.images, pgd_steps=args.steps, epsilon=0.1, loss="margin", models=args.models),
            "class_gap_kernel": "built" if kernel else "not available here: XLA's fusion only",
            "timing": f"min of {args.repeats} attacks after a warm-up, each a jit-compiled scan over the steps",
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
