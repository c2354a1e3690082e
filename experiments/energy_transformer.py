"""Energy Transformer on masked-patch reconstruction of MNIST (Hoover et al. 2023,
arXiv:2302.07253).

A `MaskedPatchET` (7 x 7 patches -> 16 tokens of dimension D = 64, 4 heads, 128 ReLU Hopfield
memories, 12 steps of x <- x - 0.1 dE/dg) is trained with AdamW, a warmup-cosine learning-rate
schedule and gradient clipping at 1.0 (arXiv:2302.07253) to fill in masked patches; the loss is the pixel MSE on
the masked patches only (4 of the 16 patches hidden per image by default). Every batch draws
fresh random masks.

Reported on held-out test images with fixed random masks:
- the masked-patch MSE against the mean-patch baseline (each masked patch predicted by the mean
  training patch at that position);
- whether the energy decreases along the dynamics of every image: the fraction of images whose
  energy never rises by more than a tolerance (1e-5 |E| + 1e-4) from one step to the next, and the
  largest rise seen.

Writes results/energy_transformer.json and results/energy_transformer.png (or
results/energy_transformer_<dataset>.* for --dataset fashion_mnist). Usage:

    python experiments/energy_transformer.py           # 5-7 minutes on 2 (shared) CPU cores
    python experiments/energy_transformer.py --quick   # a smoke run, well under a minute
    python experiments/energy_transformer.py --dataset fashion_mnist
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import optax_step

from jamem import data
from jamem.networks.energy_transformer import MaskedPatchET, masked_patch_mse, random_mask
from jamem.tooling.provenance import save_json

ROOT = Path(__file__).resolve().parents[1]


def make_optimizer(*, peak_lr, total_steps, warmup_steps, weight_decay, clip):
    """AdamW with a linear-warmup cosine schedule and global-norm clipping (arXiv:2302.07253)."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps, decay_steps=total_steps, end_value=0.0
    )
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(schedule, weight_decay=weight_decay)), schedule


def batch_masks(key, batch, num_patches, num_masked):
    return jax.vmap(lambda k: random_mask(k, num_patches, num_masked))(jax.random.split(key, batch))


def train(model, images, *, key, epochs, batch_size, num_masked, peak_lr, weight_decay, clip, warmup_frac):
    num = images.shape[0] - images.shape[0] % batch_size
    steps_per_epoch = num // batch_size
    total = epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(
        peak_lr=peak_lr,
        total_steps=total,
        warmup_steps=max(1, int(warmup_frac * total)),
        weight_decay=weight_decay,
        clip=clip,
    )
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    patch, num_patches = model.patch_size, model.num_patches

    def loss_fn(model, x, key):
        masks = batch_masks(key, x.shape[0], num_patches, num_masked)
        recon, _ = jax.vmap(model)(x, masks)
        return masked_patch_mse(recon, x, masks, patch_size=patch)

    step = optax_step(loss_fn, optimizer)

    history = []
    images = jnp.asarray(images)
    for epoch in range(epochs):
        key, perm_key = jax.random.split(key)
        order = jax.random.permutation(perm_key, images.shape[0])[:num].reshape(steps_per_epoch, batch_size)
        t0, losses = time.time(), []
        for rows in order:
            key, step_key = jax.random.split(key)
            model, opt_state, loss = step(model, opt_state, images[rows], step_key)
            losses.append(loss)
        mean_loss = float(np.mean(jax.device_get(losses)))
        history.append(mean_loss)
        print(f"epoch {epoch + 1:3d}/{epochs}: masked-patch MSE {mean_loss:.4f} ({time.time() - t0:.1f} s)", flush=True)
    return model, history, total


def evaluate(model, images, masks, train_images, *, rel_tol, abs_tol):
    """Masked-patch MSE of the model and of the mean-patch baseline; energy monotonicity."""
    patch = model.patch_size
    recon, energies = eqx.filter_jit(lambda m, x, k: jax.vmap(m)(x, k))(model, images, masks)
    mse = float(masked_patch_mse(recon, images, masks, patch_size=patch))
    mean_image = jnp.broadcast_to(jnp.mean(train_images, axis=0), images.shape)
    baseline = float(masked_patch_mse(mean_image, images, masks, patch_size=patch))
    energies = np.asarray(energies, np.float64)
    rises = np.diff(energies, axis=1)  # E_{t+1} - E_t
    allowed = rel_tol * np.abs(energies[:, :-1]) + abs_tol
    monotone = np.all(rises <= allowed, axis=1)
    scale = np.abs(energies[:, :-1])
    out = dict(
        masked_patch_mse=mse,
        mean_patch_baseline_mse=baseline,
        mse_ratio_to_baseline=mse / baseline,
        energy=dict(
            fraction_non_increasing=float(monotone.mean()),
            images_with_a_rise=int((~monotone).sum()),
            max_increase=float(rises.max()),
            max_relative_increase=float((rises / scale).max()),
            tolerance=dict(relative=rel_tol, absolute=abs_tol),
            mean_total_decrease=float((energies[:, 0] - energies[:, -1]).mean()),
            mean_energy_per_step=energies.mean(axis=0).tolist(),
        ),
    )
    return out, np.asarray(recon), energies


def plot(path, images, masks, recon, energies, *, patch, side, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(8, images.shape[0])
    fig = plt.figure(figsize=(2 * shown * 0.75 + 4.5, 4.2))
    grid = fig.add_gridspec(3, shown + 1, width_ratios=[1] * shown + [4.5], wspace=0.08, hspace=0.08)
    n = side // patch
    for i in range(shown):
        pixel_mask = np.kron(np.asarray(masks[i]).reshape(n, n), np.ones((patch, patch))).astype(bool)
        original = np.asarray(images[i]).reshape(side, side)
        masked = np.where(pixel_mask, np.nan, original)
        rec = np.asarray(recon[i]).reshape(side, side)
        filled = np.where(pixel_mask, np.clip(rec, -1, 1), original)
        for row, (img, label) in enumerate(((original, "original"), (masked, "masked"), (filled, "reconstructed"))):
            ax = fig.add_subplot(grid[row, i])
            cmap = plt.get_cmap("gray").copy()
            cmap.set_bad("tab:red")
            ax.imshow(img, cmap=cmap, vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    ax = fig.add_subplot(grid[:, shown])
    rel = energies - energies[:, :1]
    steps = np.arange(energies.shape[1])
    for row in rel[:40]:
        ax.plot(steps, row, color="tab:blue", alpha=0.15, lw=0.8)
    ax.plot(steps, rel.mean(axis=0), color="k", lw=2, label="mean over test images")
    ax.set_xlabel("ET step t")
    ax.set_ylabel("E(t) - E(0)")
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.legend(fontsize=8)
    ax.set_title("energy along the dynamics", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=data.DATASETS)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--memories", type=int, default=128)
    parser.add_argument("--hopfield", default="relu", choices=("relu", "softmax"))
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--step-size", type=float, default=0.1)
    parser.add_argument("--num-masked", type=int, default=4, help="masked patches per image (of 16 for 7x7)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--warmup-frac", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (results not saved unless --out)")
    parser.add_argument("--out", default=None, help="output stem (default results/energy_transformer[_<dataset>])")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs = 500, 200, 2

    start = time.time()
    train_images, _ = data.load(args.dataset, split="train", data_dir=args.data_dir)
    test_images, test_labels = data.load(args.dataset, split="test", data_dir=args.data_dir)
    train_images = jnp.asarray(train_images[: args.train_size])
    test_images = jnp.asarray(test_images[: args.test_size])

    key = jax.random.key(args.seed)
    model_key, train_key, mask_key = jax.random.split(key, 3)
    model = MaskedPatchET(
        image_size=28,
        patch_size=args.patch_size,
        dim=args.dim,
        steps=args.steps,
        step_size=args.step_size,
        num_heads=args.heads,
        head_dim=args.head_dim,
        num_memories=args.memories,
        hopfield=args.hopfield,
        key=model_key,
    )
    test_masks = batch_masks(mask_key, test_images.shape[0], model.num_patches, args.num_masked)
    tolerances = dict(rel_tol=1e-5, abs_tol=1e-4)
    untrained, _, _ = evaluate(model, test_images, test_masks, train_images, **tolerances)

    t_train = time.time()
    model, history, total_steps = train(
        model,
        train_images,
        key=train_key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_masked=args.num_masked,
        peak_lr=args.lr,
        weight_decay=args.weight_decay,
        clip=args.clip,
        warmup_frac=args.warmup_frac,
    )
    train_seconds = time.time() - t_train
    trained, recon, energies = evaluate(model, test_images, test_masks, train_images, **tolerances)
    print(
        f"test masked-patch MSE {trained['masked_patch_mse']:.4f} vs mean-patch baseline "
        f"{trained['mean_patch_baseline_mse']:.4f}; energy non-increasing for "
        f"{100 * trained['energy']['fraction_non_increasing']:.1f}% of test images "
        f"(max rise {trained['energy']['max_increase']:.3g})"
    )

    suffix = "" if args.dataset == "mnist" else f"_{args.dataset}"
    stem = args.out or str(ROOT / "results" / f"energy_transformer{suffix}")
    if args.quick and args.out is None:
        return trained
    payload = dict(
        description="Energy Transformer (arXiv:2302.07253), masked-patch reconstruction; metrics on held-out "
        "test images "
        "with fixed random masks. Energy tolerance: a step counts as a rise if E_{t+1} - E_t > "
        "rel |E_t| + abs.",
        dataset=args.dataset,
        settings=dict(
            vars(args),
            num_patches=model.num_patches,
            attention_beta=model.block.beta,
            attention_sum="over all B (the paper's form), self-pairs included",
            layer_norm="g = (x - mean) / sqrt(var + 1e-5) + delta, gamma = 1 fixed, delta learned",
            optimizer="clip_by_global_norm -> adamw, warmup_cosine_decay_schedule",
            total_steps=total_steps,
            test_labels_first_shown=np.asarray(test_labels[:8]).tolist(),
        ),
        train_loss_per_epoch=history,
        train_seconds=train_seconds,
        total_seconds=time.time() - start,
        untrained=dict(
            masked_patch_mse=untrained["masked_patch_mse"],
            energy_fraction_non_increasing=untrained["energy"]["fraction_non_increasing"],
        ),
        test=trained,
    )
    save_json(stem + ".json", payload)
    title = (
        f"Energy Transformer, {args.dataset}: {args.num_masked}/{model.num_patches} patches masked; test MSE "
        f"{trained['masked_patch_mse']:.3f} (mean-patch baseline {trained['mean_patch_baseline_mse']:.3f})"
    )
    plot(stem + ".png", test_images, test_masks, recon, energies, patch=args.patch_size, side=28, title=title)
    print(f"wrote {stem}.json and {stem}.png ({time.time() - start:.0f} s)")
    return trained


if __name__ == "__main__":
    main()
