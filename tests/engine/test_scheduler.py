import numpy as np
import pytest

from st_backend.engine.scheduler import plan_batches


@pytest.mark.parametrize("seed", range(5))
def test_batches_cover_every_input_once_within_budget(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=257)
    batches = plan_batches(lengths, max_tokens=1000, max_sequences=16)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 16
        assert lengths[b].sum() <= 1000 or len(b) == 1
    # longest first: lengths never increase across the flattened order
    assert np.all(np.diff(lengths[flat]) <= 0)


def test_oversized_input_gets_its_own_batch_and_is_not_cut():
    lengths = np.array([5, 5000, 7, 3])
    batches = plan_batches(lengths, max_tokens=100, max_sequences=8)
    assert [b.tolist() for b in batches] == [[1], [2, 0, 3]]


def test_sequence_cap_applies_before_token_budget():
    lengths = np.ones(10, dtype=np.int64)
    assert [len(b) for b in plan_batches(lengths, max_tokens=10_000, max_sequences=4)] == [4, 4, 2]


def test_ties_keep_input_order():
    lengths = np.array([3, 3, 3, 3])
    assert np.concatenate(plan_batches(lengths, 6, 100)).tolist() == [0, 1, 2, 3]


def test_empty_input_has_no_batches():
    assert plan_batches(np.array([], dtype=np.int64), 100, 4) == []
