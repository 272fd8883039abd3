"""Segment pooling on packed states against ST's own Pooling on the padded equivalent."""

import numpy as np
import pytest
import torch
from sentence_transformers.models import Pooling

from st_backend.engine.packing import pack
from st_backend.engine.pooling import POOLERS, Segments, pool


def packed(lengths):
    return pack([np.zeros(n, dtype=np.int64) for n in lengths], None, np.arange(len(lengths)))


MODES = list(POOLERS) + [("cls", "mean", "max")]


def padded(x, lengths, left):
    n, width = len(lengths), max(lengths)
    out = torch.zeros(n, width, x.shape[-1], dtype=x.dtype)
    mask = torch.zeros(n, width, dtype=torch.int64)
    start = 0
    for i, length in enumerate(lengths):
        sl = slice(width - length, width) if left else slice(0, length)
        out[i, sl] = x[start : start + length]
        mask[i, sl] = 1
        start += length
    return out, mask


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("prompt_length", [None, 2, 5])
@pytest.mark.parametrize("left", [False, True])
def test_pooling_matches_st_padded(mode, prompt_length, left):
    gen = torch.Generator().manual_seed(0)
    lengths = [1, 6, 3, 5, 12, 2]
    if left and "cls" in mode:
        # ST's left-padded cls over a sequence the prompt fills entirely reads a pad position: no
        # packed layout has one, so compare only sequences longer than the prompt there.
        lengths = [6, 7, 9, 12, 8, 6]
    x = torch.randn(sum(lengths), 8, generator=gen)
    modes = (mode,) if isinstance(mode, str) else mode
    got = pool(x, Segments.of(packed(lengths), prompt_length), modes)

    st_pool = Pooling(8, pooling_mode=mode, include_prompt=prompt_length is None)
    tokens, mask = padded(x, lengths, left)
    features = {"token_embeddings": tokens, "attention_mask": mask}
    if prompt_length is not None:
        features["prompt_length"] = prompt_length
    want = st_pool(features)["sentence_embedding"]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_half_precision_accumulates_in_fp32():
    x = torch.full((4096, 4), 1.0009765625, dtype=torch.float16)  # sum overflows nothing in fp32
    out = pool(x, Segments.of(packed([4096])), ("mean",))
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), torch.full((1, 4), 1.0009765625), atol=1e-3)
