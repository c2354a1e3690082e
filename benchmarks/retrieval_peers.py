"""Retrieval speed against every peer, side by side in one process: the modern Hopfield update

    x <- Xi^T softmax(beta Xi x)        (Ramsauer et al. 2020, arXiv:2008.02217)

for 3 steps from 1024 queries (N = 784, beta = 40), K = 10^3 .. 10^5 memories (10^6 with --large):

- jamem: `jamem.retrieve(LogSumExpEnergy(beta), x, xi, solver=GradientDescent(1.0), steps=3)`,
  vmapped over the queries and jit-compiled, with the library's defaults;
- hamux (PyPI): a HAM of a visible layer (identity Lagrangian) and a hidden softmax layer joined
  by a linear synapse Xi^T; each step sets the hidden layer to its equilibrium, then the visible
  one (x <- x - dE/dx, two `dEdact` calls);
- hopfield-layers (ml-jku, PyTorch; `../shared/peers/hopfield-layers`, not on PyPI): `Hopfield`
  with every projection and normalisation off, `update_steps_max=2` (three updates);
- the same energy written by hand as a user would (a pure function, unchunked) through `retrieve`,
  with its overlaps as Xi x and as x Xi^T: what the operand layout costs under `vmap`;
- plain JAX (the update written out, jit-compiled), NumPy (float32), and the ceiling: the two bare
  matmuls of each step, (B, N) x (N, K) and (B, K) x (K, N), jit-compiled.

Every system's result is checked against NumPy to 1e-5 before it is timed; a peer that is not
installed is reported as skipped. Times are the minimum of `--repeats` runs after a warm-up.
Install the peers with `pip install -e ".[bench]"`. Writes results/bench_retrieval_peers.json
and .png (GFLOP/s against K, one line per system).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jamem as jm

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers" / "hopfield-layers"


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def numpy_update(x, xi, beta, steps):
    for _ in range(steps):
        scores = beta * (x @ xi.T)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=1, keepdims=True)
        x = weights @ xi
    return x


def jax_update(beta, steps):
    @jax.jit
    def run(x, xi):
        for _ in range(steps):
            x = jax.nn.softmax(beta * (x @ xi.T), axis=-1) @ xi
        return x

    return run


def jamem_update(beta, steps):
    energy = jm.LogSumExpEnergy(beta)
    solver = jm.GradientDescent(1.0)
    return jax.jit(
        jax.vmap(lambda x, xi: jm.retrieve(energy, x, xi, solver=solver, steps=steps).state, in_axes=(0, None))
    )


def user_energy_update(beta, steps, *, memories_first: bool):
    """`retrieve` on the energy as a user would write it, a pure function, unchunked, with its
    overlaps written Xi x (`memories_first`) or x Xi^T: the layout's cost under `vmap`."""

    def energy(x, xi):
        scores = xi @ x if memories_first else x @ xi.T
        return -jax.nn.logsumexp(beta * scores) / beta + 0.5 * jnp.dot(x, x)

    solver = jm.GradientDescent(1.0)
    return jax.jit(
        jax.vmap(lambda x, xi: jm.retrieve(energy, x, xi, solver=solver, steps=steps).state, in_axes=(0, None))
    )


def bare_matmuls(steps):
    @jax.jit
    def run(x, xi):
        for _ in range(steps):
            x = (x @ xi.T) @ xi
        return x

    return run


def hamux_update(beta, steps, xi):
    import hamux
    from hamux.lagrangians import lagr_identity, lagr_softmax

    num, dim = xi.shape
    ham = hamux.HAM(
        neurons={
            "v": hamux.NeuronLayer(lagr_identity, (dim,)),
            "h": hamux.NeuronLayer(lambda h: lagr_softmax(h, beta=beta), (num,)),
        },
        hypersynapses={"s": hamux.LinearSynapse(W=jnp.asarray(xi).T)},
        connections=[(("v", "h"), "s")],
    ).vectorize()

    @jax.jit
    def run(v):
        xs = {"v": v, "h": jnp.zeros((v.shape[0], num), v.dtype)}
        for _ in range(steps):
            grads = ham.dEdact(ham.activations(xs), xs)
            xs = {"v": xs["v"], "h": xs["h"] - grads["h"]}  # hidden to equilibrium: h = Xi x
            grads = ham.dEdact(ham.activations(xs), xs)
            xs = {"v": xs["v"] - grads["v"], "h": xs["h"]}  # x <- Xi^T softmax(beta h)
        return xs["v"]

    return run


def hopfield_layers_update(beta, steps):
    import torch

    sys.path.insert(0, str(PEERS))
    from hflayers import Hopfield

    off = dict.fromkeys(
        [
            "normalize_stored_pattern",
            "normalize_stored_pattern_affine",
            "normalize_state_pattern",
            "normalize_state_pattern_affine",
            "normalize_pattern_projection",
            "normalize_pattern_projection_affine",
            "input_bias",
        ],
        False,
    )
    static = dict.fromkeys(
        ["stored_pattern_as_static", "state_pattern_as_static", "pattern_projection_as_static"], True
    )

    def run(x, xi):
        hopfield = Hopfield(
            input_size=xi.shape[1], scaling=beta, update_steps_max=steps - 1, update_steps_eps=1e-30,
            disable_out_projection=True, batch_first=True, **off, **static,
        )  # fmt: skip
        with torch.no_grad():
            patterns = torch.from_numpy(xi)[None]
            return hopfield((patterns, torch.from_numpy(x)[None], patterns))[0].numpy()

    torch.set_num_threads(os.cpu_count() or 1)
    return run


def accelerator_retrieval(*, quick: bool = False, deadline: float | None = None) -> list[dict]:
    """jamem's retrieval against bare matmuls of the same shapes at K = 10^5, 10^6, 10^7 (1024
    queries, N = 784, 3 steps; K = 10^3, 10^4 when `quick`), stopping before `deadline`
    (`time.time()`): the fraction of the device's float32 matmul throughput jamem reaches."""
    dim, beta, steps, queries = 784, 40.0, 3, 1024
    rows = []
    for num in [1000, 10000] if quick else [100000, 1000000, 10000000]:
        if deadline is not None and time.time() > deadline:
            rows.append({"num_memories": num, "skipped": "out of time"})
            continue
        key = jax.random.key(num)
        xi = jax.random.normal(key, (num, dim), jnp.float32) / np.sqrt(dim)
        noise = 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (queries, dim)) / np.sqrt(dim)
        x0 = xi[jnp.arange(queries) % num] + noise
        flops = steps * 2 * (2 * queries * dim * num)
        row = {"num_memories": num, "queries": queries}
        for name, run in (("jamem", jamem_update(beta, steps)), ("bare matmuls", bare_matmuls(steps))):
            try:
                seconds = _best(lambda run=run, x0=x0, xi=xi: jax.block_until_ready(run(x0, xi)), 3)
            except Exception as err:  # noqa: BLE001 - out of device memory, say: recorded, not fatal
                row[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                continue
            row[f"{name} seconds"] = seconds
            row[f"{name} tflops"] = flops / seconds / 1e12
        if "jamem tflops" in row and "bare matmuls tflops" in row:
            row["jamem fraction of bare matmuls"] = row["jamem tflops"] / row["bare matmuls tflops"]
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 10^3, 2 * 10^3 and 128 queries")
    parser.add_argument("--large", action="store_true", help="also K = 10^6 (where a system fits in memory)")
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "results" / "bench_retrieval_peers.json"))
    args = parser.parse_args(argv)
    from jamem.tooling.plots import save_figure
    from jamem.tooling.provenance import save_json

    dim, beta, steps = 784, 40.0, 3
    sizes = [1000, 2000] if args.quick else [1000, 10000, 100000] + ([1000000] if args.large else [])
    queries = 128 if args.quick else args.queries
    rng = np.random.default_rng(0)
    rows, skipped = [], {}
    for num in sizes:
        xi = (rng.normal(size=(num, dim)) / np.sqrt(dim)).astype(np.float32)
        x0 = (xi[rng.integers(0, num, queries)] + 0.5 * rng.normal(size=(queries, dim)) / np.sqrt(dim)).astype(
            np.float32
        )
        reference = numpy_update(x0.copy(), xi, beta, steps)
        flops = steps * 2 * (2 * queries * dim * num)
        xj, xij = jnp.asarray(x0), jnp.asarray(xi)
        jamem_run, jax_run, matmul_run = jamem_update(beta, steps), jax_update(beta, steps), bare_matmuls(steps)
        user_xi_x = user_energy_update(beta, steps, memories_first=True)
        user_x_xit = user_energy_update(beta, steps, memories_first=False)
        systems = {
            "jamem": lambda: jamem_run(xj, xij),
            "jamem, user energy, Xi x": lambda: user_xi_x(xj, xij),
            "jamem, user energy, x Xi^T": lambda: user_x_xit(xj, xij),
            "plain JAX": lambda: jax_run(xj, xij),
            "NumPy": lambda: numpy_update(x0.copy(), xi, beta, steps),
            "bare matmuls": lambda: matmul_run(xj, xij),
        }
        for name, build in (("hamux", lambda: hamux_update(beta, steps, xi)), ("hopfield-layers", None)):
            try:
                if name == "hamux":
                    run = build()
                    systems[name] = lambda run=run: run(xj)
                else:
                    run = hopfield_layers_update(beta, steps)
                    systems[name] = lambda run=run: run(x0, xi)
            except ImportError as err:
                skipped[name] = f"not installed ({err}); pip install -e '.[bench]'"
        row = {"num_memories": num, "queries": queries, "flop": flops, "seconds": {}, "gflops": {}, "max_error": {}}
        for name, fn in systems.items():
            fn_ = (lambda fn=fn: jax.block_until_ready(fn())) if name != "NumPy" else fn
            try:
                out = np.asarray(fn_())
            except MemoryError as err:
                skipped[f"{name} at K = {num}"] = f"out of memory ({err})"
                continue
            if name != "bare matmuls":
                error = float(np.max(np.abs(out - reference)))
                row["max_error"][name] = error
                if error > 1e-5:
                    raise AssertionError(f"{name} disagrees with NumPy at K = {num}: max error {error:.2e}")
            seconds = _best(fn_, args.repeats)
            row["seconds"][name] = seconds
            row["gflops"][name] = flops / seconds / 1e9
            print(f"K = {num:>7}: {name:28s} {1e3 * seconds:9.1f} ms  {flops / seconds / 1e9:7.1f} GFLOP/s", flush=True)
        times = row["seconds"]
        row["ratios"] = {f"jamem / {name} speed": times[name] / times["jamem"] for name in times if name != "jamem"}
        row["jamem_fraction_of_bare_matmul_gflops"] = row["gflops"]["jamem"] / row["gflops"]["bare matmuls"]
        rows.append(row)

    # DenseEnergy under GradientDescent against the same update written out in plain JAX:
    # x <- x + eta n sum_mu (xi . x)^(n - 1) xi  (E = -sum_mu (xi^mu . x)^n, n = 3)
    dense_rows = []
    for num in sizes:
        xi = jnp.asarray((rng.normal(size=(num, dim)) / np.sqrt(dim)).astype(np.float32))
        x0 = xi[jnp.arange(queries) % num] * 0.9
        eta, n = 0.01, 3
        dense = jm.DenseEnergy(jm.Power(n))
        jamem_dense = jax.jit(
            jax.vmap(
                lambda x, m: jm.retrieve(dense, x, m, solver=jm.GradientDescent(eta), steps=steps).state,
                in_axes=(0, None),
            )
        )

        @jax.jit
        def plain_dense(x, m):
            for _ in range(steps):
                x = x + eta * n * ((x @ m.T) ** (n - 1)) @ m
            return x

        a, b = np.asarray(jamem_dense(x0, xi)), np.asarray(plain_dense(x0, xi))
        error = float(np.max(np.abs(a - b)))
        if error > 1e-4 * max(1.0, float(np.abs(b).max())):
            raise AssertionError(f"DenseEnergy retrieval disagrees with the written-out update: {error:.2e}")
        times = {
            "jamem": _best(lambda: jax.block_until_ready(jamem_dense(x0, xi)), args.repeats),
            "plain JAX": _best(lambda: jax.block_until_ready(plain_dense(x0, xi)), args.repeats),
        }
        dense_rows.append(
            {"num_memories": num, "seconds": times, "jamem / plain JAX speed": times["plain JAX"] / times["jamem"]}
        )
        print(f"DenseEnergy K = {num}: {dense_rows[-1]}", flush=True)

    path = Path(args.out)
    save_json(
        path,
        {
            "update": "x <- Xi^T softmax(beta Xi x), 3 steps, N = 784, beta = 40, float32",
            "timing": f"min of {args.repeats} runs after a warm-up, one process, systems side by side",
            "rows": rows,
            "dense_energy_rows": dense_rows,
            "skipped": skipped,
        },
    )
    _plot(rows, path.with_suffix(".png"), save_figure)
    print(f"wrote {path}")


def _plot(rows, path, save_figure):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = sorted({name for row in rows for name in row["gflops"]})
    for name in names:
        points = [(row["num_memories"], row["gflops"][name]) for row in rows if name in row["gflops"]]
        style = "k--" if name == "bare matmuls" else "o-"
        ax.semilogx(*zip(*points), style, label=name)
    ax.set_xlabel("memories K")
    ax.set_ylabel("GFLOP/s (2 matmuls per step)")
    ax.set_title("Modern Hopfield update, 1024 queries, N = 784, 3 steps")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
