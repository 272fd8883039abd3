"""The heads the engine runs on each packed batch, built once from ST's own modules (vLLM's pooler shape: a
pooling method and the model's head). Each does what ST's modules do after the Transformer on a padded batch,
on packed hidden states (T, H)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import _compat
from ..engine.outputs import Tokens
from ..engine.pooling import Segments, pool
from ..engine.positions import last_tokens


@dataclass(frozen=True)
class EmbedOptions:
    """prompt_length: prompt tokens left out of pooling (include_prompt=False); truncate_dim / normalize: ST's
    encode arguments, applied after the modules, in ST's order."""

    prompt_length: int | None = None
    truncate_dim: int | None = None
    normalize: bool = False


def embed_head(modes: tuple[str, ...], post: list[torch.nn.Module]):
    """Segment pooling -> Dense / Normalize modules -> truncate -> normalize: (n, D) rows; for ragged calls
    (output_value="token_embeddings") every token's hidden state, as ST gives them."""

    def head(hidden: torch.Tensor, batch, call) -> torch.Tensor | Tokens:
        if call.outputs == "ragged":
            return Tokens(hidden, torch.from_numpy(batch.host_lengths))
        options: EmbedOptions = call.options
        features = {"sentence_embedding": pool(hidden, Segments.of(batch, options.prompt_length), modes)}
        for module in post:
            features = module(features)
        emb = features["sentence_embedding"]
        if options.truncate_dim is not None:
            emb = _compat.truncate_embeddings(emb, options.truncate_dim)
        return F.normalize(emb, p=2, dim=1) if options.normalize else emb

    return head


def score_head(model: torch.nn.Module, spec, post: list[torch.nn.Module], causal: bool):
    """Raw scores (n, labels) before ST's activation: an LM reranker's head at each pair's last token only, then
    its LogitScore; a classifier's own head at the positions it reads (the architecture spec's)."""
    if causal:

        def head(hidden: torch.Tensor, batch, call) -> torch.Tensor:
            features = {"causal_logits": model.lm_head(hidden[last_tokens(batch)])[:, None, :]}
            for module in post:
                features = module(features)
            return features["scores"]

        return head
    return lambda hidden, batch, call: spec.classify(model, hidden, batch)


@dataclass(frozen=True)
class MultiVectorOptions:
    task: str | None = None
    normalize: bool = False


def multi_vector_head(steps: list[torch.nn.Module]):
    """The modules after the Transformer on one packed batch (projection, scoring mask, normalise, token
    pooling) -> the kept token vectors and how many each input kept."""

    def head(hidden: torch.Tensor, batch, call) -> Tokens:
        task = call.options.task
        x, keep, seq_ids, n = hidden, None, batch.seq_ids, len(batch.indices)
        for module in steps:
            if type(module) is _compat.MultiVectorMask:
                # ST's own module on the packed row seen as a batch of one (skiplist, allowlist, task rules).
                mask = keep if keep is not None else torch.ones_like(batch.input_ids, dtype=torch.bool)
                keep = module({"input_ids": batch.input_ids[None], "attention_mask": mask[None]}, task=task)
                keep = keep["attention_mask"][0].bool()
            elif isinstance(module, _compat.BaseTokenPooling):
                if module.applies_to(task):
                    x, seq_ids = _token_pool(module, x, keep, seq_ids, n, task)
                    keep = None
            else:
                x = module({"token_embeddings": x})["token_embeddings"]
        if keep is not None:
            x, seq_ids = x[keep], seq_ids[keep]
        counts = torch.zeros(n, dtype=torch.int64, device=x.device).index_add_(0, seq_ids, torch.ones_like(seq_ids))
        return Tokens(F.normalize(x, p=2, dim=-1) if call.options.normalize else x, counts)

    return head


def _token_pool(module, x, keep, seq_ids, n: int, task):
    """Run a token pooling module's own forward on the batch re-padded (as ST calls it), then unpad."""
    if keep is not None:
        x, seq_ids = x[keep], seq_ids[keep]
    lengths = torch.zeros(n, dtype=torch.int64, device=x.device).index_add_(0, seq_ids, torch.ones_like(seq_ids))
    rows = torch.split(x, lengths.tolist())
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)
    mask = torch.arange(padded.shape[1], device=x.device)[None] < lengths[:, None]
    features = module({"token_embeddings": padded, "attention_mask": mask}, task=task)
    out_mask = features["attention_mask"].bool()
    out = features["token_embeddings"][out_mask]
    owners = torch.arange(n, device=x.device)[:, None].expand_as(out_mask)[out_mask]
    return out, owners
