"""What fp32 matrix multiplication reaches on this CPU, against the arithmetic of one all-MiniLM-L6-v2 forward over
N tokens of L-token sequences: the floor under any fp32 forward (BENCHMARKS.md, the CPU long-document row).

    python benchmarks/cpu_gemm_ceiling.py --tokens 16384 --length 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch

HIDDEN, INTERMEDIATE, LAYERS = 384, 1536, 6  # all-MiniLM-L6-v2


def forward_flops(tokens: int, length: int) -> float:
    """Multiply-adds x 2 of the six layers: QKV, output projection, the MLP, and attention's two products."""
    per_token = 2 * HIDDEN * 3 * HIDDEN + 2 * HIDDEN * HIDDEN + 2 * 2 * HIDDEN * INTERMEDIATE + 2 * 2 * length * HIDDEN
    return float(per_token * LAYERS * tokens)


def gemm_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--length", type=int, default=256)
    args = p.parse_args()
    shapes = [
        (args.tokens, HIDDEN, 3 * HIDDEN),
        (args.tokens, HIDDEN, INTERMEDIATE),
        (args.tokens, INTERMEDIATE, HIDDEN),
    ]
    rates = {f"{m}x{k}x{n}": round(gemm_rate(m, k, n) / 1e9, 1) for m, k, n in shapes}
    flops = forward_flops(args.tokens, args.length)
    best = max(rates.values()) * 1e9
    report = {
        "threads": torch.get_num_threads(),
        "gemm_gflops": rates,
        "forward_gflop": round(flops / 1e9, 1),
        "forward_seconds_at_best_gemm_rate": round(flops / best, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
