"""Where the GPU time of st_backend's packed forward goes, by kernel family (torch.profiler, one warm call).

python benchmarks/kernel_profile.py MODEL_SIZE [--task embed|rerank] [--dtype bfloat16] [--compile [MODE]]
        [--num-texts 8000] [--no-kernels] [--json FILE]

Families: GEMM (cuBLAS / CUTLASS / Triton mm templates), attention (flash / varlen), fused elementwise (Triton
kernels Inductor generated), other (eager elementwise, copies, reductions).
"""

import argparse
import json
import re
import time

import torch

from st_backend import CrossEncoder, EngineConfig, SentenceTransformer
from st_backend.bench import RERANK_TEMPLATE, build_random_model, synthetic_corpus

FAMILIES = (
    ("attention", re.compile(r"flash|fmha|attention", re.I)),
    ("gemm", re.compile(r"gemm|cutlass|nvjet|sm90_xmma|sm80_xmma|triton_tem|_mm_|matmul|cublas", re.I)),
    ("fused (Triton)", re.compile(r"^triton_", re.I)),
)


def family(name: str) -> str:
    for label, pattern in FAMILIES:
        if pattern.search(name):
            return label
    return "other"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("size")
    p.add_argument("--task", default="embed", choices=("embed", "rerank"))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--compile", nargs="?", const=True, default=False)
    p.add_argument("--num-texts", type=int, default=8000)
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-kernels", action="store_true", help="EngineConfig(kernels=()): no fused kernels")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    texts = synthetic_corpus(args.num_texts)
    kernels = () if args.no_kernels else None
    config = EngineConfig(compile=args.compile, max_batch_tokens=args.max_batch_tokens, kernels=kernels)
    path = build_random_model(args.size, args.task)
    if args.task == "rerank":
        template = RERANK_TEMPLATE if args.size.startswith("qwen3") else None
        model = CrossEncoder(path, device=args.device, chat_template=template, engine=config)
        queries = synthetic_corpus(len(texts), median_words=6, sigma=0.3, seed=1)
        inputs = list(zip(queries, texts))

        def call():
            return model.predict(inputs, batch_size=4096, convert_to_tensor=True)

    else:
        model = SentenceTransformer(path, device=args.device, engine=config)

        def call():
            return model.encode(texts, batch_size=4096, convert_to_tensor=True)

    model.to(dtype)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    call()
    call()
    sync()
    start = time.perf_counter()
    call()
    sync()
    wall = time.perf_counter() - start
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
    ) as prof:
        call()
        sync()
    kernels: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time / 1e6
    total = sum(kernels.values())
    families: dict[str, float] = {}
    for name, seconds in kernels.items():
        families[family(name)] = families.get(family(name), 0.0) + seconds
    if args.task == "rerank":
        tokens = sum(len(ids) for ids in model.token_ids(inputs))
    else:
        tokens = int(sum(model.engine_for(None).tokenize(texts).lengths))
    report = {
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "size": args.size,
        "task": args.task,
        "dtype": args.dtype,
        "compile": args.compile,
        "kernels": model.engine_for(None).describe(torch.device(args.device))["kernels"]
        if args.task == "embed"
        else model.engine().describe(torch.device(args.device))["kernels"],
        "wall_s": wall,
        "gpu_kernel_s": total,
        "families_s": dict(sorted(families.items(), key=lambda kv: -kv[1])),
        "top_kernels_s": dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:25]),
    }
    print(f"{args.size} {args.task} {args.dtype} compile={args.compile} fused {report['kernels']}")
    print(f"  {tokens} tokens: wall {wall:.3f} s ({tokens / wall / 1e6:.3f} M tok/s), kernels {total:.3f} s")
    for label, seconds in report["families_s"].items():
        print(f"  {label:16s} {seconds:.3f} s  {100 * seconds / max(total, 1e-9):5.1f}%")
    for name, seconds in report["top_kernels_s"].items():
        print(f"    {seconds:.4f}  {name[:150]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
