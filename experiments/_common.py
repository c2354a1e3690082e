"""What the experiment scripts share: their command-line options, where results go, and an optax
training step. Scripts import it as `from _common import ...` (this folder is on `sys.path` when
a script runs, whatever the working directory)."""

from __future__ import annotations

import argparse
from pathlib import Path

import equinox as eqx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def experiment_parser(doc: str, *, out: str | Path = RESULTS) -> argparse.ArgumentParser:
    """A parser with the options every experiment has: --quick (small sizes, seconds to a
    minute: the test suite runs it), --out (the results folder, default the repository's
    `results/`, whatever the working directory) and --seed."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (the test suite)")
    parser.add_argument("--out", default=str(out), help=f"output folder (default {out})")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def result_stem(args: argparse.Namespace, name: str) -> Path:
    """`<out>/<name>`, or `<out>/<name>_quick` for a --quick run (never overwriting a full one)."""
    return Path(args.out) / (f"{name}_quick" if args.quick else name)


def optax_step(loss_fn, optimizer):
    """A jit-compiled step for `loss_fn(params, *batch) -> scalar`:
    `step(params, opt_state, *batch) -> (params, opt_state, loss)`; `params` may be any equinox
    module or pytree (its non-array leaves are left alone). Given global arrays
    (`jamem.tooling.distributed.to_global`), the step is data-parallel over every process."""

    @eqx.filter_jit
    def step(params, opt_state, *batch):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_array))
        return eqx.apply_updates(params, updates), opt_state, loss

    return step
