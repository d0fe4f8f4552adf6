"""Fixed-shape verification passes: shape, order and independence from input order."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sglang_tokenweave.determinism.groups import ReadyRequest, plan_verify_passes

KIND_ORDER = {"full": 0, "partial": 1, "dummy": 2}


@st.composite
def ready_sets(draw):
    window = draw(st.integers(1, 12))
    rows = draw(st.integers(1, 8))
    keys = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=30))
    # Mostly one block each; with lookahead a replay spans up to ``rows`` blocks.
    most = draw(st.sampled_from([window, rows * window]))
    ready = [ReadyRequest(k, draw(st.integers(1, most))) for k in keys]
    return ready, rows, window


@given(ready_sets(), st.randoms(use_true_random=False))
def test_passes_have_fixed_shape_and_canonical_layout(case, rnd):
    ready, rows, window = case
    passes = plan_verify_passes(ready, rows, window)
    if all(r.num_tokens <= window for r in ready):
        assert len(passes) == -(-len(ready) // rows)
    placed = []
    for p in passes:
        assert len(p.rows) == rows and p.num_slots == rows * window
        kinds = [KIND_ORDER[r.kind] for r in p.rows]
        assert kinds == sorted(kinds)  # full, then partial, then dummy
        for a, b in zip(p.rows, p.rows[1:]):
            if a.kind == b.kind != "dummy":
                assert (a.key, a.part) < (b.key, b.part)
        mask = p.real_slot_mask()
        assert len(mask) == rows * window and sum(mask) == sum(r.num_tokens for r in p.rows)
        for i, row in enumerate(p.rows):
            assert all(mask[s] for s in p.real_slots(i))
            assert row.num_tokens + row.num_padding == window
        placed += [(r.key, r.part, r.num_tokens) for r in p.rows if r.key is not None]
    # Every request's rows, one per block in order, all in one pass.
    expected = [(r.key, part, n) for r in ready for part, n in enumerate(r.row_lengths(window))]
    assert sorted(placed) == sorted(expected)
    for p in passes:
        keys = {r.key for r in p.rows if r.key is not None}
        for q in passes:
            if q is not p:
                assert not keys & {r.key for r in q.rows}
    # Oldest first: every key of a pass is older than every key of the next pass.
    for p, q in zip(passes, passes[1:]):
        assert max(r.key for r in p.rows if r.key is not None) < min(r.key for r in q.rows if r.key is not None)
    shuffled = list(ready)
    rnd.shuffle(shuffled)
    assert plan_verify_passes(shuffled, rows, window) == passes


def test_example_layout_and_pass_limit():
    ready = [ReadyRequest(5, 2), ReadyRequest(3, 4), ReadyRequest(9, 4), ReadyRequest(1, 1), ReadyRequest(7, 4)]
    first, second = plan_verify_passes(ready, rows=3, window=4)
    assert [(r.key, r.kind) for r in first.rows] == [(3, "full"), (1, "partial"), (5, "partial")]
    assert [(r.key, r.kind) for r in second.rows] == [(7, "full"), (9, "full"), (None, "dummy")]
    assert second.num_real_rows == 2 and second.real_slots(2) == range(8, 8)
    assert plan_verify_passes(ready, rows=3, window=4, max_passes=1) == [first]
    assert plan_verify_passes([], rows=3, window=4) == []


@pytest.mark.parametrize(
    "ready",
    [[ReadyRequest(1, 2), ReadyRequest(1, 3)], [ReadyRequest(1, 0)], [ReadyRequest(1, 9)]],
)
def test_rejects_bad_input(ready):
    with pytest.raises(ValueError):
        plan_verify_passes(ready, rows=2, window=4)


def test_a_replay_over_two_blocks_takes_two_rows_of_one_pass():
    ready = [ReadyRequest(1, 4), ReadyRequest(2, 6), ReadyRequest(3, 7)]
    first, second = plan_verify_passes(ready, rows=3, window=4)
    assert [(r.key, r.part, r.num_tokens) for r in first.rows] == [(1, 0, 4), (2, 0, 4), (2, 1, 2)]
    assert [(r.key, r.part, r.num_tokens) for r in second.rows] == [(3, 0, 4), (3, 1, 3), (None, 0, 0)]
