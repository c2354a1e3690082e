"""Epoch time of DenseAM training as 1, 2 and 4 processes on this machine (`jax.distributed`,
gloo collectives on CPU), with the collective traffic per step computed from the shapes.

    python benchmarks/distributed_epoch.py            # K = 2000, n = 3, minibatch 1000, 60k images
    python benchmarks/distributed_epoch.py --quick    # K = 200, 10k images

On one machine the processes share its cores, so no speed-up is expected: the point is that the
same program runs as N processes and what that costs. Per step the only collective is the
all-reduce of the memories' gradient, K (N + C) float32 numbers; a ring all-reduce sends
2 (P - 1) / P of that from every process, which predicts the traffic of a pod slice. Writes
results/bench_distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, sys, time
    port, count, rank, out, memories, images_count, repeats = sys.argv[1:8]
    count, rank = int(count), int(rank)
    from jamem.tooling.distributed import initialize
    if count > 1:
        initialize(f"localhost:{port}", count, rank)
    import equinox as eqx, jax, jax.numpy as jnp
    from jamem import data, train
    from jamem._sharding import to_global, to_host
    from jamem.classifier.model import DenseAMClassifier
    from jamem.classifier.optim import dense_am_optimizer

    images, labels = data.load("mnist", split="train", source="idx")
    images, labels = images[: int(images_count)], labels[: int(images_count)]
    model = DenseAMClassifier(num_memories=int(memories), degree=3, key=jax.random.key(0))
    optimizer = dense_am_optimizer(0.04, momentum=0.9)
    state = optimizer.init(eqx.filter(model, eqx.is_array))
    x, y, model, state = to_global((images, labels, model, state))
    kwargs = dict(temperature=jnp.float32(300.0), optimizer=optimizer, batch_size=1000, loss_power=3)
    epoch = lambda k: train.train_epoch(model, state, x, y, key=jax.random.key(k), **kwargs)
    to_host(epoch(0)[2])  # compile
    times = []
    for k in range(int(repeats)):
        tic = time.perf_counter()
        to_host(epoch(k + 1)[2])
        times.append(time.perf_counter() - tic)
    if rank == 0:
        json.dump({"epoch_seconds_each": times, "devices": jax.device_count()}, open(out, "w"))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(count: int, *, memories: int, images: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(port),
                    str(count),
                    str(rank),
                    str(out),
                    str(memories),
                    str(images),
                    str(repeats),
                ],
                env=env,
            )  # fmt: skip
            for rank in range(count)
        ]
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"a worker of the {count}-process run failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "results" / "bench_distributed.json"))
    args = parser.parse_args(argv)
    from jamem.tooling.provenance import save_json

    memories, images = (200, 10000) if args.quick else (2000, 60000)
    rows = []
    for count in [int(p) for p in args.processes.split(",")]:
        result = run(count, memories=memories, images=images, repeats=args.repeats)
        gradient_bytes = 4 * memories * (784 + 10)
        rows.append(
            {
                "processes": count,
                "devices": result["devices"],
                "epoch_seconds": min(result["epoch_seconds_each"]),
                "epoch_seconds_each": result["epoch_seconds_each"],
                "all_reduce_bytes_per_step": gradient_bytes,
                "ring_bytes_sent_per_process_per_step": 2 * (count - 1) / count * gradient_bytes,
                "steps_per_epoch": images // 1000,
            }
        )
        print(rows[-1], flush=True)
    base = rows[0]["epoch_seconds"]
    for row in rows:
        row["relative_to_one_process"] = row["epoch_seconds"] / base
    save_json(
        args.out,
        {
            "setting": dict(num_memories=memories, images=images, minibatch=1000, degree=3),
            "timing": "min of the repeats after a compile epoch; processes share this machine's cores",
            "rows": rows,
        },
    )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
