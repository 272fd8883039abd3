"""Time linear + bias + exact GELU: cuBLAS + a separate GELU kernel (eager and Inductor) against the fused
Triton kernel (st_backend/engine/kernels/linear_gelu.py) under several tile configs, and a TMA variant.

python benchmarks/gelu_probe.py [--json FILE]

Each output is compared with an fp32 reference; a config that fails or is wrong is reported, not timed.
"""

import argparse
import json

import torch
import torch.nn.functional as F

from st_backend.engine.kernels.linear_gelu import TileConfig, linear_gelu_triton

SHAPES = {"bert-base": (768, 3072), "all-MiniLM-L6-v2": (384, 1536), "bert-large": (1024, 4096)}
TILES = [
    TileConfig(128, 256, 64, 8, 3, 8),
    TileConfig(128, 256, 64, 8, 4, 8),
    TileConfig(128, 128, 64, 8, 4, 4),
    TileConfig(128, 128, 64, 8, 4, 8),
    TileConfig(128, 128, 64, 8, 5, 8),
    TileConfig(256, 128, 64, 8, 3, 8),
    TileConfig(64, 256, 64, 8, 4, 4),
    TileConfig(128, 256, 32, 8, 4, 8),
    TileConfig(128, 128, 128, 8, 3, 8),
]


def tma_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def k(
        x_desc, w_desc, b_ptr, y_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GM: tl.constexpr
    ):
        pid = tl.program_id(0)
        npm = tl.cdiv(M, BM)
        npn = tl.cdiv(N, BN)
        ing = GM * npn
        fm = (pid // ing) * GM
        gs = min(npm - fm, GM)
        pm = fm + (pid % ing) % gs
        pn = (pid % ing) // gs
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for kk in range(0, K, BK):
            a = x_desc.load([pm * BM, kk])
            b = w_desc.load([pn * BN, kk])
            acc = tl.dot(a, b.T, acc)
        offs_n = pn * BN + tl.arange(0, BN)
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        y = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        y_desc.store([pm * BM, pn * BN], y.to(y_desc.dtype))

    return k


def tma_call(x, w, b, bm, bn, bk, stages, warps):
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = x.shape
    N = w.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    xd = TensorDescriptor.from_tensor(x, [bm, bk])
    wd = TensorDescriptor.from_tensor(w, [bn, bk])
    yd = TensorDescriptor.from_tensor(y, [bm, bn])
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    tma_kernel_cached[grid](xd, wd, b, yd, M, N, K, BM=bm, BN=bn, BK=bk, GM=8, num_stages=stages, num_warps=warps)
    return y


tma_kernel_cached = None
FULL = False


def persistent_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def pid_of(tile_id, in_group, npm, GM: tl.constexpr):
        fm = (tile_id // in_group) * GM
        gs = min(npm - fm, GM)
        return fm + (tile_id % gs), (tile_id % in_group) // gs

    @triton.jit
    def k(
        x_desc, w_desc, b_ptr, y_desc, M, N, K,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GM: tl.constexpr,
        NUM_SMS: tl.constexpr, SUBTILE: tl.constexpr, FLATTEN: tl.constexpr,
    ):  # fmt: skip
        start = tl.program_id(0)
        npm = tl.cdiv(M, BM)
        npn = tl.cdiv(N, BN)
        k_tiles = tl.cdiv(K, BK)
        num_tiles = npm * npn
        in_group = GM * npn
        tile_c = start - NUM_SMS
        for tile_id in tl.range(start, num_tiles, NUM_SMS, flatten=FLATTEN):
            pm, pn = pid_of(tile_id, in_group, npm, GM)
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for ki in range(k_tiles):
                a = x_desc.load([pm * BM, ki * BK])
                b = w_desc.load([pn * BN, ki * BK])
                acc = tl.dot(a, b.T, acc)
            tile_c += NUM_SMS
            pm, pn = pid_of(tile_c, in_group, npm, GM)
            offs_n = pn * BN + tl.arange(0, BN)
            acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
            y = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
            if SUBTILE:
                y = tl.permute(tl.reshape(y, (BM, 2, BN // 2)), (0, 2, 1))
                y0, y1 = tl.split(y)
                y_desc.store([pm * BM, pn * BN], y0.to(y_desc.dtype))
                y_desc.store([pm * BM, pn * BN + BN // 2], y1.to(y_desc.dtype))
            else:
                y_desc.store([pm * BM, pn * BN], y.to(y_desc.dtype))

    return k


persistent_cached = None
NUM_SMS = None


def persistent_call(x, w, b, bm, bn, bk, stages, warps, subtile, flatten):
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = x.shape
    N = w.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    xd = TensorDescriptor.from_tensor(x, [bm, bk])
    wd = TensorDescriptor.from_tensor(w, [bn, bk])
    yd = TensorDescriptor.from_tensor(y, [bm, bn // 2 if subtile else bn])
    grid = (min(NUM_SMS, triton.cdiv(M, bm) * triton.cdiv(N, bn)),)
    persistent_cached[grid](
        xd, wd, b, yd, M, N, K, BM=bm, BN=bn, BK=bk, GM=8, NUM_SMS=NUM_SMS, SUBTILE=subtile, FLATTEN=flatten,
        num_stages=stages, num_warps=warps,
    )  # fmt: skip
    return y


def candidates(x, w, b, compiled) -> dict:
    cands = {"eager cuBLAS + gelu": lambda: F.gelu(F.linear(x, w, b)), "inductor": lambda: compiled(x, w, b)}
    for t in TILES if FULL else TILES[:1]:
        label = f"triton {t.block_m}x{t.block_n}x{t.block_k} s{t.num_stages} w{t.num_warps}"
        cands[label] = lambda t=t: linear_gelu_triton(x, w, b, t)
    cands["cuBLAS addmm only (no gelu)"] = lambda: torch.addmm(b, x, w.t())
    if persistent_cached is not None:
        for cfg in [
            (128, 256, 64, 3, 8, True, True),
            (128, 256, 64, 3, 8, False, True),
            (128, 256, 64, 4, 8, True, True),
            (128, 256, 64, 3, 8, True, False),
            (128, 128, 64, 4, 8, True, True),
            (128, 128, 64, 4, 4, True, True),
            (128, 128, 128, 3, 8, True, True),
            (256, 128, 64, 3, 8, True, True),
        ]:
            cands["persistent {}x{}x{} s{} w{} sub{} fl{}".format(*cfg)] = lambda cfg=cfg: persistent_call(
                x, w, b, *cfg
            )
    if tma_kernel_cached is not None:
        for cfg in [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 8), (128, 128, 64, 5, 4)]:
            cands["tma {}x{}x{} s{} w{}".format(*cfg)] = lambda cfg=cfg: tma_call(x, w, b, *cfg)
    return cands


def timed(fn, iters: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters * 1000


def main() -> None:
    global tma_kernel_cached
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--tokens", default="50000,7190,1")
    args = parser.parse_args()
    import triton

    print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}")
    global persistent_cached, NUM_SMS
    NUM_SMS = torch.cuda.get_device_properties(0).multi_processor_count
    try:
        persistent_cached = persistent_kernel()
    except Exception as exc:
        print(f"no persistent variant: {type(exc).__name__}: {exc}")
    try:
        tma_kernel_cached = tma_kernel()
    except Exception as exc:
        print(f"no TMA variant: {type(exc).__name__}: {exc}")
    results = []
    compiled = torch.compile(lambda x, w, b: F.gelu(F.linear(x, w, b)), dynamic=True)
    for name, (k, n) in SHAPES.items():
        for m in [int(t) for t in args.tokens.split(",")]:
            gen = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            w = (torch.randn(n, k, device="cuda", generator=gen) * k**-0.5).half()
            b = (torch.randn(n, device="cuda", generator=gen) * 0.1).half()
            ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
            flop = 2 * m * k * n
            cands = candidates(x, w, b, compiled)
            for label, fn in cands.items():
                try:
                    err = (fn().float() - ref).abs().max().item()
                    us = timed(fn)
                except Exception as exc:
                    print(f"{name:18s} M={m:6d} {label:34s} failed: {type(exc).__name__}: {str(exc)[:150]}")
                    continue
                tf = flop / us / 1e6
                print(f"{name:18s} M={m:6d} {label:42s} {us:9.1f} us {tf:6.0f} TFLOP/s  max err {err:.2e}")
                results.append({"shape": name, "M": m, "kernel": label, "us": us, "tflops": tf, "max_err": err})
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
