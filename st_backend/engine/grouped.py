"""A runner for models that add a relative-position bias inside their own attention (MPNet, T5, DeBERTa-v2): no
varlen backend takes that bias, and a (T, T) bias over a 65k-token packed row would not fit in memory.

It splits a PackedBatch into buckets of near-equal length (sorted; padding at most PAD_SHARE of a bucket's grid,
or MIN_PAD_TOKENS where one more call costs more) and runs the unmodified model, with its own attention
implementation, on each bucket as a right-padded (n, L) batch with an attention mask, as ST's forward does: the
model computes its own positions and biases per bucket, so every real token's state is exactly ST's. The real
rows are gathered back into packed (T, H) order, so pooling and heads downstream never know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .architectures import ArchSpec
from .attention import AttentionBackend
from .packing import PackedBatch
from .prefix import PrefixCache
from .rewrites import compiled
from .runner import RUNNERS, ModelState

logger = logging.getLogger(__name__)

#: Most padding a bucket may hold, as a share of its (n, L) grid.
PAD_SHARE = 1 / 8
#: Padding a bucket may hold regardless of PAD_SHARE, per device type: on CUDA one more model call (~1 ms of
#: kernel launches) costs more than this many padded tokens; on CPU padding costs as much as real tokens.
MIN_PAD_TOKENS = {"cuda": 1024}
#: Most attention scores (n * heads * L * L) one bucket materializes: ST's default batch of 32 inputs of 512
#: tokens for a 16-head model. Eager attention holds a few tensors of that size per layer.
MAX_SCORES = 32 * 16 * 512 * 512


def length_groups(
    lengths: np.ndarray, heads: int = 1, pad_share: float = PAD_SHARE, min_pad: int = 0, max_scores: int = MAX_SCORES
) -> list[np.ndarray]:
    """Buckets of sequence indices (into ``lengths``), longest first: each a run of the length-sorted sequences
    whose padding to its longest stays within ``max(pad_share * grid, min_pad)`` tokens and whose attention scores
    within ``max_scores``. Empty sequences are in no bucket (they have no token to run)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    ordered = np.asarray(lengths, dtype=np.int64)[order]
    cum = np.concatenate([[0], np.cumsum(ordered)])
    groups, i, n = [], 0, int(np.count_nonzero(ordered))  # the empty ones sort last
    while i < n:
        longest = int(ordered[i])
        cap = min(n - i, max(1, max_scores // (heads * longest * longest)))
        size = np.arange(1, cap + 1)
        waste = size * longest - (cum[i + 1 : i + cap + 1] - cum[i])
        # Each shorter member adds more padding than the one before, so the sizes that fit form a prefix.
        fits = waste <= np.maximum(pad_share * size * longest, min_pad)
        take = cap if fits.all() else max(1, int(np.argmin(fits)))
        groups.append(order[i : i + take])
        i += take
    return groups


@dataclass(frozen=True)
class ModelAttention:
    """What ``runner.backend`` reports for a grouped runner: the model's own attention, no packed kernel."""

    name: str
    shared_prefix: bool = False


class GroupedRunner:
    """Same constructor and ``forward`` as PackedRunner; it takes no packed attention backend (None)."""

    label = "grouped by length, the model's own attention (relative position bias)"
    uses_backend = False  # RunnerCache probes no packed kernel for it
    graphs = None  # no CUDA graphs: its buckets' shapes change with every batch

    def __init__(
        self,
        model: torch.nn.Module,
        arch: ArchSpec,
        backend: AttentionBackend | None,
        compile: bool | str = False,
        rewrites: tuple[str, ...] = (),
        shared_prefix: bool = False,
    ) -> None:
        self.arch = arch
        # The user's model itself, not a view: nothing here changes its attention implementation.
        self.model = model
        self.state = ModelState(model)
        self.shares_prefixes = False  # a shared prefix's keys would need a packed kernel
        self.prefixes = PrefixCache(model)  # cleared by the engine each call, never filled
        config = model.config
        self.heads = int(getattr(config, "num_attention_heads", 1) or 1)
        self.hidden = int(config.hidden_size)
        self.pad_id = getattr(config, "pad_token_id", None) or 0
        self._call, self.rewrite_pass = compiled(model, compile, rewrites)
        logger.info("st_backend: %s runs %s (%s)", config.model_type, self.label, self.backend.name)

    @property
    def attn_name(self) -> str:
        return self.model.config._attn_implementation

    @property
    def backend(self) -> ModelAttention:
        return ModelAttention(f"grouped ({self.attn_name})")

    def plan(self, batch: PackedBatch, device: torch.device) -> list[Bucket]:
        """The batch's buckets; their index arrays are made on the host and moved in one copy."""
        lengths = batch.host_lengths
        starts = np.cumsum(lengths) - lengths
        shapes, parts = [], []
        for idx in length_groups(lengths, self.heads, min_pad=MIN_PAD_TOKENS.get(device.type, 0)):
            longest = int(lengths[idx[0]])
            cols = np.arange(longest)
            real = cols < lengths[idx][:, None]
            parts += [np.where(real, starts[idx][:, None] + cols, -1).ravel(), np.flatnonzero(real)]
            shapes.append((len(idx), longest, parts[-1].size))
        flat = torch.from_numpy(np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64))
        if device.type == "cuda":
            flat = flat.pin_memory()  # so that the copy is async: the host never waits for the previous batch
        pieces = flat.to(device, non_blocking=True).split([size for n, L, r in shapes for size in (n * L, r)])
        return [Bucket(n, L, pieces[2 * k], pieces[2 * k + 1]) for k, (n, L, _) in enumerate(shapes)]

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """-> (total_tokens, hidden) last hidden states in packed order."""
        if batch.kv_index is not None:
            raise RuntimeError("the grouped runner takes no shared prefix (shares_prefixes is False)")
        ids = batch.input_ids
        types = batch.token_type_ids if self.arch.token_type_ids else None
        if len(batch.host_lengths) == 1:  # one input (a single query): its own (1, L) call, nothing to gather
            kwargs = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]}
            if types is not None:
                kwargs["token_type_ids"] = types[None]
            return self._call(**kwargs, return_dict=True).last_hidden_state[0]
        dtype = next(self.model.parameters()).dtype
        out = torch.empty(batch.num_tokens, self.hidden, dtype=dtype, device=ids.device)
        for b in self.plan(batch, ids.device):
            real, source = b.source >= 0, b.source.clamp(min=0)
            kwargs = {
                "input_ids": torch.where(real, ids[source], self.pad_id).view(b.n, b.length),
                "attention_mask": real.view(b.n, b.length).long(),  # as ST's tokenizer pads: 1 real, 0 padding
            }
            if types is not None:
                kwargs["token_type_ids"] = torch.where(real, types[source], 0).view(b.n, b.length)
            hidden = self._call(**kwargs, return_dict=True).last_hidden_state.reshape(b.n * b.length, -1)
            out.index_copy_(0, b.source[b.keep], hidden.index_select(0, b.keep).to(out.dtype))
        return out


@dataclass(frozen=True)
class Bucket:
    """One right-padded (n, length) call: ``source`` (n * length,) the packed token of each grid cell, -1 for
    padding; ``keep`` the grid cells that are tokens."""

    n: int
    length: int
    source: torch.Tensor
    keep: torch.Tensor


RUNNERS["grouped"] = GroupedRunner
