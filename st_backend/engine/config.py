"""Engine settings: given once, at load, never through ``encode(**kwargs)`` (ST rejects unknown kwargs)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .attention import PRIORITY
from .kernels import FUSIONS
from .rewrites import REWRITES

ATTENTION_CHOICES = ("auto", *PRIORITY)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
CUDA_TOKEN_BUDGET = 65536  # best measured for BERT-base and Qwen3-0.6B on the H100 (the GPU issue's prototype)
MIN_CUDA_TOKEN_BUDGET = 2048
FREE_MEMORY_SHARE = 0.25
CORES = os.cpu_count() or 1  # read once: os.cpu_count() costs ~0.1 ms, and every call asks


@dataclass(frozen=True)
class EngineConfig:
    """How the packed engine batches and runs a model.

    max_batch_tokens: token budget of one packed batch (sum of real tokens, no padding); None: 4,096 on
        CPU, 65,536 on CUDA, less where a quarter of the free device memory cannot hold one layer's
        activations for that many tokens (see token_budget).
    max_batch_sequences: cap on sequences per batch; None: only the token budget limits a batch. ST's
        ``encode(batch_size=...)`` does not cap packed batches (its default of 32 would fill ~1% of the budget).
    attention: "auto" (probe and pick the fastest backend that works here), or one backend by name.
    dtype: cast the model to this dtype at load. None (default): what ST loaded, so outputs have ST's dtype
        (ST returns float16 arrays from a float16 model, which code written for float32 may not take). "auto": on
        a CUDA device at load, a model the engine runs (registered architecture) that ST loaded in float32 runs in
        float16, a decoder in bfloat16 where the GPU has it natively (decoders can overflow float16), as serving
        engines do; anything else keeps what ST loaded.
    xformers_torch_ops: allow xformers operators that run on PyTorch's own kernels when its compiled
        CUDA operators do not load (lifts xformers' build check; reported by ``st-backend info``).
    tokenizer_threads: worker threads that tokenize ahead of the GPU (None: one per tokenizer process, else 1).
        In-process, each call already spreads over every core through the tokenizers library's own thread pool;
        more callers only compete for it (measured on the H100 host, 16 cores, all-MiniLM-L6-v2 end to end:
        1 thread 2.47 M tokens/s, 2: 2.00 M, 4: 1.83 M). With that pool turned off (TOKENIZERS_PARALLELISM=false),
        None means one thread per core, up to 8.
    tokenizer_processes: worker processes that tokenize (each its own GIL, so converting ids to arrays does
        not hold up the thread launching GPU kernels); 0 tokenizes in-process. None: one per 4 cores, at most 4,
        on CUDA hosts of 8 cores or more, else 0 (CPU inference needs its cores for the model). Measured on the
        H100 host, 16 cores, all-MiniLM-L6-v2 end to end: 0: 2.15 M tokens/s, 2: 2.37 M, 4: 2.69 M, 8: 1.75 M.
    chunk_size: inputs per tokenization chunk on CUDA (on CPU everything is one chunk, sorted once); each chunk
        is cut into slices tokenized at once on every worker. None: 2,048, or 4,096 / processes (at least 256)
        with more than two tokenizer processes (1,024 with four: measured best on the H100 in BENCHMARKS.md
        round 7).
    compile: run the packed forward under ``torch.compile(dynamic=True)`` (the first batches pay the compile);
        a string is torch.compile's ``mode``: "default" or "max-autotune-no-cudagraphs" (the CUDA-graph modes
        reuse their output buffers at the next batch, while the engine keeps every batch's outputs).
    rewrites: graph rewrites applied when ``compile`` is on (``engine/rewrites.py``). None: those measured to pay
        on the device (on CUDA, Linear + GELU on eager PyTorch's kernels); () turns them off.
    kernels: fused kernels for the eager forward (``engine/kernels``: RMSNorm, SiLU-mul, rotary embeddings of
        Llama-style decoders). None: every fusion, on CUDA where Liger-Kernel is installed and matches the
        reference on a test tensor; () turns them off; names force those (with plain PyTorch where no kernel library
        runs: what CPU tests use). Not with ``compile`` (Inductor fuses these itself).
    cuda_graphs: on CUDA, replay a captured CUDA graph of the forward for small batches (up to 2,048 tokens and
        64 inputs, padded to a bucket by filler sequences attention keeps apart: engine/graphs.py), as serving
        engines do for decode steps; one query per call is then no longer launch-bound. A bucket is captured
        at its third batch. Not with ``compile``. False runs every batch eagerly.
    shared_prefix: run the head every input of a call starts with once per call and reuse its keys/values in
        every input's attention (vLLM's prefix caching): causal LM rerankers with a score template, and causal
        embedders pooled at the last token with a prompt or template.
    packed: False runs every call on sentence-transformers' own path (the fallback), as a baseline: same results,
        ST's speed (``st-backend bench --fallback`` measures what the wrapper costs there).
    profile: time each call's stages (tokenize, pack, wait, GPU compute, copy back) into ``engine.last_profile``.
    """

    max_batch_tokens: int | None = None
    max_batch_sequences: int | None = None
    attention: str = "auto"
    dtype: torch.dtype | str | None = None
    xformers_torch_ops: bool = False
    tokenizer_threads: int | None = None
    tokenizer_processes: int | None = None
    chunk_size: int | None = None
    compile: bool | str = False
    rewrites: tuple[str, ...] | None = None
    kernels: tuple[str, ...] | None = None
    shared_prefix: bool = True
    cuda_graphs: bool = True
    profile: bool = False
    packed: bool = True

    def __post_init__(self) -> None:
        # Refuse nonsense here, naming the field, the value and what is accepted, not at the first call (a float
        # budget, a string count or a non-floating dtype would fail deep in the engine, or quietly do the wrong
        # thing). Numpy integers and booleans count, and are stored as Python ones.
        for name, least in (
            ("max_batch_tokens", 1),
            ("max_batch_sequences", 1),
            ("tokenizer_threads", 1),
            ("tokenizer_processes", 0),
            ("chunk_size", 1),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_int(value) or value < least:
                raise ValueError(f"EngineConfig.{name} must be an integer >= {least} or None, got {_shown(value)}")
            object.__setattr__(self, name, int(value))
        for name in ("xformers_torch_ops", "shared_prefix", "cuda_graphs", "profile", "packed"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise ValueError(f"EngineConfig.{name} must be True or False, got {_shown(value)}")
            object.__setattr__(self, name, bool(value))
        if isinstance(self.compile, str):
            if self.compile not in COMPILE_MODES:
                raise ValueError(
                    f"EngineConfig.compile mode {self.compile!r} is not supported; use True or one of {COMPILE_MODES} "
                    "(CUDA-graph modes overwrite a batch's outputs at the next batch)"
                )
        elif isinstance(self.compile, bool | np.bool_):
            object.__setattr__(self, "compile", bool(self.compile))
        else:
            raise ValueError(
                f"EngineConfig.compile must be True, False or a torch.compile mode in {COMPILE_MODES}, "
                f"got {_shown(self.compile)}"
            )
        if self.rewrites is not None:
            object.__setattr__(self, "rewrites", _names("rewrites", self.rewrites, tuple(REWRITES)))
        if self.kernels is not None:
            object.__setattr__(self, "kernels", _names("kernels", self.kernels, tuple(FUSIONS)))
        if not isinstance(self.attention, str) or self.attention not in ATTENTION_CHOICES:
            raise ValueError(
                f"EngineConfig.attention must be a string, one of {ATTENTION_CHOICES}, got {_shown(self.attention)}"
            )
        object.__setattr__(self, "dtype", _float_dtype(self.dtype))

    def load_dtype(self, device: torch.device, causal: bool, loaded: torch.dtype) -> torch.dtype | None:
        """The dtype a freshly loaded model is cast to (None: keep ``loaded``)."""
        if self.dtype != "auto":
            return self.dtype
        if device.type != "cuda" or loaded != torch.float32:
            return None
        if causal and torch.cuda.get_device_capability(device)[0] >= 8:  # native bfloat16 (Ampere and later)
            return torch.bfloat16
        return torch.float16

    def check_attention(self, model: torch.nn.Module) -> None:
        """Raise ValueError at load when the attention backend asked for by name cannot run on the model's device
        and dtype, with the backend's own reasons (the probe's layer checks follow at the first call)."""
        params = next(model.parameters(), None)
        if self.attention == "auto" or params is None:
            return
        from .attention import make_backend

        reason = make_backend(self.attention, self.xformers_torch_ops).why_not(params.device, params.dtype)
        if reason is not None:
            raise ValueError(
                f"EngineConfig.attention={self.attention!r} cannot run on {params.device} / {params.dtype}: {reason}. "
                "Use attention='auto' to let the probe choose (`st-backend info` lists every backend and why)."
            )

    def cast(self, model: torch.nn.Module) -> None:
        """Cast a freshly loaded ST model as ``dtype`` says ("auto": its device and architecture decide)."""
        params = next(model.parameters(), None)
        if params is None or self.dtype is None:
            return
        from transformers import PretrainedConfig

        from .architectures import spec_for

        if self.dtype == "auto" and getattr(model, "_placement_is_delegated", False):
            return  # a device_map spreads the model: leave its placement and dtypes to it
        configs = (getattr(m, "config", None) for m in model.modules())
        hf_config = next((c for c in configs if isinstance(c, PretrainedConfig)), None)
        spec = spec_for(hf_config) if hf_config is not None else None
        if self.dtype == "auto" and spec is None:
            return  # not an architecture the engine runs: plain ST runs it, in ST's dtype
        target = self.load_dtype(params.device, bool(spec and spec.causal), params.dtype)
        if target is not None and target != params.dtype:
            model.to(target)

    def token_budget(self, device: torch.device, model_config=None, dtype: torch.dtype | None = None) -> int:
        """Tokens per packed batch: max_batch_tokens if set; on CPU 4,096 (the reference backend pads inside
        attention, and smaller batches measured faster there); on CUDA 65,536, or fewer when one layer's
        activations for that many tokens would take more than a quarter of the device's free memory."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        if device.type != "cuda":
            return 4096
        hidden = getattr(model_config, "hidden_size", None)
        if not hidden:
            return CUDA_TOKEN_BUDGET
        intermediate = getattr(model_config, "intermediate_size", None) or 4 * hidden
        itemsize = torch.empty(0, dtype=dtype or torch.float16).element_size()
        # Live at once in one layer: residual, normed input, q/k/v, attention output (~6 x hidden), and the
        # MLP's up / gate / activation (~3 x intermediate).
        per_token = itemsize * (6 * hidden + 3 * intermediate)
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's own cache
        fits = int(free * FREE_MEMORY_SHARE // per_token) // 1024 * 1024
        return max(MIN_CUDA_TOKEN_BUDGET, min(CUDA_TOKEN_BUDGET, fits))

    def processes(self, device: torch.device) -> int:
        """How many tokenizer worker processes feed ``device`` (0: tokenize in-process)."""
        if self.tokenizer_processes is not None:
            return self.tokenizer_processes
        cores = CORES
        return min(4, cores // 4) if device.type == "cuda" and cores >= 8 else 0

    def feeding(self, device: torch.device) -> dict:
        """How packed_batches feeds ``device``: threads, chunks and pinned memory on CUDA only. With worker
        processes, one thread per process keeps each of them busy."""
        processes = self.processes(device)
        if device.type != "cuda":
            return {"chunk_size": None, "threads": 1, "pin": False}
        pooled = os.environ.get("TOKENIZERS_PARALLELISM", "true").lower() not in ("0", "false", "off", "no")
        threads = self.tokenizer_threads or processes or (1 if pooled else max(1, min(8, CORES)))
        chunk = self.chunk_size or (2048 if processes <= 2 else max(256, 4096 // processes))
        return {"chunk_size": chunk, "threads": threads, "pin": True}

    def rayon_threads(self, device: torch.device) -> int | None:
        """Rust threads per tokenizer process: the cores left after the feeding threads, shared out."""
        processes = self.processes(device)
        if not processes:
            return None
        return max(1, ((CORES) - 2) // processes)


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _names(field: str, value: object, known: tuple[str, ...]) -> tuple[str, ...]:
    """A field holding a sequence of registered names, as a tuple; a clear error naming the field otherwise."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(
            f"EngineConfig.{field} must be a sequence of names (a tuple or list, () for none) or None (the device's "
            f"default), got {_shown(value)}; known: {known}"
        )
    names = tuple(value)
    unknown = [name for name in names if not isinstance(name, str) or name not in known]
    if unknown:
        raise ValueError(f"EngineConfig.{field} {unknown} are unknown; known: {known}")
    return names


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _shown(value: object) -> str:
    return f"{value!r:.80} ({type(value).__name__})"


def _float_dtype(dtype: object) -> torch.dtype | str | None:
    """``EngineConfig.dtype`` as stored: None, "auto", or a floating torch.dtype (names resolved)."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return dtype
    resolved = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if isinstance(resolved, torch.dtype) and resolved in FLOAT_DTYPES:
        return resolved
    unknown = isinstance(dtype, str) and not isinstance(resolved, torch.dtype)
    what = "is not a torch dtype name" if unknown else "is not a floating dtype a model can run in"
    raise ValueError(
        f"EngineConfig.dtype {_shown(dtype)} {what}; use None (ST's dtype), 'auto', or one of "
        f"{[str(d).removeprefix('torch.') for d in FLOAT_DTYPES]} (a torch.dtype or its name)"
    )
