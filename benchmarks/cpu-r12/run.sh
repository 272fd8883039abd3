#!/usr/bin/env bash
# CPU rows of 2026-12-02 (2-core machine, nothing else running); torch's default threads unless noted.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv/bin/activate
out=benchmarks/cpu-r12
b() { name=$1; shift; st-backend bench "$@" --json "$out/$name.json" > "$out/$name.txt" 2>&1 || echo "FAILED $name" >> "$out/$name.txt"; tail -9 "$out/$name.txt"; }
b minilm-sts --model default --corpus sts --st-batch-sizes 32,256 --repeats 3
b minilm-arguana --model default --corpus arguana --num-texts 1000 --st-batch-sizes 32,256 --repeats 3
b minilm-long --model default --corpus long --num-texts 64 --max-seq-length 256 --st-batch-sizes 32 --repeats 3
b minilm-latency --model default --corpus sts --latency 400
b mpnet-sts --model all-mpnet-base-v2 --corpus sts --num-texts 1500 --st-batch-sizes 32,256 --repeats 3
OMP_NUM_THREADS=1 b mpnet-fallback-1thread --model all-mpnet-base-v2 --corpus sts --num-texts 600 --st-batch-sizes 32 --repeats 5 --fallback
