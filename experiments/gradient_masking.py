"""Is PGD's robustness at high n real, or gradient masking? PGD against margin PGD and the
gradient-free SPSA.

    python experiments/gradient_masking.py --models results/mnist_k400 --degrees 2,3,8,20,30

At large n the DenseAM outputs saturate and input gradients can vanish, so a gradient attack may
report robustness that is not there (Athalye et al. 2018). SPSA (Uesato et al. 2018) estimates the
gradient from output values only. For every model (the DenseAMs of `experiments/mnist_dam.py` and
the ReLU MLP baseline, as in `experiments/adversarial.py`) and every epsilon, the robust accuracy
on the same correctly-classified test images under PGD on the training loss, PGD on the margin
loss (no saturating output in its gradient), SPSA, and all together (an image counts as robust
only if no attack breaks it). Writes
`<out>/gradient_masking.json` and a plot.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from adversarial import load_targets, target_parser  # experiments/adversarial.py

from jamem import adversarial as adv
from jamem import plots
from jamem.tooling.provenance import save_json


def main(argv=None):
    parser = target_parser(__doc__)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--epsilons", default="0.1,0.2,0.3")
    parser.add_argument("--pgd-steps", type=int, default=40)
    parser.add_argument("--spsa-steps", type=int, default=60)
    parser.add_argument("--spsa-samples", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epsilons, args.pgd_steps, args.spsa_steps, args.spsa_samples = 8, "0.3", 5, 5, 8
        args.mlp_epochs = 1
    out = Path(args.out)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    targets, test = load_targets(args)
    pool_x, pool_y = jnp.asarray(test[0][: 4 * args.images]), jnp.asarray(test[1][: 4 * args.images])
    table = {}
    for name, (outputs, loss, *_) in targets.items():
        predict = jax.jit(lambda x, f=outputs: jnp.argmax(f(x), -1))
        correct = np.flatnonzero(np.asarray(predict(pool_x) == pool_y))[: args.images]
        x, y = pool_x[correct], pool_y[correct]
        rows = []
        for eps in epsilons:
            pgd_x = adv.pgd(outputs, x, y, loss_fn=loss, epsilon=eps, steps=args.pgd_steps, key=jax.random.key(3))
            pgd_ok = np.asarray(predict(pgd_x) == y)
            margin_x = adv.pgd(
                outputs, x, y, loss_fn=adv.margin_loss, epsilon=eps, steps=args.pgd_steps, key=jax.random.key(4)
            )
            margin_ok = np.asarray(predict(margin_x) == y)
            spsa = adv.spsa(
                outputs, x, y, epsilon=eps, steps=args.spsa_steps, samples=args.spsa_samples, key=jax.random.key(5)
            )
            spsa_ok = ~np.asarray(spsa.success)
            rows.append(
                dict(
                    epsilon=eps,
                    pgd=float(pgd_ok.mean()),
                    pgd_margin=float(margin_ok.mean()),
                    spsa=float(spsa_ok.mean()),
                    all_attacks=float((pgd_ok & margin_ok & spsa_ok).mean()),
                    broken_by_spsa_only=float((pgd_ok & margin_ok & ~spsa_ok).mean()),
                )
            )
            print(name, rows[-1], flush=True)
        table[name] = dict(images=int(len(correct)), rows=rows)

    save_json(
        out / "gradient_masking.json",
        dict(
            description="robust accuracy on correctly classified test images: PGD on the training loss "
            "(gradient, random start), PGD on the margin loss, SPSA (gradient-free), all_attacks (robust to "
            "each); 'broken_by_spsa_only' > 0 is a sign of gradient masking. PGD is scored on its last "
            "iterate, SPSA on the first misclassified iterate (a genuine adversarial image in the ball)",
            table=table,
            settings=vars(args),
        ),
        argv=argv,
    )
    attacks = ("pgd", "pgd_margin", "spsa", "all_attacks")
    panels = {
        f"robust accuracy: {attack}": {name: [r[attack] for r in entry["rows"]] for name, entry in table.items()}
        for attack in attacks
    }
    plots.plot_robust_accuracy_panels(epsilons, panels, out / "gradient_masking.png")


if __name__ == "__main__":
    main()
