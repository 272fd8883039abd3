"""CUDA graphs for small packed batches.

One query per call is launch and Python overhead, not arithmetic: transformers' eager forward of a six-layer
encoder launches over a hundred kernels from Python. A small batch is padded to a bucket (tokens, sequences)
with filler sequences of its own, which the packed attention keeps apart from the real ones, so the real rows
are those of the unpadded batch up to rounding; one captured graph per bucket is then replayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Steps of 1.5x past 512 tokens: padding a compute-bound batch costs its share of arithmetic. Up to 64 inputs and
# 2048 tokens covers a 32-sentence server request and the merged calls of a lightly loaded server.
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048)
SEQUENCE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# A bucket is captured at its third batch, so a large call's one-off tail batch never pays a capture.
CAPTURE_AFTER = 2
# The model's inputs a graph holds a static copy of (each (1, tokens)); a batch with any other tensor input
# (a shared prefix's keys) runs eagerly.
TOKEN_INPUTS = ("input_ids", "position_ids", "token_type_ids")
LAYOUT_INPUTS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def bucket(tokens: int, sequences: int) -> tuple[int, int] | None:
    """The (tokens, sequences) a batch is padded to, or None when it is too large for a graph. Each filler
    sequence holds at least one token: tokens + filler sequences must fit."""
    seqs = next((b for b in SEQUENCE_BUCKETS if b >= sequences), None)
    if seqs is None:
        return None
    need = tokens + seqs - sequences + 1
    size = next((b for b in TOKEN_BUCKETS if b >= need), None)
    return None if size is None else (size, seqs)


def padded_cu_seqlens(lengths: np.ndarray, tokens: int, sequences: int) -> np.ndarray:
    """(sequences + 2,) int32 offsets: the real inputs', then ``sequences - len(lengths)`` one-token fillers,
    then one filler holding the rest of the ``tokens``."""
    real = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=real[1:])
    fillers = real[-1] + np.arange(1, sequences - len(lengths) + 1, dtype=np.int64)
    return np.concatenate([real, fillers, [tokens]]).astype(np.int32)


class StaticInputs:
    """The fixed-shape inputs of one bucket: a batch's token inputs copied into the first rows, the layout
    covering the filler rows. Also what a CPU test runs eagerly to check that fillers leave real rows alone."""

    def __init__(self, kwargs: dict, tokens: int, sequences: int, device: torch.device) -> None:
        self.tokens, self.sequences = tokens, sequences
        self.tensors = {
            name: torch.zeros((1, tokens), dtype=kwargs[name].dtype, device=device)
            for name in TOKEN_INPUTS
            if name in kwargs
        }
        self.cu = torch.zeros(sequences + 2, dtype=torch.int32, device=device)
        self.extra = {k: v for k, v in kwargs.items() if k not in self.tensors and k not in LAYOUT_INPUTS}

    @staticmethod
    def fits(kwargs: dict) -> bool:
        """Whether a graph can take these inputs: the token inputs, the layout and plain flags, nothing else (a
        shared prefix's keys are lists of tensors)."""
        return all(k in TOKEN_INPUTS or k in LAYOUT_INPUTS or isinstance(v, bool | None) for k, v in kwargs.items())

    def fill(self, kwargs: dict, lengths: np.ndarray, n: int) -> None:
        """Copy a batch of ``n`` real tokens (``lengths`` per input) into the bucket's first rows."""
        for name, static in self.tensors.items():
            static[:, :n].copy_(kwargs[name])
        self.cu.copy_(torch.from_numpy(padded_cu_seqlens(lengths, self.tokens, self.sequences)))

    @property
    def kwargs(self) -> dict:
        layout = {"cu_seq_lens_q": self.cu, "cu_seq_lens_k": self.cu}
        return {**self.tensors, **layout, "max_length_q": self.tokens, "max_length_k": self.tokens, **self.extra}


class _Graph:
    """One captured forward over filled StaticInputs."""

    def __init__(self, call, inputs: StaticInputs, device: torch.device, pool) -> None:
        self.inputs = inputs
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the capture (cuBLAS workspaces, lazy inits)
            for _ in range(2):
                call(**inputs.kwargs, return_dict=True)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: tokenizer threads pinning memory meanwhile do not break the capture.
        # One memory pool for all of a runner's graphs (as vLLM shares one): they replay one at a time under the
        # lock and each output is copied before the next replay, so a graph may reuse what another freed.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.output = call(**inputs.kwargs, return_dict=True).last_hidden_state[0]

    def run(self, kwargs: dict, lengths: np.ndarray, n: int) -> torch.Tensor:
        self.inputs.fill(kwargs, lengths, n)
        self.graph.replay()
        # The graph's output buffer is overwritten at its next replay: the caller keeps a copy.
        return self.output[:n].clone()


class CudaGraphs:
    """Captured forwards of one runner's model, one per bucket and set of inputs; None from ``run`` means run
    eagerly. A failed capture turns graphs off for the runner (``reason`` says why, as the engine's describe()
    does for bench and the server's /info)."""

    def __init__(self, call, device: torch.device) -> None:
        self.call = call
        self.device = device
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: Counter = Counter()
        self.replays = 0
        self.capture_seconds = 0.0
        self.reason: str | None = None
        self.pool = None  # the graphs' shared memory pool, made at the first capture
        self._lock = threading.Lock()  # one replay at a time: the static buffers are shared
        # A graph reads the weights at the addresses it was captured with: ``param.data = new`` (same Parameter,
        # new storage) would replay stale memory, so the addresses are checked before a replay.
        self._tensors = [*call.parameters(), *call.buffers()] if isinstance(call, torch.nn.Module) else []
        self._addresses = self._now()
        self.recaptures = 0

    def _now(self) -> list[int]:
        return [t.data_ptr() for t in self._tensors]

    def _check_weights(self) -> None:
        """Drop every captured graph when a weight's storage moved since capture (they are captured again)."""
        if self.graphs and self._now() != self._addresses:
            self.graphs.clear()
            self.seen.clear()
            self.pool = None
            self.recaptures += 1
        if not self.graphs:
            self._addresses = self._now()

    def run(self, kwargs: dict, lengths: np.ndarray, tokens: int) -> torch.Tensor | None:
        """The last hidden state of the batch's ``tokens`` real tokens from a replay, or None: run it eagerly."""
        if self.reason is not None or not StaticInputs.fits(kwargs):
            return None
        # The lock orders launches, not the device's work: replays on two streams could overlap in the shared pool.
        if torch.cuda.current_stream(self.device) != torch.cuda.default_stream(self.device):
            return None
        size = bucket(tokens, len(lengths))
        if size is None:
            return None
        key = (*size, tuple(sorted(k for k in TOKEN_INPUTS if k in kwargs)))
        with self._lock:
            self._check_weights()
            graph = self.graphs.get(key)
            if graph is None:
                self.seen[key] += 1
                if self.seen[key] <= CAPTURE_AFTER:
                    return None
                start = time.perf_counter()
                try:
                    inputs = StaticInputs(kwargs, *size, self.device)
                    inputs.fill(kwargs, lengths, tokens)
                    if self.pool is None:
                        self.pool = torch.cuda.graph_pool_handle()
                    graph = self.graphs[key] = _Graph(self.call, inputs, self.device, self.pool)
                except Exception as exc:  # the model does something a graph cannot hold (a host sync, say)
                    self.reason = f"capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                    logger.warning("st_backend: CUDA graphs off for this model: %s", self.reason)
                    return None
                finally:
                    self.capture_seconds += time.perf_counter() - start
            self.replays += 1
            return graph.run(kwargs, lengths, tokens)

    def describe(self) -> str:
        if self.reason is not None:
            return f"off: {self.reason}"
        again = f", captured again {self.recaptures}x after weights moved" if self.recaptures else ""
        return f"on ({len(self.graphs)} captured in {self.capture_seconds:.2f} s, {self.replays} replays{again})"
