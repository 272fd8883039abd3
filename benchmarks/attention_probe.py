"""Time the packed variable-length attention kernels torch ships, on one packed batch of bench-like lengths.

python benchmarks/attention_probe.py [--tokens 50000] [--json FILE]

Kernels: torch varlen_attn (flash), aten._cudnn_attention_forward with ragged offsets (what nested-tensor SDPA
calls), aten._efficient_attention_forward with cu_seqlens (the CUTLASS kernel). Each output is compared with
varlen_attn's; a kernel that fails or differs is reported, not timed.
"""

import argparse
import json

import numpy as np
import torch

SHAPES = {  # name: (query heads, K/V heads, head dim, causal)
    "all-MiniLM-L6-v2": (12, 12, 32, False),
    "bert-base": (12, 12, 64, False),
    "qwen3-0.6b": (16, 8, 128, True),
}


def lengths(tokens: int, seed: int = 0) -> list[int]:
    """MS MARCO-like lengths (lognormal, median ~55 tokens), sorted as the scheduler sorts them."""
    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < tokens:
        n = int(min(512, max(4, rng.lognormal(np.log(55), 0.45))))
        out.append(n)
        total += n
    return sorted(out)


def timed(fn, iters: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters * 1000  # microseconds


def kernels(q, k, v, cu, max_len, causal, scale):
    from torch.nn.attention.varlen import varlen_attn

    rep = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    window = {"window_size": (-1, 0)} if causal else {}
    return {
        "varlen_attn": lambda: varlen_attn(q, kr, vr, cu, cu, max_len, max_len, scale=scale, **window),
        "cudnn ragged": lambda: torch.ops.aten._cudnn_attention_forward(
            q, kr, vr, None, cu, cu, max_len, max_len, False, 0.0, causal, False, scale=scale
        )[0],
        "efficient (cutlass)": lambda: torch.ops.aten._efficient_attention_forward(
            q[None], kr[None], vr[None], None, cu, cu, max_len, max_len, 0.0, 1 if causal else 0, False, scale=scale
        )[0][0],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=50000)
    p.add_argument("--dtype", default="float16")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    lens = lengths(args.tokens)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device="cuda")
    total, max_len = int(cu[-1]), max(lens)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}")
    print(f"{len(lens)} sequences, {total} tokens, max {max_len}, {args.dtype}")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": total, "results": {}}
    for name, (hq, hk, d, causal) in SHAPES.items():
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(total, hq, d, device="cuda", dtype=dtype, generator=gen)
        k, v = (torch.randn(total, hk, d, device="cuda", dtype=dtype, generator=gen) for _ in range(2))
        fns = kernels(q, k, v, cu, max_len, causal, d**-0.5)
        ref = fns["varlen_attn"]().float()
        rows = {}
        for label, fn in fns.items():
            try:
                out = fn().float().reshape(ref.shape)
                diff = float((out - ref).abs().max())
                rows[label] = {"us": round(timed(fn), 1), "max_abs_diff": diff} if diff < 1e-2 else {"diff": diff}
            except Exception as exc:  # a kernel this build or GPU lacks
                rows[label] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            print(f"  {name:18s} {label:20s} {rows[label]}")
        report["results"][name] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
