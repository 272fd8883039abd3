"""Comparing st_backend outputs with plain ST's: the one set of tolerances every test uses."""

from __future__ import annotations

import numpy as np
import torch

MIN_COSINE = 0.99999
MAX_ABS = 1e-5


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def assert_rows_close(got, want, *, min_cosine=MIN_COSINE, max_abs=MAX_ABS, what="embeddings") -> None:
    """Same shape; per row cosine >= min_cosine and |diff| <= max_abs (relative to the row's scale)."""
    g, w = _np(got).astype(np.float64), _np(want).astype(np.float64)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
    g2, w2 = g.reshape(len(g), -1) if g.ndim else g, w.reshape(len(w), -1) if w.ndim else w
    # Degenerate rows (max pooling over no token: -inf; normalised: NaN) must be degenerate in both.
    inf, nan = np.isinf(w2), np.isnan(w2)
    assert np.array_equal(np.isinf(g2), inf) and np.array_equal(g2[inf], w2[inf]), f"{what}: infinities differ"
    assert np.array_equal(np.isnan(g2), nan), f"{what}: NaNs differ"
    g2, w2 = np.where(inf | nan, 0, g2), np.where(inf | nan, 0, w2)
    scale = np.maximum(1.0, np.abs(w2).max(axis=-1, keepdims=True))
    diff = np.abs(g2 - w2) / scale
    assert diff.max(initial=0) <= max_abs, f"{what}: max abs diff {diff.max():.3g} > {max_abs}"
    norms = np.linalg.norm(g2, axis=-1) * np.linalg.norm(w2, axis=-1)
    nz = norms > 0
    cos = (g2 * w2).sum(-1)[nz] / norms[nz]
    assert cos.min(initial=1) >= min_cosine, f"{what}: min cosine {cos.min():.8f} < {min_cosine}"
    assert np.array_equal(norms > 0, (np.linalg.norm(w2, axis=-1) > 0)), f"{what}: zero rows differ"


def assert_same_output(got, want, what="output", precision="float32") -> None:
    """Equal structure, type, shapes, dtypes and devices; values within the tolerances above (for
    quantized precisions, structure only)."""
    assert type(got) is type(want), f"{what}: type {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{what}: {len(got)} items != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_output(g, w, f"{what}[{i}]", precision)
        return
    if isinstance(want, dict):
        assert set(got) == set(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same_output(got[key], want[key], f"{what}[{key!r}]", precision)
        return
    if not isinstance(want, (torch.Tensor, np.ndarray)):
        assert got == want, f"{what}: {got!r} != {want!r}"
        return
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if isinstance(want, torch.Tensor):
        assert got.device == want.device, f"{what}: device {got.device} != {want.device}"
    raw = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else want
    if raw.dtype.kind in "iub":
        # Quantized embeddings are ST's own function of the float ones; callers compare those floats and
        # check the quantization exactly, since ST's int8 buckets put every dimension's extremes on an edge.
        if precision == "float32":  # ids, masks, lengths
            assert np.array_equal(_np(got), _np(want)), f"{what}: values differ"
    elif raw.size:
        as_rows = (lambda x: x) if raw.ndim > 1 else (lambda x: x[None])
        assert_rows_close(as_rows(got), as_rows(want), what=what)
