"""Gradient retrieval throughput: queries x memories x dimension per second.

One modern Hopfield retrieval step for a batch of 1024 queries of dimension N = 784 against
K = 10^3 .. 10^6 memories, three ways in one run:

- jamem: `retrieve(LogSumExpEnergy(beta, chunk_size=...), ...)` with `GradientDescent(1.0)`, the
  update obtained from `jax.grad` of the energy, vmapped over queries (memories chunked so 10^6
  memories fit);
- hand-written `lax.scan` of the closed-form update x <- Xi^T softmax(beta Xi x) (chunked the same
  way with an online softmax);
- NumPy, the same closed form, chunked.

    python benchmarks/retrieval_throughput.py [--quick]

Writes results/bench_retrieval_throughput.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jamem as jm
from jamem.tooling.provenance import save_json

BETA = 0.05


def hand_written(queries, memories, steps, chunk):
    num, dim = memories.shape
    chunks = memories.reshape(num // chunk, chunk, dim)

    def update(x, _):
        def body(carry, m):
            run_max, weight_sum, acc = carry
            s = BETA * (x @ m.T)  # (B, chunk)
            new_max = jnp.maximum(run_max, s.max(-1))
            scale = jnp.exp(run_max - new_max)
            p = jnp.exp(s - new_max[:, None])
            return (new_max, weight_sum * scale + p.sum(-1), acc * scale[:, None] + p @ m), None

        batch = x.shape[0]
        init = (jnp.full((batch,), -1e30), jnp.zeros((batch,)), jnp.zeros_like(x))
        (_, weight_sum, acc), _ = jax.lax.scan(body, init, chunks)
        return acc / weight_sum[:, None], None

    return jax.lax.scan(update, queries, None, length=steps)[0]


def numpy_update(queries, memories, steps, chunk):
    x = queries
    for _ in range(steps):
        scores = np.concatenate([BETA * (x @ memories[i : i + chunk].T) for i in range(0, len(memories), chunk)], 1)
        scores -= scores.max(1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(1, keepdims=True)
        x = sum(p[:, i : i + chunk] @ memories[i : i + chunk] for i in range(0, len(memories), chunk))
    return x


def _time(fn, repeats):
    fn()  # compile / warm up (the first result is already checked against the other forms)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/bench_retrieval_throughput.json")
    args = parser.parse_args(argv)
    batch, dim, steps = (128, 784, 2) if args.quick else (1024, 784, 1)
    ks = [1000, 10_000] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    rows = []
    for k in ks:
        chunk = min(k, 10_000)
        memories = jax.random.normal(jax.random.key(0), (k, dim)) / np.sqrt(dim)
        noise = 0.1 * jax.random.normal(jax.random.key(1), (batch, dim)) / np.sqrt(dim)
        queries = memories[jnp.arange(batch) % k] + noise
        energy = jm.LogSumExpEnergy(BETA, chunk_size=chunk)
        run_jamem = jax.jit(
            jax.vmap(
                lambda x, m: jm.retrieve(energy, x, m, solver=jm.GradientDescent(1.0), steps=steps).state,
                in_axes=(0, None),
            )
        )
        run_hand = jax.jit(lambda q, m: hand_written(q, m, steps, chunk))
        a = run_jamem(queries, memories)
        b = run_hand(queries, memories)
        err = float(jnp.max(jnp.abs(a - b)))
        repeats = 2 if k <= 100_000 else 1
        t_jamem = _time(lambda: run_jamem(queries, memories).block_until_ready(), repeats)
        t_hand = _time(lambda: run_hand(queries, memories).block_until_ready(), repeats)
        np_mem, np_q = np.asarray(memories), np.asarray(queries)
        t_numpy = _time(lambda: numpy_update(np_q, np_mem, steps, chunk), 1)
        work = batch * k * dim * steps
        row = dict(
            num_memories=k,
            batch=batch,
            dim=dim,
            steps=steps,
            chunk=chunk,
            max_abs_diff_vs_hand=err,
            jamem_s=t_jamem,
            hand_scan_s=t_hand,
            numpy_s=t_numpy,
            jamem_throughput=work / t_jamem,
            hand_scan_throughput=work / t_hand,
            numpy_throughput=work / t_numpy if t_numpy else None,
            jamem_vs_hand=t_hand / t_jamem,
            jamem_vs_numpy=t_numpy / t_jamem if t_numpy else None,
        )
        rows.append(row)
        print(
            f"K={k}: jamem {t_jamem:.3f}s, hand scan {t_hand:.3f}s, numpy {t_numpy}s; "
            f"throughput {row['jamem_throughput']:.3g} q*K*N/s; diff {err:.1e}",
            flush=True,
        )
        # saved after every K: the 10^6 row takes many minutes on a CPU
        save_json(
            args.out,
            dict(
                benchmark="modern Hopfield retrieval step throughput",
                beta=BETA,
                gpu_roofline="not measured: no GPU in this session",
                rows=rows,
            ),
            argv=argv,
        )


if __name__ == "__main__":
    main()
