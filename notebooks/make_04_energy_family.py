"""Writes notebooks/04_energy_family.ipynb (run: python notebooks/make_04_energy_family.py)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INSTALL = """\
# In Colab: install jamem from its repository (set JAMEM_REPO to the repository URL you use).
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("jamem") is None:
    repo = os.environ.get("JAMEM_REPO", "https://github.com/jamem/jamem.git")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{repo}"], check=True)"""

CELLS = [
    new_markdown_cell("""\
# The family of energies: one query, six descents, and an Energy Transformer

Every associative memory in jamem is an energy and a way down it. This notebook stores a few MNIST
digits, corrupts one, and retrieves it under each energy of the library:

- the Dense Associative Memory with rectified cubic separation and the asynchronous sign rule
  (Krotov & Hopfield 2016, arXiv:1606.01164);
- the modern Hopfield (log-sum-exp) energy (Ramsauer et al. 2020, arXiv:2008.02217);
- the Epanechnikov / log-sum-ReLU energy (Hoover et al. 2025, arXiv:2506.10801);
- the Gaussian-kernel energy and its random-feature approximation DrDAM
  (Hoover et al. 2024, arXiv:2410.24153);
- model B of the two-layer network of Krotov & Hopfield 2020 (arXiv:2008.06996), integrated with
  slow hidden neurons.

Then an Energy Transformer (Hoover et al. 2023, arXiv:2302.07253) is trained briefly to fill in
masked patches of MNIST digits, its energy falling along its steps. In Colab it downloads MNIST
through TFDS; offline, set `JAMEM_DATA_DIR` to a folder with `mnist/` holding the IDX files.
`SMALL = True` keeps it well under a minute on a laptop CPU (the test suite runs it so)."""),
    new_code_cell(INSTALL),
    new_code_cell("""\
import time
import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
import matplotlib.pyplot as plt
import jamem as jm
from jamem import data, two_layer
from jamem.networks.energy_transformer import MaskedPatchET, masked_patch_mse
SMALL = True  # the test suite runs this notebook with small sizes
test_images, test_labels = data.load("mnist", split="test")
print(test_images.shape, test_images.min(), test_images.max(), jax.devices())"""),
    new_markdown_cell("""\
## Memories and a noisy query

One test digit of each class, binarised to +-1 (ink +1). The always-empty 4-pixel border is cropped
(20 x 20 = 400 neurons): otherwise the shared background dominates every overlap, and with the
gentle cubic separation n = 3 the digits would not even be stable states. The query is digit 3
with 10% of its pixels flipped. The continuous energies see the same patterns scaled to unit
length (x / sqrt(N)); the overlap reported is the cosine between a result and the target."""),
    new_code_cell("""\
picked = [int(np.flatnonzero(test_labels == d)[0]) for d in range(10)]
crop = test_images[picked].reshape(-1, 28, 28)[:, 4:24, 4:24].reshape(len(picked), -1)
xi = jnp.where(jnp.asarray(crop) > 0, 1.0, -1.0)  # (K, N) = (10, 400), +-1
K, N = xi.shape
target = 3
flip = np.random.default_rng(1).random(N) < 0.1
query = jnp.where(flip, -xi[target], xi[target])
unit_xi, unit_query = xi / jnp.sqrt(N), query / jnp.sqrt(N)

def overlaps(x):
    \"\"\"Cosine between x and every memory.\"\"\"
    return np.asarray(xi @ x) / (float(jnp.linalg.norm(x)) * np.sqrt(N))

print(f"K = {K} memories of N = {N} neurons; query overlap with the target {overlaps(query)[target]:.2f}")"""),
    new_markdown_cell("""\
## One query, every energy

Each retrieval is one `jax.jit`-compiled call. `retrieve` takes any energy `E(state, memories)`,
so the random-feature memory (which stores the memories as one feature vector T and never looks
at them again) enters as `lambda x, _: rf(x)`; its gradient is the gradient of the *approximate*
energy. Model B runs the two-layer dynamics (arXiv:2008.06996) with hidden time constant tau_h = 0.5 and records
the two-layer energy E(v, h)."""),
    new_code_cell("""\
rf_features = 8192 if SMALL else 16384
rf = jm.RandomFeatureMemory(N, rf_features, beta=8.0, key=jax.random.key(2, impl="rbg")).add_memories(unit_xi)

def descend(energy, step_size, steps):
    run = lambda x, m: jm.retrieve(energy, x, m, solver=jm.GradientDescent(step_size), steps=steps, saveat=jm.SaveAt(every=1))
    return jax.jit(run)

runs = {
    "DenseAM, F = ReLU(x)^3, async rule": lambda: jax.jit(lambda x, m: jm.retrieve(
        jm.DenseEnergy(jm.RectifiedPower(3)), x, m, solver=jm.AsyncBinary(), steps=10, saveat=jm.SaveAt(every=1)))(query, xi),
    "modern Hopfield (LSE, beta = 20)": lambda: descend(jm.LogSumExpEnergy(20.0), 0.5, 20)(unit_query, unit_xi),
    "Epanechnikov (LSR, beta = 1.8)": lambda: descend(jm.LogSumReLUEnergy(1.8), 0.1, 40)(unit_query, unit_xi),
    "Gaussian kernel (beta = 8)": lambda: descend(jm.GaussianKernelEnergy(8.0), 0.5, 20)(unit_query, unit_xi),
    f"DrDAM, {rf_features} random features": lambda: jax.jit(lambda x, m, rf: jm.retrieve(
        lambda s, _: rf(s), x, m, solver=jm.GradientDescent(0.5), steps=20, saveat=jm.SaveAt(every=1)))(unit_query, unit_xi, rf),
    "two-layer model B (tau_h = 0.5)": lambda: jax.jit(lambda x, m: two_layer.simulate(
        two_layer.model_b(20.0, tau_h=0.5), x, m, dt=0.25, steps=40, save_every=1))(unit_query, unit_xi),
}
results = {}
for name, run in runs.items():
    out = run()
    state = out.state[0] if isinstance(out.state, tuple) else out.state  # two-layer: (v, h)
    results[name] = (state, np.asarray(out.trajectory_energy))
    m = overlaps(results[name][0])
    print(f"{name:38s} overlap with the target {m[target]:+.3f}  (closest memory: {int(np.argmax(m))})")"""),
    new_code_cell("""\
fig, axes = plt.subplots(2, 3, figsize=(12, 6))
for ax, (name, (state, energies)) in zip(axes.ravel(), results.items()):
    ax.plot(energies, "o-", ms=3)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("sweep" if "async" in name else "step")
axes[0, 0].set_ylabel("energy"); axes[1, 0].set_ylabel("energy")
fig.tight_layout(); plt.show()

fig, axes = plt.subplots(1, 2 + len(results), figsize=(14, 2.2))
shown = [("target", xi[target]), ("query", query)]
shown += [(name.split(" (")[0].split(",")[0], state) for name, (state, _) in results.items()]
for ax, (name, img) in zip(axes, shown):
    ax.imshow(np.asarray(img).reshape(20, 20), cmap="gray"); ax.set_title(name, fontsize=8); ax.axis("off")
plt.show()"""),
    new_markdown_cell("""\
## An Energy Transformer fills in masked patches

`MaskedPatchET` cuts a digit into 16 patches of 7 x 7, replaces the masked ones by a learned mask
token, runs the Energy Transformer's gradient descent on its energy (attention + Hopfield terms)
for 12 steps, and decodes the final tokens back to pixels (arXiv:2302.07253). It is trained with Adam on the
pixel MSE of the masked patches (4 of 16 hidden, fresh random masks every batch). With `SMALL` it
trains for about a hundred steps only: compare with the mean-patch baseline (every masked patch
guessed as the mean training patch there); `SMALL = False` trains far longer."""),
    new_code_cell("""\
if SMALL:  # train on 1000 test digits (no need to load the training split); complete other test digits
    dim, heads, head_dim, num_memories, num_steps, batch = 32, 2, 8, 64, 100, 32
    train_x = jnp.asarray(test_images[1000:2000])
else:
    dim, heads, head_dim, num_memories, num_steps, batch = 64, 4, 16, 128, 3000, 64
    train_x = jnp.asarray(data.load("mnist", split="train")[0][:20000])
train_size = train_x.shape[0]
# built inside one jit (one compile, not one per initialiser) from an "rbg" key (cheaper to compile than threefry)
build = lambda key: MaskedPatchET(patch_size=7, dim=dim, steps=12, step_size=0.1, num_heads=heads,
                                  head_dim=head_dim, num_memories=num_memories, key=key)
model = eqx.filter_jit(build)(jax.random.key(0, impl="rbg"))
num_patches, num_masked = model.num_patches, 4
rng = np.random.default_rng(0)

def random_masks(n):
    \"\"\"n boolean masks with exactly num_masked of the num_patches patches hidden (drawn with NumPy).\"\"\"
    order = np.argsort(rng.random((n, num_patches)), axis=1)
    return jnp.asarray(order < num_masked)

optimizer = optax.adam(3e-3 if SMALL else 1e-3)
opt_state = jax.jit(optimizer.init)(eqx.filter(model, eqx.is_array))

@eqx.filter_jit
def train_step(model, opt_state, x, masks):
    def loss_fn(model):
        recon, _ = jax.vmap(model)(x, masks)
        return masked_patch_mse(recon, x, masks, patch_size=7)
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, loss

start, losses = time.time(), []
for step in range(num_steps):
    rows = rng.choice(train_size, batch, replace=False)
    model, opt_state, loss = train_step(model, opt_state, train_x[rows], random_masks(batch))
    losses.append(loss)
losses = np.asarray(losses)
print(f"{num_steps} steps in {time.time() - start:.1f} s; "
      f"masked-patch MSE {losses[:10].mean():.3f} -> {losses[-10:].mean():.3f}")"""),
    new_code_cell("""\
shown = 8
x = jnp.asarray(test_images[100:100 + (shown if SMALL else 1000)])  # never trained on
masks = random_masks(x.shape[0])
recon, energies = eqx.filter_jit(lambda m, x, k: jax.vmap(m)(x, k))(model, x, masks)
baseline = masked_patch_mse(jnp.broadcast_to(jnp.mean(train_x, axis=0), x.shape), x, masks, patch_size=7)
print(f"test masked-patch MSE {float(masked_patch_mse(recon, x, masks, patch_size=7)):.3f} "
      f"(mean-patch baseline {float(baseline):.3f}) on {x.shape[0]} digits")
energies = np.asarray(energies)
print("energy non-increasing along the steps for",
      f"{np.mean(np.all(np.diff(energies, axis=1) <= 1e-4 + 1e-5 * np.abs(energies[:, :-1]), axis=1)):.0%} of them")

cmap = plt.get_cmap("gray").copy(); cmap.set_bad("tab:red")  # hidden patches in red
fig = plt.figure(figsize=(13, 4))
grid = fig.add_gridspec(3, shown + 1, width_ratios=[1] * shown + [4], wspace=0.1, hspace=0.1)
for i in range(shown):
    hidden = np.kron(np.asarray(masks[i]).reshape(4, 4), np.ones((7, 7))).astype(bool)
    original = np.asarray(x[i]).reshape(28, 28)
    completed = np.where(hidden, np.clip(np.asarray(recon[i]).reshape(28, 28), -1, 1), original)
    for row, (img, label) in enumerate([(original, "original"), (np.where(hidden, np.nan, original), "masked"),
                                        (completed, "completed")]):
        ax = fig.add_subplot(grid[row, i])
        ax.imshow(img, cmap=cmap, vmin=-1, vmax=1); ax.set_xticks([]); ax.set_yticks([])
        if i == 0:
            ax.set_ylabel(label, fontsize=8)
ax = fig.add_subplot(grid[:, shown])
ax.plot((energies - energies[:, :1])[:shown].T, color="tab:blue", alpha=0.5)
ax.set(xlabel="ET step", ylabel="E(t) - E(0)", title="energy along the dynamics")
ax.yaxis.tick_right(); ax.yaxis.set_label_position("right")
plt.show()"""),
]


def main():
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(__file__).with_name("04_energy_family.ipynb")
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
