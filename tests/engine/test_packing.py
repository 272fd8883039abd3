import numpy as np
import torch

from st_backend.engine.packing import pack


def test_pack_lays_sequences_end_to_end_with_restarting_positions():
    ids = [np.array([1, 2, 3]), np.array([4]), np.array([5, 6])]
    types = [np.array([0, 0, 1]), np.array([0]), np.array([1, 1])]
    batch = pack(ids, types, np.array([2, 0, 1]))
    assert batch.input_ids.tolist() == [5, 6, 1, 2, 3, 4]
    assert batch.position_ids.tolist() == [0, 1, 0, 1, 2, 0]
    assert batch.token_type_ids.tolist() == [1, 1, 0, 0, 1, 0]
    assert batch.cu_seqlens.tolist() == [0, 2, 5, 6]
    assert batch.cu_seqlens.dtype == torch.int32
    assert batch.max_len == 3
    assert batch.lengths.tolist() == [2, 3, 1]
    assert batch.indices.tolist() == [2, 0, 1] == batch.index.tolist()
    assert batch.seq_ids.tolist() == [0, 0, 1, 1, 1, 2]
    assert batch.host_lengths.tolist() == [2, 3, 1]


def test_pack_offset_reports_indices_in_the_callers_list():
    batch = pack([np.array([1]), np.array([2, 3])], None, np.array([1, 0]), offset=100)
    assert batch.indices.tolist() == [101, 100] == batch.index.tolist()


def test_pack_without_token_types():
    batch = pack([np.array([7, 8])], None, np.array([0]))
    assert batch.token_type_ids is None
    assert batch.to(torch.device("cpu")).input_ids.tolist() == [7, 8]
