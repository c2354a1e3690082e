"""Writes notebooks/03_adversarial.ipynb (run: python notebooks/make_03_adversarial.py)."""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md(
        "# Adversarial images and DenseAM classifiers\n\n"
        "Krotov & Hopfield 2017, *Dense Associative Memory is Robust to Adversarial Inputs* "
        "(arXiv:1701.00939): descend the classification loss with respect to the pixels until the "
        "label flips, then ask whether the image fools a model of another degree n. Images made on a "
        "low-n (ReLU-like) model rarely fool a high-n one. This notebook trains two small models, "
        "attacks them and shows the transfer matrix. `SMALL = True` keeps it to about a minute on a CPU; "
        "offline, set `JAMEM_DATA_DIR` to a folder with `mnist/` holding the IDX files."
    ),
    code(
        "# In Colab: install jamem from its repository (set JAMEM_REPO to the repository URL you use).\n"
        "import importlib.util, os, subprocess, sys\n"
        'if importlib.util.find_spec("jamem") is None:\n'
        '    repo = os.environ.get("JAMEM_REPO", "https://github.com/jamem/jamem.git")\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{repo}"], check=True)'
    ),
    code(
        "import jax, jax.numpy as jnp, numpy as np\n"
        "import matplotlib.pyplot as plt\n"
        "from jamem import adversarial as adv, data, train\n"
        "from jamem import log_power_loss\n"
        "SMALL = True  # the test suite runs this notebook with small sizes\n"
        'images, labels = data.load("mnist", split="train")\n'
        'test_images, test_labels = data.load("mnist", split="test")\n'
        "if SMALL:\n"
        "    images, labels = images[:10000], labels[:10000]"
    ),
    md("## Two classifiers: n = 2 (features, ReLU-like) and n = 20 (prototypes)"),
    code(
        "models = {}\n"
        "for n in (2, 20):\n"
        "    config = train.preset(n, num_memories=100 if SMALL else 2000, epochs=8 if SMALL else 100,\n"
        "                          batch_size=500, learning_rate=0.2, temperature_ramp_epochs=6 if SMALL else 60)\n"
        "    model, history = train.fit(config, (images, labels), (test_images[:2000], test_labels[:2000]),\n"
        "                               progress=False)\n"
        "    T = config.temperature()(config.epochs)\n"
        "    scores = jax.jit(lambda x, model=model, T=T: model.batch_scores(x, temperature=T))\n"
        "    loss = lambda s, y, m=config.loss_power: log_power_loss(s, y, power=m)\n"
        '    models[f"n={n}"] = (scores, loss)\n'
        "    print(f\"n = {n}: test error {100 * history.rows[-1]['test_error']:.1f}%\")"
    ),
    md(
        "## The attack (arXiv:1701.00939)\n\n"
        "Normalised gradient steps on the pixels (each pixel moves at most `step_size` per step), "
        "weights frozen, until the label flips. The loss is the training loss in log form, so a "
        "confident (saturated) model still has a gradient."
    ),
    code(
        "x, y = jnp.asarray(test_images[:60]), jnp.asarray(test_labels[:60])\n"
        "made, shown = {}, {}\n"
        "for name, (scores, loss) in models.items():\n"
        "    keep = jnp.argmax(scores(x), -1) == y\n"
        "    result = adv.descend(scores, x[keep], y[keep], loss_fn=loss, step_size=0.01, steps=400)\n"
        "    made[name] = (result.images[result.success], y[keep][result.success])\n"
        "    shown[name] = (x[keep][:4], result.images[:4], jnp.argmax(scores(result.images[:4]), -1))\n"
        '    print(f"{name}: {100 * float(result.success.mean()):.0f}% flipped, "\n'
        '          f"mean L2 change {float(jnp.linalg.norm(result.images - x[keep], axis=1).mean()):.2f}")'
    ),
    code(
        "fig, axes = plt.subplots(2, 12, figsize=(12, 2.4))\n"
        "for row, (name, (orig, advx, pred)) in zip(axes, shown.items()):\n"
        "    for i in range(4):\n"
        "        for j, (img, cmap) in enumerate([(orig, 'gray'), (advx, 'gray'), (advx - orig, 'bwr')]):\n"
        "            row[3 * i + j].imshow(np.asarray(img[i]).reshape(28, 28), cmap=cmap, vmin=-1, vmax=1)\n"
        "            row[3 * i + j].axis('off')\n"
        "        row[3 * i + 1].set_title(f'-> {int(pred[i])}', fontsize=8)\n"
        "    row[0].set_title(name, loc='left', fontsize=8)"
    ),
    md("## Transfer matrix (arXiv:1701.00939, talk slides): fraction of the images made on one model that the other misclassifies"),
    code(
        "predictors = {name: (lambda z, f=scores: jnp.argmax(f(z), -1)) for name, (scores, _) in models.items()}\n"
        "matrix = adv.transfer_matrix(made, predictors)\n"
        "names = list(matrix)\n"
        "values = np.array([[matrix[r][c] for c in names] for r in names])\n"
        "fig, ax = plt.subplots(figsize=(3.2, 2.8))\n"
        "ax.imshow(values, vmin=0, vmax=1)\n"
        "for i in range(len(names)):\n"
        "    for j in range(len(names)):\n"
        "        colour = 'w' if values[i, j] < 0.6 else 'k'\n"
        "        ax.text(j, i, f'{100 * values[i, j]:.0f}%', ha='center', va='center', color=colour)\n"
        "ax.set(xticks=range(len(names)), xticklabels=names, yticks=range(len(names)), yticklabels=names,\n"
        "       xlabel='evaluated on', ylabel='made on')\n"
        "matrix"
    ),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
nbf.write(nb, Path(__file__).with_name("03_adversarial.ipynb"))
