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


# -- SPLADE (SparseEncoder): the model's own masked-LM head, SpladePooling's activation and pooling ----------------

#: Logits one step of the sparse head holds at most ((tokens x vocab) elements): a chunk of a batch's tokens goes
#: through the MLM head at a time, so memory stays bounded whatever the token budget (549 tokens of a 30,522 vocab).
MAX_LOGITS = 1 << 24

#: What each transformers ``*ForMaskedLM`` class computes after its base model (its forward, as written there).
MLM_HEADS = {
    "BertForMaskedLM": lambda m, h: m.cls(h),
    "DistilBertForMaskedLM": lambda m, h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h)))),
    "ElectraForMaskedLM": lambda m, h: m.generator_lm_head(m.generator_predictions(h)),
    "RobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "XLMRobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "CamembertForMaskedLM": lambda m, h: m.lm_head(h),
    "MPNetForMaskedLM": lambda m, h: m.lm_head(h),
    "ModernBertForMaskedLM": lambda m, h: m.decoder(m.head(h)),
}


@dataclass(frozen=True)
class SparseOptions:
    """ST's SparseEncoder arguments the head applies per batch, as ST applies them per batch: max_active_dims
    (keep each row's largest values, ST's own select_max_active_dims); sparse: rows as 1D sparse COO tensors
    (convert_to_sparse_tensor), else dense (n, vocab) rows; to_cpu: sparse rows moved to the CPU (save_to_cpu)."""

    max_active_dims: int | None = None
    sparse: bool = True
    to_cpu: bool = False


def _splade_runs(lengths, step: int):
    """(first input, end input, first token, end token) of runs of whole inputs of at most ``step`` tokens, in the
    batch's order; an input longer than ``step`` is a run of its own (its tokens are then taken ``step`` at a time)."""
    import numpy as np

    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    i = 0
    while i < len(lengths):
        j = max(int(np.searchsorted(starts, starts[i] + step, side="right")) - 1, i + 1)
        yield i, j, int(starts[i]), int(starts[j])
        i = j


def sparse_head(model: torch.nn.Module, pooling_strategy: str, activation_function: str):
    """SPLADE on packed hidden states: ``model``'s own MLM head (MLM_HEADS) on real tokens only, a chunk of at most
    MAX_LOGITS logits at a time, then SpladePooling's ``log1p(relu(x))`` (twice log1p for ``log1p_relu``) and its
    max or sum per input, never a padded (batch x length x vocab) tensor -> a list of n 1D sparse rows, or (n, vocab).

    Max pooling takes each input's largest logit first and activates only the (n, vocab) result: the activation
    is monotonic, so that is the same value as ST's max of activated logits, for 1/length of the activation work.
    Sums accumulate in fp32."""
    from sentence_transformers.util import select_max_active_dims

    logits_of = MLM_HEADS[type(model).__name__]
    summing = pooling_strategy == "sum"

    def activate(x: torch.Tensor) -> torch.Tensor:  # in place, as SpladePooling in eval mode
        x = x.relu_().log1p_()
        return x.log1p_() if activation_function == "log1p_relu" else x

    def pooled(hidden: torch.Tensor, seq_ids: torch.Tensor, run: tuple[int, int, int, int], step: int):
        first, end, a, b = run
        if end - first > 1:  # whole inputs, within one chunk
            logits = logits_of(model, hidden[a:b])
            owners = seq_ids[a:b] - first
            if summing:
                out = logits.new_zeros((end - first, logits.shape[1]), dtype=_acc(logits))
                return out.index_add_(0, owners, activate(logits).to(out.dtype)).to(logits.dtype)
            out = logits.new_full((end - first, logits.shape[1]), float("-inf"))
            return activate(out.scatter_reduce_(0, owners[:, None].expand_as(logits), logits, reduce="amax"))
        out = None
        for s in range(a, b, step):  # one input, possibly longer than a chunk
            logits = logits_of(model, hidden[s : min(s + step, b)])
            part = activate(logits).sum(0, keepdim=True, dtype=_acc(logits)) if summing else logits.amax(0, True)
            out = part if out is None else (out + part if summing else torch.maximum(out, part))
        return out.to(logits.dtype) if summing else activate(out)

    def head(hidden: torch.Tensor, batch, call) -> list | torch.Tensor:
        options: SparseOptions = call.options
        step = max(1, MAX_LOGITS // model.get_output_embeddings().out_features)
        rows: list = []
        for run in _splade_runs(batch.host_lengths, step):
            emb = pooled(hidden, batch.seq_ids, run, step)
            if options.max_active_dims is not None:
                emb = select_max_active_dims(emb, max_active_dims=options.max_active_dims)
            if options.sparse:  # as ST: each chunk's rows made sparse (and moved) before the next is computed
                emb = emb.to_sparse()
                rows.extend(emb.cpu() if options.to_cpu else emb)
            else:
                rows.append(emb)
        return rows if options.sparse else torch.cat(rows)

    return head


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
