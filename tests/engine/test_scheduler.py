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


def test_cuda_token_budget_follows_the_model_and_free_memory(monkeypatch):
    import torch
    from transformers import PretrainedConfig

    from st_backend.engine.config import CUDA_TOKEN_BUDGET, MIN_CUDA_TOKEN_BUDGET, EngineConfig

    cuda = torch.device("cuda")
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    small = PretrainedConfig(hidden_size=768, intermediate_size=3072)
    big = PretrainedConfig(hidden_size=3584, intermediate_size=18944)  # a 7B-size decoder
    config = EngineConfig()
    assert config.token_budget(cuda, small, torch.float16) == CUDA_TOKEN_BUDGET  # plenty of room
    free["bytes"] = 8 * 2**30
    per_token = 2 * (6 * 3584 + 3 * 18944)  # fp16 bytes of one layer's activations per token
    want = int(8 * 2**30 * 0.25 // per_token) // 1024 * 1024
    assert config.token_budget(cuda, big, torch.float16) == want < CUDA_TOKEN_BUDGET
    assert config.token_budget(cuda, big, torch.float32) < want  # wider activations, fewer tokens
    free["bytes"] = 2**20
    assert config.token_budget(cuda, big, torch.float16) == MIN_CUDA_TOKEN_BUDGET
    assert EngineConfig(max_batch_tokens=123).token_budget(cuda, big, torch.float16) == 123  # as set
    assert config.token_budget(torch.device("cpu"), big) == 4096
    assert config.token_budget(cuda, None) == CUDA_TOKEN_BUDGET  # no sizes known
