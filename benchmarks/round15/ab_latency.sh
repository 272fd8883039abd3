#!/usr/bin/env bash
# One sentence per call on the CPU, A/B: .ab/old (the last commit before this change: `mkdir -p .ab/old &&
# git archive 0405124 st_backend | tar -x -C .ab/old`) vs this tree, both in .venv-old (ST 6.2, transformers 5.17:
# the last commit does not support ST 6.3), one thread each side, alternating, two rounds.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export OMP_NUM_THREADS=1
for round in 1 2; do
  for side in old new; do
    pp=$ROOT
    [ "$side" = old ] && pp=$ROOT/.ab/old
    (cd "$pp" && PYTHONPATH=$pp "$ROOT/.venv-old/bin/python" -m st_backend.cli bench --model default --corpus sts \
      --data-dir "$ROOT/../shared/data" --latency 1000 --device cpu \
      --json "$ROOT/benchmarks/round15/latency-cpu-$side-$round.json" 2>&1 | grep -E "p50|no slower" | sed "s/^/$side $round: /")
  done
done
