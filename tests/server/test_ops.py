"""The operations of merged calls: equal ones (same kind, same fields) merge in the batcher, other kinds never do,
and they survive the pipe to a device process."""

from __future__ import annotations

import pickle

from st_backend.server.ops import ClassifyTexts, Encode, EncodeIds, Pairs, QueryDocument, Sparse


def test_equal_operations_merge_and_others_do_not():
    assert Encode("query", None, "q: ") == Encode(role="query", prompt="q: ")
    assert hash(Encode("query", None, "q: ")) == hash(Encode(role="query", prompt="q: "))
    distinct = {
        Encode(),
        Encode(tokens=True),
        Encode("query"),
        EncodeIds(),
        QueryDocument(),
        Sparse(),
        Sparse(max_active_dims=4),
        Pairs(),
        Pairs(logits=True),
        ClassifyTexts(),
    }
    assert len(distinct) == 10


def test_operations_pickle():
    for op in (Encode("document", "passage", None, True), Sparse("query", None, None, 8), ClassifyTexts()):
        assert pickle.loads(pickle.dumps(op)) == op
