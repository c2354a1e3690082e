#!/usr/bin/env bash
# The prepared GPU run (benchmarks/accelerator.py): one command of at most 8 minutes.
#   bash benchmarks/accelerator.sh [--budget-seconds 450] [--degrees 3,2,20,30]
# Reads MNIST's IDX files from .data/mnist (a copy of ../shared/data/mnist, ignored by git), writes
# results/mnist_paper/gpu/. On the device machine ($OUT set) it also copies the checkpoints and a
# tar of everything else to $OUT, within that tool's limit of 8 files of at most 16 MiB.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=results/mnist_paper/gpu
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
python3 benchmarks/accelerator.py --out "$out" "$@" 2>&1 | tee "$out/accelerator.log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
    cp "$out"/*.ckpt "$OUT"/ 2>/dev/null
    tar -cf "$OUT/results.tar" --exclude='*.ckpt' "$out"
fi
exit "$status"
